"""Benchmark: how a training step's time grows with batch, resolution and width, per model family (issue 19 part 4).

For each family a small base setting is timed, then the same with the batch doubled, the resolution doubled and
the width doubled (one change at a time). One iteration = 1 D step + 1 G step of the real loop
(`degan.train.Trainer`, hinge loss, no augmentation, no masks) on random uint8 images; each setting gets a fresh
model, ``--warmup`` untimed iterations and the median of ``--repeats`` timings of ``--iters`` iterations. The JSON
gives ms per iteration and, per doubling, the growth factor ``t(2x) / t(base)``: a user predicts a run at another
size by multiplying (a factor near 2 means the step is compute-bound in that direction). ``degan train --dry-run``
measures the user's own setting directly (10-iteration probe).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/scaling.py --threads 1 --out benchmarks/results/scaling_cpu.json
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from degan.fileio import write_json
from degan.losses import GANObjective
from degan.models import create_model
from degan.train import Trainer, make_state

#: family: (resolution, width, batch) of the base setting (CPU-sized; every doubling must stay buildable).
BASES = {"dcgan": (32, 0.25, 16), "sngan32": (32, 0.25, 16), "stylegan2": (32, 0.125, 8),
         "fastgan": (32, 0.125, 8), "progan": (32, 0.25, 8), "biggan": (32, 0.25, 16)}


def step_ms(model: str, resolution: int, width: float, batch: int, iters: int, warmup: int, repeats: int) -> float:
    torch.manual_seed(0)
    kw = {"resolution": resolution, "width": width}
    if model == "biggan":
        kw["num_classes"] = 10
    G, D = create_model(model, **kw)
    state = make_state(G, D, lr_G=2e-4, lr_D=2e-4, betas=(0.0, 0.9))
    images = torch.randint(0, 256, (max(64, batch), 3, resolution, resolution), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    labels = torch.arange(images.shape[0]) % 10 if model == "biggan" else None
    extra = {"labels": labels} if labels is not None else {}
    trainer = Trainer(state, images, GANObjective("hinge", None), total_kimg=0, batch_D=batch, batch_G=batch,
                      n_dis=1, device="cpu", **extra)
    for _ in range(warmup):
        trainer.train_step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(iters):
            trainer.train_step()
        times.append((time.perf_counter() - t0) / iters * 1000)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", default=",".join(BASES))
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="benchmarks/results/scaling_cpu.json")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out: dict = {"benchmark": "step_time_scaling", "device": "cpu", "threads": torch.get_num_threads(),
                 "iters": args.iters, "warmup": args.warmup, "repeats": args.repeats, "torch": torch.__version__,
                 "processor": platform.processor() or platform.machine(), "families": {}}
    for fam in args.families.split(","):
        res, width, batch = BASES[fam]
        settings = {"base": (res, width, batch), "batch_x2": (res, width, 2 * batch),
                    "resolution_x2": (2 * res, width, batch), "width_x2": (res, 2 * width, batch)}
        ms = {}
        for name, (r, w, b) in settings.items():
            try:
                ms[name] = round(step_ms(fam, r, w, b, args.iters, args.warmup, args.repeats), 2)
            except Exception as e:  # noqa: BLE001 - recorded, the other settings go on
                ms[name] = None
                out.setdefault("errors", {})[f"{fam}/{name}"] = str(e).splitlines()[0][:200]
        growth = {k: (round(v / ms["base"], 3) if v and ms.get("base") else None)
                  for k, v in ms.items() if k != "base"}
        out["families"][fam] = {"base": {"resolution": res, "width": width, "batch": batch},
                                "ms_per_iter": ms, "growth_per_doubling": growth}
        print(f"{fam}: base {ms['base']} ms/iter; x2 batch {growth.get('batch_x2')}, x2 resolution "
              f"{growth.get('resolution_x2')}, x2 width {growth.get('width_x2')}", flush=True)
    out["load_average_1min_at_end"] = round(os.getloadavg()[0], 2)
    write_json(args.out, out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
