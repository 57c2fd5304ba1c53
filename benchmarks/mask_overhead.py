"""Benchmark: cost of ticket masks in training (target: masked training <= 1.05x the dense step, same model and batch).

"dense" builds the model without any mask parametrization; "masked" registers a WeightMask on every prunable layer
(before spectral norm, as every degan run does) at the given density (IMP global magnitude) and re-applies the masks
after every optimizer step. Both use the real training loop (`degan.train.Trainer`: 1 D step + 1 G step per
iteration, DiffAugment color,translation,cutout, EMA); the two are timed in alternating blocks so that drifting
machine load hits both alike, and the median over blocks is reported. Writes benchmarks/results/mask_overhead_<device>.json.

    PYTHONPATH=src python benchmarks/mask_overhead.py [--model dcgan] [--width 0.5] [--batch 32] [--density 0.512]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from degan.augment import build_augment
from degan.losses import GANObjective
from degan.models import create_model
from degan.pruning import PRUNERS, add_masks, density, get_mask, ones_like_mask, set_mask
from degan.train import Trainer, make_state


def make_trainer(masked: bool, args, device) -> Trainer:
    torch.manual_seed(0)
    G, D = create_model(args.model, resolution=32, width=args.width, pre_sn_hook=add_masks if masked else None)
    if masked:
        for net in (G, D):
            set_mask(net, PRUNERS.get("omp")(net, ones_like_mask(net), target_density=args.density))
    state = make_state(G.to(device), D.to(device), lr_G=2e-4, lr_D=2e-4, betas=(0.0, 0.9))
    images = torch.randint(0, 256, (256, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    objective = GANObjective("hinge", build_augment("diffaug:color,translation,cutout"))
    return Trainer(state, images, objective, total_kimg=0, batch_D=args.batch, batch_G=args.batch, n_dis=1,
                   device=device)


def block(trainer: Trainer, iters: int, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        trainer.train_step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / iters * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="dcgan")
    ap.add_argument("--width", type=float, default=0.5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--density", type=float, default=0.512, help="kept fraction of the masked run (0.8^3)")
    ap.add_argument("--iters", type=int, default=20, help="iterations per timed block")
    ap.add_argument("--blocks", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    trainers = {"dense": make_trainer(False, args, device), "masked": make_trainer(True, args, device)}
    for t in trainers.values():
        block(t, 5, device)  # warm-up
    times: dict[str, list[float]] = {"dense": [], "masked": []}
    for _ in range(args.blocks):
        for name, t in trainers.items():
            times[name].append(block(t, args.iters, device))
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "benchmark": "mask_overhead", "model": args.model, "width": args.width, "batch": args.batch,
        "density_G": density(get_mask(trainers["masked"].state.G)),
        "density_D": density(get_mask(trainers["masked"].state.D)),
        "device": str(device), "device_name": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor(),
        "threads": args.threads, "torch": torch.__version__, "iters_per_block": args.iters, "blocks": args.blocks,
        "ms_per_iter_median": med, "ms_per_iter_blocks": times, "overhead": med["masked"] / med["dense"],
        "target": "<= 1.05x",
    }
    out = Path(__file__).resolve().parent / "results" / f"mask_overhead_{device.type}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("model", "batch", "ms_per_iter_median", "overhead")}, indent=2))


if __name__ == "__main__":
    main()
