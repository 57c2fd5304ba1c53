"""Benchmark: wall time of `degan demo` (target: < 15 min on 2 CPU cores after set-up), as JSON.

Runs the demo into a fresh temporary folder (or summarises an existing demo run with --run-dir) and writes the
total wall time, per-level train/eval seconds and the metrics to benchmarks/results/demo_cpu.json.

    python benchmarks/bench_demo.py                 # run the demo and time it
    python benchmarks/bench_demo.py --run-dir runs/ticket-demo-XXXX --wall-seconds 610
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch


def summarise(run_dir: Path, wall: float | None) -> dict:
    levels = []
    for done in sorted(run_dir.glob("level_*/done.json")):
        d = json.loads(done.read_text())
        levels.append({k: d.get(k) for k in ("level", "density_G", "density_D", "kimg", "real_images_shown",
                                             "train_seconds", "eval_seconds", "metrics")})
    return {"benchmark": "degan_demo_cpu", "run_dir": str(run_dir), "wall_seconds": wall,
            "target_seconds": 900, "within_target": (wall is not None and wall < 900), "levels": levels,
            "torch_version": torch.__version__, "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
            "load_average_1min_at_end": os.getloadavg()[0], "python": platform.python_version()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", type=Path, default=None, help="summarise this finished demo run instead of running")
    ap.add_argument("--wall-seconds", type=float, default=None, help="measured wall time of that run (with --run-dir)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "demo_cpu.json")
    args = ap.parse_args()
    if args.run_dir is None:
        from degan.config import resolve
        from degan.lottery import run_ticket

        outdir = Path(tempfile.mkdtemp(prefix="degan-demo-bench-"))
        t0 = time.perf_counter()
        run = run_ticket(resolve("demo"), outdir, progress=False)
        result = summarise(run.root, time.perf_counter() - t0)
    else:
        result = summarise(args.run_dir, args.wall_seconds)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("wall_seconds", "within_target")}), file=sys.stderr)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
