#!/usr/bin/env bash
# GAN-LTH (Chen et al., ICLR 2021) Table 1 / Fig. 2: SNGAN on full CIFAR-10, IMP_GD and IMP_G to 9 levels
# (86.6 % sparse), random pruning and random tickets beside each level, late rewinding to 5 %; FID on 50k samples
# vs the training statistics (SPEC §8). DATA = cifar-10-python.tar.gz.
source "$(dirname "$0")/common.sh"
M="fid50k_train,kid50k_train"
for seed in $SEEDS; do
  run ticket --preset sngan32 --data "$DATA" --outdir "$OUTDIR" --seed "$seed" --levels 9 --variant IMP_GD \
      --metrics "$M" --branches random_ticket,random_mask
  run ticket --preset sngan32 --data "$DATA" --outdir "$OUTDIR" --seed "$seed" --levels 9 --variant IMP_G --metrics "$M"
  run ticket --preset sngan32 --data "$DATA" --outdir "$OUTDIR" --seed "$seed" --levels 9 --variant IMP_GD \
      --rewind 5% --metrics "$M"
done
