#!/usr/bin/env bash
# Data-efficient GAN tickets (Chen et al., NeurIPS 2021) Table 3: BigGAN on 10 % of CIFAR-10 (and CIFAR-100 with
# DATA100), tickets drawn by IMP on the same 10 % (9 levels), then dense / ticket trained with DiffAugment and with
# DiffAugment + AdvAug (PGD-1, step 0.01); FID/IS on 10k samples vs the test set. DATA = cifar-10-python.tar.gz.
# The ticket level to retrain: LEVEL (default 5, 67.2 % sparse).
source "$(dirname "$0")/common.sh"
LEVEL=${LEVEL:-5}
M="fid10k_test,kid10k_test,is10k"
for preset_data in "biggan_cifar10:$DATA" ${DATA100:+"biggan_cifar100:$DATA100"}; do
  preset=${preset_data%%:*}; data=${preset_data#*:}
  for seed in $SEEDS; do
    run ticket --preset "$preset" --data "$data" --outdir "$OUTDIR" --subset 0.1 --seed "$seed" --levels 9 --metrics "$M"
    if [ "${DRY:-0}" = 1 ]; then continue; fi
    run_dir=$($DEGAN ticket --preset "$preset" --data "$data" --outdir "$OUTDIR" --subset 0.1 --seed "$seed" \
              --levels 9 $EXTRA --dry-run | sed -n 's/^# run folder: //p')
    for adv in "" --advaug; do
      run train --preset "$preset" --data "$data" --outdir "$OUTDIR" --subset 0.1 --seed "$seed" \
          --augment diffaug:translation,cutout $adv --metrics "$M"
      run train --preset "$preset" --data "$data" --outdir "$OUTDIR" --subset 0.1 --seed "$seed" \
          --augment diffaug:translation,cutout $adv --ticket "$run_dir/level_$LEVEL" --metrics "$M"
    done
  done
done
