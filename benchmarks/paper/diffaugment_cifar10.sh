#!/usr/bin/env bash
# DiffAugment (Zhao et al., NeurIPS 2020), CIFAR-10 tables: StyleGAN2 (ADA paper's cifar config) and BigGAN at
# 100 %, 20 % and 10 % of the training data, baseline (x-flip) vs DiffAugment; FID on 10k samples vs the 10k test
# images (SPEC §8). DATA = cifar-10-python.tar.gz. The paper's DiffAugment policy: color,translation,cutout for
# StyleGAN2, translation,cutout for BigGAN.
source "$(dirname "$0")/common.sh"
for seed in $SEEDS; do
  for frac in 1.0 0.2 0.1; do
    sub=(); [ "$frac" = 1.0 ] || sub=(--subset "$frac" --balance)
    for aug in none diffaug:color,translation,cutout; do
      run train --preset stylegan2_cifar --data "$DATA" --outdir "$OUTDIR" "${sub[@]}" --mirror --augment "$aug" \
          --seed "$seed" --metrics fid10k_test,kid10k_test
    done
    for aug in none diffaug:translation,cutout; do
      run train --preset biggan_cifar10 --data "$DATA" --outdir "$OUTDIR" "${sub[@]}" --mirror --augment "$aug" \
          --seed "$seed" --metrics fid10k_test,kid10k_test,is10k
    done
  done
done
