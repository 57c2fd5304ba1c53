"""Generator forward time, dense vs compact channel ticket; writes benchmarks/results/compact_speed.json.

The compact ticket is either a real one (``--stage``: a channel-ticket stage folder ``level_<k>_channel`` or a
folder written by ``degan.export.export_compact``), or a synthetic one: the dense G's BatchNorm scales are set to
seeded uniform magnitudes and the globally smallest are removed (:func:`degan.pruning.slimming.select_channels`
with ``prune_fraction``), the fraction found by bisection so that the FLOPs reduction reaches ``--reduction``
(default 0.6, the issue's target: >= 2x faster at >= 60 % fewer FLOPs). Only the channel structure matters for
speed, so the synthetic weights are fine.

Timing: both generators in eval mode under ``torch.inference_mode``, the same ``--batch`` latents, ``--warmup``
untimed calls, then the median (and min / max) of ``--repeats`` timed calls, dense and compact alternating within
each repeat (so load changes on a shared machine hit both alike); on CUDA each call is synchronised.
FLOPs per image from ``torch.utils.flop_counter.FlopCounterMode`` (convs and linears).

Usage:
    PYTHONPATH=src python benchmarks/compact_speed.py [--model sngan32] [--width 1.0] [--batch 64] [--threads 2]
        [--repeats 10] [--warmup 3] [--reduction 0.6[,0.75]] [--stage DIR] [--device cpu,cuda] [--out PATH]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from degan import __version__
from degan.fileio import read_json, write_json
from degan.models import create_model
from degan.pruning.slimming import (
    bn_scales,
    compact_generator,
    count_params,
    generator_flops,
    select_channels,
    strip_parametrizations,
)


def synthetic_ticket(G: nn.Module, reduction: float, seed: int = 0) -> tuple[nn.Module, dict, float]:
    """Compact G with the smallest (seeded random) gammas removed until FLOPs drop by at least ``reduction``."""
    gen = torch.Generator().manual_seed(seed)
    layers = bn_scales(G)
    with torch.no_grad():
        for m in layers.values():
            m.weight.copy_(torch.rand(m.num_features, generator=gen) + 1e-3)
    dense_flops = generator_flops(G)
    lo, hi, best = 0.0, 0.99, None
    for _ in range(12):
        mid = (lo + hi) / 2
        kept = select_channels(G, prune_fraction=mid, layers=layers)
        small = compact_generator(G, kept)
        ratio = generator_flops(small) / dense_flops
        if ratio <= 1 - reduction:
            best, hi = (small, kept, mid), mid
        else:
            lo = mid
    if best is None:
        raise SystemExit(f"cannot reach a FLOPs reduction of {reduction} by removing selectable channels")
    return best


def load_ticket(path: Path) -> tuple[nn.Module, nn.Module, dict]:
    """(dense plain G, compact plain G, meta) from an export folder or a channel-ticket stage folder."""
    if (path / "generator.safetensors").is_file():
        from degan.export import load_compact

        small = load_compact(path)
        meta = read_json(path / "generator.json")
    else:
        from degan.export import load_stage_generator

        small = strip_parametrizations(load_stage_generator(path), allow_spectral_norm=True)
        meta = read_json(path / "generator.json")
    if not meta.get("kept_channels"):
        raise SystemExit(f"{path} is not a channel ticket (no kept_channels in generator.json)")
    dense, _ = create_model(meta["model"], spectral_norm=False, **meta["kwargs"])
    return dense, small, meta


def time_forwards(nets: dict[str, nn.Module], z: torch.Tensor, repeats: int, warmup: int) -> dict[str, dict]:
    """Median / min / max milliseconds per forward of each net; the nets alternate within every repeat, so a
    change of load on a shared machine hits all of them alike."""
    sync = torch.cuda.synchronize if z.is_cuda else (lambda: None)
    times: dict[str, list[float]] = {k: [] for k in nets}
    with torch.inference_mode():
        for i in range(warmup + repeats):
            for key, G in nets.items():
                sync()
                t0 = time.perf_counter()
                G(z)
                sync()
                if i >= warmup:
                    times[key].append(time.perf_counter() - t0)
    return {k: {"median_ms": 1000 * statistics.median(t), "min_ms": 1000 * min(t), "max_ms": 1000 * max(t)}
            for k, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="sngan32")
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--reduction", default="0.6",
                    help="FLOPs reduction(s) of the synthetic ticket(s), comma-separated; the first is the target")
    ap.add_argument("--stage", type=Path, default=None, help="export folder or level_<k>_channel stage folder")
    ap.add_argument("--device", default="cpu,cuda", help="devices to time (cuda skipped when unavailable)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "compact_speed.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    tickets = []
    if args.stage is not None:
        dense, small, meta = load_ticket(args.stage)
        model, kwargs = meta["model"], meta["kwargs"]
        tickets.append({"ticket": str(args.stage), "net": small, "kept": meta["kept_channels"]})
    else:
        model, kwargs = args.model, {"width": args.width, "resolution": args.resolution}
        dense, _ = create_model(model, spectral_norm=False, **kwargs)
        for r in (float(x) for x in args.reduction.split(",")):
            small, kept, fraction = synthetic_ticket(dense, r)
            tickets.append({"ticket": f"synthetic: seeded random |gamma|, global prune_fraction {fraction:.4f}",
                            "target_reduction": r, "net": small, "kept": kept})
    dense.eval()
    flops_dense = generator_flops(dense)
    totals = {n: m.num_features for n, m in bn_scales(dense).items()}
    for t in tickets:
        t["net"].eval()
        t["flops_compact"] = generator_flops(t["net"])

    devices = [d.strip() for d in args.device.split(",") if d.strip()]
    devices = [d for d in devices if d != "cuda" or torch.cuda.is_available()]
    for dev in devices:
        z = torch.randn(args.batch, dense.z_dim, generator=torch.Generator().manual_seed(1)).to(dev)
        nets = {"dense": dense.to(dev), **{str(i): t["net"].to(dev) for i, t in enumerate(tickets)}}
        timed = time_forwards(nets, z, args.repeats, args.warmup)
        name = torch.cuda.get_device_name() if dev == "cuda" else (platform.processor() or platform.machine())
        for i, t in enumerate(tickets):
            speedup = timed["dense"]["median_ms"] / timed[str(i)]["median_ms"]
            t.setdefault("results", []).append({"device": dev, "device_name": name, "dense": timed["dense"],
                                                "compact": timed[str(i)], "speedup": speedup})
            print(f"{dev}: dense {timed['dense']['median_ms']:.1f} ms, compact {timed[str(i)]['median_ms']:.1f} ms, "
                  f"speedup {speedup:.2f}x at FLOPs ratio {t['flops_compact'] / flops_dense:.3f}")
        dense.cpu()
        for t in tickets:
            t["net"].cpu()

    report = {
        "benchmark": "generator forward (eval, inference_mode), dense vs compact channel ticket",
        "unit": "milliseconds per forward of the whole batch (median over repeats; dense and compact alternate)",
        "model": model, "kwargs": kwargs, "batch": args.batch, "repeats": args.repeats, "warmup": args.warmup,
        "target": ">= 2x faster at >= 60 % FLOPs reduction",
        "flops_per_image_dense": flops_dense, "params_dense": count_params(dense),
        "tickets": [{
            "ticket": t["ticket"], **({"target_reduction": t["target_reduction"]} if "target_reduction" in t else {}),
            "flops_per_image": {"dense": flops_dense, "compact": t["flops_compact"]},
            "flops_ratio": t["flops_compact"] / flops_dense, "flops_reduction": 1 - t["flops_compact"] / flops_dense,
            "params": {"dense": count_params(dense), "compact": count_params(t["net"])},
            "channels": {n: {"kept": len(idx), "total": totals.get(n)} for n, idx in t["kept"].items()},
            "results": t.get("results", []),
        } for t in tickets],
        "torch": torch.__version__, "degan": __version__, "python": platform.python_version(),
        "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "load_average_at_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    write_json(args.out, report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
