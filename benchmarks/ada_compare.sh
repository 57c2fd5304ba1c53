#!/bin/bash
# ADA / ADA+LeCam vs DiffAugment on the shared CIFAR-10 subset at the same budget (README, "ADA and LeCam vs DiffAugment").
# Usage: benchmarks/ada_compare.sh [TICKET_LEVEL_DIR]   (from the repository root, after `make install`)
set -e
DEGAN=${DEGAN:-.venv/bin/degan}
DATA=${DATA:-../shared/data/cifar10-subset/cifar10_prefix_subset.npz}
COMMON="--data $DATA --outdir runs --model dcgan --kimg 40 --metrics fid_test,kid_test --num-gen 1000 --set eval.batch_size=16 --no-progress"
for SUB in "" "--subset 500"; do
  $DEGAN train $COMMON $SUB --augment none
  $DEGAN train $COMMON $SUB --augment diffaug:color,translation,cutout
  $DEGAN train $COMMON $SUB --augment ada:bgc:kimg=10
  $DEGAN train $COMMON $SUB --augment ada:bgc:kimg=10+lecam --set lecam.start_step=250
done
for A in ada:bgc:kimg=10 diffaug:color,translation,cutout; do $DEGAN train $COMMON --subset 100 --augment $A; done
if [ -n "$1" ]; then
  $DEGAN train $COMMON --augment ada:bgc:kimg=10 --ticket "$1"
  $DEGAN train $COMMON --augment diffaug:color,translation,cutout --ticket "$1"
fi
