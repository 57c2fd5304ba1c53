"""Benchmark: training-step speed on CPU with and without AdvAug (target: PGD-1 on G and D <= 1.7x the plain step).

One iteration = 1 D step + 1 G step of the real training loop (`degan.train.Trainer`) with DiffAugment
`color,translation,cutout` on random 32 px images; the AdvAug run adds PGD-1 on D's pooled features (reals and
fakes) and on G's first feature (SPEC §4 defaults). Writes benchmarks/results/train_speed_cpu.json.

    PYTHONPATH=src python benchmarks/train_speed.py [--model dcgan] [--width 0.5] [--iters 60] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from degan.augment import build_augment
from degan.augment.advaug import AdvAugObjective, AdvAugSettings
from degan.losses import GANObjective
from degan.models import create_model
from degan.pruning import add_masks
from degan.train import Trainer, make_state


def time_loop(objective, args) -> float:
    torch.manual_seed(0)
    G, D = create_model(args.model, resolution=32, width=args.width, pre_sn_hook=add_masks)
    state = make_state(G, D, lr_G=2e-4, lr_D=2e-4, betas=(0.0, 0.9))
    images = torch.randint(0, 256, (256, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    trainer = Trainer(state, images, objective, total_kimg=args.batch * args.warmup / 1000, batch_D=args.batch,
                      batch_G=args.batch, n_dis=1)
    trainer.run()  # warm-up
    trainer.total_nimg = args.batch * (args.warmup + args.iters)
    t0 = time.perf_counter()
    trainer.run()
    return (time.perf_counter() - t0) / args.iters * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="dcgan")
    ap.add_argument("--width", type=float, default=0.5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--iters", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "train_speed_cpu.json")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    aug = build_augment("diffaug:color,translation,cutout")
    plain = time_loop(GANObjective("hinge", aug), args)
    results = {"plain_ms_per_iter": plain}
    for name, settings in {"advaug_pgd1_GD": AdvAugSettings(), "advaug_pgd1_D": AdvAugSettings(networks="D"),
                           "advaug_pgd1_G": AdvAugSettings(networks="G"),
                           "gaussian_GD": AdvAugSettings(mode="gaussian")}.items():
        ms = time_loop(AdvAugObjective("hinge", aug, settings, resolution=32), args)
        results[f"{name}_ms_per_iter"] = ms
        results[f"{name}_overhead"] = ms / plain
    out = {"benchmark": "train_step_advaug_overhead_cpu", "model": args.model, "width": args.width,
           "batch": args.batch, "iters": args.iters, "augment": "diffaug:color,translation,cutout", **results,
           "target_overhead_pgd1_GD": 1.7, "within_target": results["advaug_pgd1_GD_overhead"] <= 1.7,
           "torch_version": torch.__version__, "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
           "load_average_1min_at_end": os.getloadavg()[0], "python": platform.python_version()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in results.items()}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
