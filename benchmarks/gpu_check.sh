#!/usr/bin/env bash
# A short GPU check (at most ~8 minutes on one H100): img/s and peak memory of each GPU preset at the paper's batch
# (sngan32 b64 x 5 D steps, biggan 32 px b50 x 4, stylegan2 256 px b16; DiffAugment, fp32, bf16 and fp32
# channels-last, which decides train.channels_last=auto turning it on for CUDA), then a few
# hundred iterations of the sngan32 ticket setting (dense level 0 + IMP level 1, 64 kimg each = 200 iterations of
# 5 D steps x 64 reals) with FID/KID of 5k G_ema samples against the training images at the end.
#
#   DATA=/path/cifar10_prefix_subset.npz benchmarks/gpu_check.sh          # writes $OUT (default benchmarks/results)
#   SMOKE=1 DATA=... benchmarks/gpu_check.sh                               # tiny CPU version: checks that it runs
#
# Results: $OUT/gpu_check.json (device, wall seconds per part, the ticket run's metrics and #RI) and
# $OUT/train_speed_cuda.json (every field of benchmarks/train_speed.py).
source "$(dirname "$0")/common.sh"
if [ "${SMOKE:-0}" = 1 ]; then
  SPEED=(--device cpu --quick --threads 2 --no-reference --out "$OUT/train_speed_smoke.json")
  TICKET=(--model dcgan --width 0.25 --batch 8 --kimg 0.064 --subset 64 --metrics kid50_train,fid50_train --num-gen 50
          --device cpu)
else
  SPEED=(--device cuda --presets diffaug --options fp32,bf16,channels_last --iters 20 --warmup 5 --no-reference --timeout 150
         --out "$OUT/train_speed_cuda.json")
  TICKET=(--preset sngan32 --kimg 64 --metrics fid5k_train,kid5k_train --num-gen 5000 --device cuda)
fi
t0=$(date +%s)
timeout 330 "$PY" benchmarks/train_speed.py "${SPEED[@]}" || echo "train_speed did not finish (exit $?)" >&2
t1=$(date +%s)
timeout 240 "$PY" -m degan.cli ticket --data "$DATA" --outdir "$RUNS" --levels 1 --no-progress "${TICKET[@]}" \
  || echo "the ticket run did not finish (exit $?)" >&2
t2=$(date +%s)
"$PY" - "$RUNS" "$OUT/gpu_check.json" "$((t1 - t0))" "$((t2 - t1))" <<'PYEOF'
import json, sys, pathlib, torch
runs, out, speed_s, ticket_s = pathlib.Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
levels = {}
for done in sorted(runs.glob("*/level_*/done.json")):
    d = json.loads(done.read_text())
    levels[done.parent.name] = {k: d.get(k) for k in ("density_G", "density_D", "real_images_shown", "kimg",
                                                       "train_seconds", "eval_seconds", "metrics")}
res = {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
       "torch": torch.__version__, "train_speed_seconds": speed_s, "ticket_seconds": ticket_s, "ticket": levels}
pathlib.Path(out).write_text(json.dumps(res, indent=2))
print(json.dumps(res, indent=2))
PYEOF
