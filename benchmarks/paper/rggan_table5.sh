#!/usr/bin/env bash
# RG-GAN (Saxena et al., AAAI 2024) Table 5: RG-SNGAN vs SNGAN on full CIFAR-10 and RG-StyleGAN2 vs StyleGAN2 on
# 10 % of CIFAR-10 with DiffAugment, same #RI; FID on 10k samples vs the test set, training FLOPs in done.json.
# The regeneration trigger evaluates FID of G_ema on 5k samples vs the training images every 10 kimg x 5 D steps.
# DATA = cifar-10-python.tar.gz.
source "$(dirname "$0")/common.sh"
M="fid10k_test,kid10k_test"
for seed in $SEEDS; do
  for rg in "" "--dynamic-prune --regen-every 50 --set dynamic.regen_num_gen=5000"; do
    run train --preset sngan32 --data "$DATA" --outdir "$OUTDIR" --seed "$seed" --metrics "$M" $rg
    run train --preset stylegan2_cifar --data "$DATA" --outdir "$OUTDIR" --subset 0.1 --balance --mirror \
        --augment diffaug:color,translation,cutout --seed "$seed" --metrics "$M" $rg
  done
done
