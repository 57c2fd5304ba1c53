"""Benchmark: training speed with RG-GAN dynamic masks vs the same model dense (target: dynamic <= 1.15x dense).

One iteration = 1 D step + 1 G step of the real training loop (`degan.train.Trainer.train_step`, which includes
`enforce_masks`, i.e. the frozen-weight restore) plus the callbacks' `on_step_end` (for the dynamic run: the
`DynamicPruning` callback with its per-step densities, threshold stats and collapse guard; no FID evaluation). The
dynamic run trains with `DynamicPruningObjective` (the sparsity regulariser) and Adam over weights + thresholds.
Variants: `dense` (no parametrization on the weights), `dynamic` (DynamicMask, `--threshold-grad`, every
threshold starting at `--threshold`), and `static_mask` (the lottery-ticket WeightMask with the same masks, fixed:
it separates the cost of the dynamic machinery from the cost of sparsity itself: on some CPUs Adam's
`sqrt(exp_avg_sq)` is ~10x slower on the exact zeros that zero-gradient (pruned) weights leave there). Rounds
are interleaved so that CPU contention from other processes hits every variant alike; the reported value is the
median seconds per iteration over all timed iterations. Random uint8 images at 32 px, hinge loss, no
augmentation unless `--augment`. Merges its result into benchmarks/results/dynamic_speed.json (one entry per
configuration).

    PYTHONPATH=src python benchmarks/dynamic_speed.py [--model dcgan|sngan32] [--width 0.5] [--batch 32]
        [--iters 30] [--rounds 3] [--threads 2] [--threshold-grad ste|regularizer_only] [--threshold 0.01]
        [--augment diffaug:...] [--no-static]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from degan.augment import build_augment
from degan.losses import GANObjective
from degan.models import create_model
from degan.pruning import add_masks, set_mask
from degan.pruning.dynamic import (
    add_dynamic_masks,
    dynamic_density,
    dynamic_layers,
    threshold_parameters,
)
from degan.train import Trainer, make_state
from degan.train.regen import DynamicPruning, make_dynamic_state


def dynamic_pair(args):
    torch.manual_seed(0)
    G, D = create_model(args.model, resolution=32, width=args.width,
                        pre_sn_hook=lambda n: add_dynamic_masks(n, threshold_grad=args.threshold_grad))
    with torch.no_grad():  # prune part of every layer, as during training
        for net in (G, D):
            for t in threshold_parameters(net):
                t.fill_(args.threshold)
    return G, D


def build(variant: str, args) -> tuple[Trainer, list]:
    torch.manual_seed(0)
    kw = {"resolution": 32, "width": args.width}
    if variant == "dense":
        G, D = create_model(args.model, **kw)
    elif variant == "static_mask":  # the same masks as the dynamic run, fixed (lottery-ticket WeightMask)
        masks = [{n: dm.sparse_mask() for n, _, dm in dynamic_layers(net)} for net in dynamic_pair(args)]
        G, D = create_model(args.model, pre_sn_hook=lambda n: add_masks(n, "conv,convT,linear"), **kw)
        set_mask(G, masks[0])
        set_mask(D, masks[1])
    else:
        G, D = dynamic_pair(args)
    aug = build_augment(args.augment) if args.augment else None
    objective = GANObjective("hinge", aug)
    callbacks = []
    if variant == "dynamic":
        state = make_dynamic_state(G, D, lr_G=2e-4, lr_D=2e-4, betas=(0.0, 0.9))
        dyn = DynamicPruning(lam=5e-12)
        objective = dyn.wrap(objective)
        callbacks = [dyn]
    else:
        state = make_state(G, D, lr_G=2e-4, lr_D=2e-4, betas=(0.0, 0.9))
    images = torch.randint(0, 256, (256, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    trainer = Trainer(state, images, objective, total_kimg=1e9, batch_D=args.batch, batch_G=args.batch, n_dis=1,
                      callbacks=callbacks)
    for cb in callbacks:
        cb.on_train_start(trainer)
    return trainer, callbacks


def timed_iters(trainer: Trainer, callbacks: list, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        stats = trainer.train_step()
        for cb in callbacks:
            cb.on_step_end(trainer, stats)
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="dcgan", choices=["dcgan", "sngan32"])
    ap.add_argument("--width", type=float, default=0.5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--iters", type=int, default=30, help="timed iterations per variant and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--threshold-grad", default="ste", choices=["ste", "regularizer_only"])
    ap.add_argument("--threshold", type=float, default=0.01,
                    help="initial threshold of every channel (sets the density of the dynamic and static runs)")
    ap.add_argument("--augment", default=None, help="e.g. diffaug:color,translation,cutout (default: none)")
    ap.add_argument("--no-static", action="store_true", help="skip the static-mask reference variant")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "dynamic_speed.json")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    variants = ["dense", "dynamic"] + ([] if args.no_static else ["static_mask"])
    load_start = os.getloadavg()[0]
    runs = {v: build(v, args) for v in variants}
    for v in variants:
        timed_iters(*runs[v], args.warmup)
    times: dict[str, list[float]] = {v: [] for v in variants}
    for r in range(args.rounds):
        order = variants if r % 2 == 0 else variants[::-1]
        for v in order:
            timed_iters(*runs[v], 2)  # re-warm caches after the other variant
            times[v] += timed_iters(*runs[v], args.iters)
    med = {v: statistics.median(t) for v, t in times.items()}
    dyn_state = runs["dynamic"][0].state
    density = {k: round(dynamic_density(net)["density"], 4) for k, net in (("G", dyn_state.G), ("D", dyn_state.D))}
    ratio = med["dynamic"] / med["dense"]
    out = {
        "benchmark": "train_step_dynamic_masks_vs_dense_cpu", "model": args.model, "width": args.width,
        "resolution": 32, "batch": args.batch, "n_dis": 1, "threshold_grad": args.threshold_grad,
        "augment": args.augment, "iters_per_round": args.iters, "rounds": args.rounds,
        "initial_threshold": args.threshold, "density_at_end": density,
        **{f"{v}_s_per_iter_median": round(m, 5) for v, m in med.items()},
        **{f"{v}_s_per_iter_mean": round(statistics.fmean(times[v]), 5) for v in variants},
        **{f"{v}_s_per_iter_p10_p90": [round(q, 5) for q in (statistics.quantiles(times[v], n=10)[0],
                                                             statistics.quantiles(times[v], n=10)[-1])]
           for v in variants},
        "dynamic_over_dense": round(ratio, 4),
        **({"static_mask_over_dense": round(med["static_mask"] / med["dense"], 4)} if "static_mask" in med else {}),
        "target_dynamic_over_dense": 1.15, "within_target": ratio <= 1.15,
        "torch_version": torch.__version__, "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "load_average_1min_at_start": load_start, "load_average_1min_at_end": os.getloadavg()[0],
        "python": platform.python_version(),
        "note": "CPU shared with other processes; rounds interleaved; a load average above the core count means "
                "contention, which inflates all variants and their spread",
    }
    # one file for all configurations: {"runs": {"<model>_w<width>_b<batch>_<threshold_grad>_t<threads>": result}}
    key = f"{args.model}_w{args.width}_b{args.batch}_{args.threshold_grad}_t{torch.get_num_threads()}"
    key += f"_{args.augment}" if args.augment else ""
    runs_all = {}
    if args.out.is_file():
        try:
            runs_all = json.loads(args.out.read_text()).get("runs", {})
        except (json.JSONDecodeError, AttributeError):
            runs_all = {}
    runs_all[key] = out
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"runs": runs_all}, indent=2) + "\n")
    print(json.dumps({k: v for k, v in out.items() if "s_per_iter" in k or "over" in k or "load" in k}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
