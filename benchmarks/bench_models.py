"""Speed of one GAN training step per registered model on CPU; writes benchmarks/results/models_cpu.json.

One step = one D step (G forward without grad on ``batch`` latents; D forward/backward on ``batch`` real +
``batch`` fake images concatenated; hinge loss; Adam step) + one G step (G forward on ``batch`` latents,
D forward, hinge G loss ``-D(G(z)).mean()``, backward through D into G, Adam step on G).
D carries spectral norm (training mode), as in training. Random tensors stand in for data.

Usage:
    PYTHONPATH=src python benchmarks/bench_models.py [--threads 1,2] [--batch 32] [--iters 20] [--out PATH]

On a shared machine, compare thread counts: OpenMP with 2 threads on 2 busy cores can be far slower than 1.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from degan.fileio import write_json
from degan.models import create_model

CASES = [
    # (model, options, most timed iterations: the full SNGAN takes seconds per step on CPU)
    ("dcgan", dict(resolution=32, width=0.25), None),
    ("dcgan", dict(resolution=32, width=0.5), None),
    ("dcgan", dict(resolution=32, width=1.0), None),
    ("sngan32", dict(width=1.0), 3),
]


def _step_fns(G, D, batch: int):
    opt_G = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.0, 0.9))
    opt_D = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.0, 0.9))
    real = torch.rand(batch, G.img_channels, G.resolution, G.resolution) * 2 - 1

    def d_step() -> None:
        with torch.no_grad():
            fake = G(torch.randn(batch, G.z_dim))
        logits = D(torch.cat([real, fake]))
        loss = torch.relu(1 - logits[:batch]).mean() + torch.relu(1 + logits[batch:]).mean()
        opt_D.zero_grad(set_to_none=True)
        loss.backward()
        opt_D.step()

    def g_step() -> None:
        loss = -D(G(torch.randn(batch, G.z_dim))).mean()
        opt_G.zero_grad(set_to_none=True)
        loss.backward()
        opt_G.step()

    return d_step, g_step


def _time_ms(fn, iters: int) -> float:
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def bench(name: str, kwargs: dict, batch: int, iters: int, warmup: int) -> dict:
    torch.manual_seed(0)
    G, D = create_model(name, **kwargs)
    G.train()
    D.train()
    d_step, g_step = _step_fns(G, D, batch)
    for _ in range(warmup):
        d_step()
        g_step()
    d_ms = _time_ms(d_step, iters)
    g_ms = _time_ms(g_step, iters)
    return {
        "model": name,
        "config": G.config,
        "params_G": sum(p.numel() for p in G.parameters()),
        "params_D": sum(p.numel() for p in D.parameters()),
        "d_step_ms": round(d_ms, 2),
        "g_step_ms": round(g_ms, 2),
        "step_ms": round(d_ms + g_ms, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", default="1,2", help="comma-separated torch intra-op thread counts to run")
    parser.add_argument("--batch", type=int, default=32, help="real batch = fake batch = G batch")
    parser.add_argument("--iters", type=int, default=20, help="timed iterations per step kind (median reported)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed D+G steps first")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "models_cpu.json")
    args = parser.parse_args()
    threads = [int(t) for t in args.threads.split(",") if t.strip()]
    load_at_start = list(os.getloadavg())
    results = []
    for n_threads in threads:
        torch.set_num_threads(n_threads)
        for name, kwargs, max_iters in CASES:
            iters = min(args.iters, max_iters or args.iters)
            warmup = min(args.warmup, 1) if max_iters else args.warmup
            r = {"threads": n_threads, "iters": iters, **bench(name, kwargs, args.batch, iters, warmup)}
            print(
                f"threads {n_threads} {name:8s} {kwargs!s:36s} G {r['params_G']:>9,d} D {r['params_D']:>9,d}  "
                f"D step {r['d_step_ms']:8.1f} ms  G step {r['g_step_ms']:8.1f} ms  total {r['step_ms']:8.1f} ms"
            )
            results.append(r)
    write_json(
        args.out,
        {
            "benchmark": "one D step + one G step, hinge loss, Adam, spectral norm on D, random data",
            "unit": "milliseconds (median over iters)",
            "batch": args.batch,
            "threads": threads,
            "cpu_count": os.cpu_count(),
            "load_average_at_start": load_at_start,
            "load_average_at_end": list(os.getloadavg()),
            "iters": args.iters,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "processor": platform.processor() or platform.machine(),
            "results": results,
        },
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
