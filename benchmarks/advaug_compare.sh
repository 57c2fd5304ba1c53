#!/usr/bin/env bash
# The README's AdvAug comparison: dense, dense+AdvAug, ticket, ticket+DiffAugment+AdvAug on the shared CIFAR-10
# subset, same data (all 5,085 images), budget (40 kimg), seed (0) and protocol. Needs the IMP run of the README's
# ticket section (TICKET below). Run from the repository root after `make install`.
set -euxo pipefail
SHARED=${DEGAN_SHARED_DATA:-../shared/data}
OUTDIR=${OUTDIR:-runs}
TICKET=${TICKET:-$OUTDIR/ticket-dcgan-cifar10-prefix-subset-6d192578/level_3}
COMMON="--data $SHARED/cifar10-subset/cifar10_prefix_subset.npz --outdir $OUTDIR --model dcgan --kimg 40
        --metrics fid_test,kid_test --num-gen 1000 --set eval.batch_size=16 --no-progress"
time .venv/bin/degan train $COMMON --augment none
time .venv/bin/degan train $COMMON --augment none --advaug
time .venv/bin/degan train $COMMON --augment none --ticket "$TICKET"
time .venv/bin/degan train $COMMON --augment diffaug:color,translation,cutout --advaug --ticket "$TICKET"
