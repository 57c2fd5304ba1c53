#!/usr/bin/env bash
# Early-bird at the paper's SNGAN setting on one GPU (about 7 minutes on an H100): do the magnitude masks settle?
# On the CPU-sized dcgan they never do (docs/reproduce.md#early-bird-tickets: not in 80 kimg, nor in 240). This trains
# the sngan32 preset (GAN-LTH's SNGAN: batch 64, 5 D steps, lr 2e-4, hinge, DiffAugment off here so that the masks
# move only by training) dense on DATA with a checkpoint every SNAP kimg, for at most 6 minutes (KIMG, default 2000
# of the preset's 16,000), then benchmarks/early_bird_drift.py reads every checkpoint: the distance between consecutive
# checkpoints' masks (one-shot 67.2 % and IMP level 1), and how much of the last mask each one already holds.
#
#   DATA=/path/cifar10_prefix_subset.npz benchmarks/early_bird_gpu.sh     # -> $OUT/early_bird_drift_sngan32.json
#   SMOKE=1 DATA=... benchmarks/early_bird_gpu.sh                          # tiny CPU version: checks that it runs
#
# A run the time limit stops keeps its checkpoints (an interrupt checkpoint last); the drift is read from them.
source "$(dirname "$0")/common.sh"
if [ "${SMOKE:-0}" = 1 ]; then
  TRAIN=(--model dcgan --width 0.25 --batch 8 --kimg "${KIMG:-0.32}" --snap "${SNAP:-0.064}" --subset 64 --device cpu
         --threads 2)
  NAME=early_bird_drift_smoke.json
else
  TRAIN=(--preset sngan32 --augment none --kimg "${KIMG:-2000}" --snap "${SNAP:-50}" --device cuda)
  NAME=early_bird_drift_sngan32.json
fi
t0=$(date +%s)
timeout --signal=TERM "${LIMIT:-360}" "$PY" -m degan.cli train --data "$DATA" --outdir "$RUNS" --metrics none \
  --no-progress --set train.keep_checkpoints=100000 --set eval.monitor_every_kimg=null "${TRAIN[@]}" \
  || echo "training stopped early (exit $?); reading the checkpoints it wrote" >&2
t1=$(date +%s)
"$PY" benchmarks/early_bird_drift.py "$(ls -d "$RUNS"/train-*)" --out "$OUT/$NAME"
echo "train: $((t1 - t0)) s; drift: $(($(date +%s) - t1)) s -> $OUT/$NAME"
