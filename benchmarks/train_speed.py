"""Benchmark: training speed (img/s), peak memory and MFU per preset and speed option, plus the reference comparison.

One iteration = ``n_dis`` D steps + 1 G step of the real loop (`degan.train.Trainer`), on random uint8 images.
Presets (each against the one before it, for the overhead targets):

- ``dense``: plain layers (no mask parametrization), no augmentation;
- ``ticket``: masks registered and 67 % pruned (IMP level 5, density 0.8**5), no augmentation  (target <= 1.05x dense);
- ``diffaug``: ticket + DiffAugment color,translation,cutout                              (target <= 1.10x ticket);
- ``advaug``: diffaug + AdvAug PGD-1 on G and D (SPEC §4 defaults)                        (target <= 1.70x diffaug);
- ``rggan``: RG-GAN dynamic masks (thresholds, regulariser, callback) + DiffAugment       (target <= 1.15x diffaug).

Speed options (each on the ``diffaug`` preset): ``fp32`` (baseline), ``bf16`` autocast, ``channels_last``,
``foreach`` Adam, ``fused`` Adam (CUDA), ``compile`` (torch.compile of the plain forwards), ``fp16`` (CUDA).

Each measurement runs in a fresh subprocess (peak memory = that process's max RSS on CPU,
``torch.cuda.max_memory_allocated`` on GPU). MFU = model FLOP/s / measured matmul peak of the same device and dtype;
model FLOPs per iteration = 2 x MACs (degan.costs.layer_macs, batch 1, scaled by the batch) x 3 (forward +
backward ~ 2 x forward) for every pass that back-propagates, x 1 for G's no-grad pass in the D step (AdvAug's extra
PGD passes and RG-GAN's threshold work are not counted: MFU counts useful model FLOPs only).

Models whose name is not registered (e.g. ``biggan``, ``stylegan2`` while they are being written) are skipped with a
note in the JSON. Writes ``benchmarks/results/train_speed_<device>.json``.

    PYTHONPATH=src python benchmarks/train_speed.py --quick              # a few iterations: checks that it runs
    PYTHONPATH=src python benchmarks/train_speed.py --device cpu --threads 2      # the CPU run (idle machine)
    PYTHONPATH=src python benchmarks/train_speed.py --device cuda                  # the GPU suite
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
PRESETS = ("dense", "ticket", "diffaug", "advaug", "rggan")
OPTIONS = ("fp32", "bf16", "channels_last", "foreach", "fused", "compile", "fp16")
OVERHEAD_TARGETS = {"ticket": ("dense", 1.05), "diffaug": ("ticket", 1.10), "advaug": ("diffaug", 1.7),
                    "rggan": ("diffaug", 1.15)}
# (model, resolution, width, batch, n_dis) suites
CPU_SUITE = [("dcgan", 32, 0.5, 32, 1), ("dcgan", 32, 0.5, 64, 1), ("sngan32", 32, 1.0, 32, 1),
             ("sngan32", 32, 1.0, 64, 1)]
GPU_SUITE = [("sngan32", 32, 1.0, 64, 5), ("biggan", 32, 1.0, 50, 4), ("stylegan2", 256, 1.0, 16, 1)]
AUGMENT = "diffaug:color,translation,cutout"


# ---------------------------------------------------------------------------------------------------------------------
# one measurement (runs in a subprocess)


def build(spec: dict):
    """Trainer for one measurement spec (model, resolution, width, batch, n_dis, preset, option, device)."""
    from degan.augment import build_augment
    from degan.augment.advaug import AdvAugObjective, AdvAugSettings
    from degan.losses import GANObjective
    from degan.models import create_model
    from degan.pruning import PRUNERS, add_masks, ones_like_mask, set_mask
    from degan.train import Trainer, make_state
    from degan.train.precision import Precision, apply_speed_options

    preset, option, dev = spec["preset"], spec["option"], torch.device(spec["device"])
    kw = dict(resolution=spec["resolution"], width=spec["width"])
    torch.manual_seed(0)
    callbacks, objective_wrap = [], None
    aug = build_augment(AUGMENT) if preset in ("diffaug", "advaug", "rggan") else None
    if preset == "rggan":
        from degan.pruning.dynamic import add_dynamic_masks
        from degan.train.regen import DynamicPruning, make_dynamic_state

        G, D = create_model(spec["model"], pre_sn_hook=lambda n: add_dynamic_masks(n, "conv,convT,linear", "ste"),
                            **kw)
        G, D = G.to(dev), D.to(dev)
        state = make_dynamic_state(G, D, lr_G=2e-4, lr_D=2e-4, betas=(0.0, 0.9))
        dyn = DynamicPruning(lam=5e-12)
        state.extras["dynamic"] = dyn
        callbacks.append(dyn)
        objective_wrap = dyn.wrap
    else:
        G, D = create_model(spec["model"], pre_sn_hook=None if preset == "dense" else add_masks, **kw)
        if preset != "dense":
            rate = 1 - 0.8 ** 5
            set_mask(G, PRUNERS.get("random")(G, ones_like_mask(G), rate, seed=1))
            set_mask(D, PRUNERS.get("random")(D, ones_like_mask(D), rate, seed=2))
        G, D = G.to(dev), D.to(dev)
        state = make_state(G, D, lr_G=2e-4, lr_D=2e-4, betas=(0.0, 0.9))
    objective = (AdvAugObjective("hinge", aug, AdvAugSettings(), resolution=spec["resolution"])
                 if preset == "advaug" else GANObjective("hinge", aug))
    if objective_wrap is not None:
        objective = objective_wrap(objective)
    precision = Precision(option if option in ("bf16", "fp16") else "fp32", dev)
    state.extras["precision"] = precision
    objective = precision.wrap(objective)
    apply_speed_options(state, channels_last=option == "channels_last",
                        adam={"foreach": "foreach", "fused": "fused"}.get(option, "auto"), compile=option == "compile")
    ch = getattr(G, "img_channels", 3)
    images = torch.randint(0, 256, (512, ch, spec["resolution"], spec["resolution"]), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    trainer = Trainer(state, images, objective, total_kimg=0.0, batch_D=spec["batch"], batch_G=spec["batch"],
                      n_dis=spec["n_dis"], device=dev, callbacks=callbacks)
    return trainer


def model_flops(trainer, spec: dict) -> float:
    """Useful model FLOPs per iteration (see the module docstring)."""
    from degan.costs import TOTAL_KEY, layer_macs

    G, D, dev = trainer.state.G, trainer.state.D, trainer.device
    z = torch.zeros(1, G.z_dim, device=dev)
    g_macs = layer_macs(G, z)[TOTAL_KEY]
    img = torch.zeros(1, getattr(G, "img_channels", 3), spec["resolution"], spec["resolution"], device=dev)
    d_macs = layer_macs(D, img)[TOTAL_KEY]
    b, k = spec["batch"], spec["n_dis"]
    macs = k * (g_macs * b + 3 * d_macs * 2 * b) + 3 * (g_macs + d_macs) * b
    return 2.0 * macs


def run_one(spec: dict) -> dict:
    """Time ``spec["iters"]`` iterations after ``spec["warmup"]``; returns the measurement."""
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    dev = torch.device(spec["device"])
    trainer = build(spec)
    per_iter = spec["batch"] * spec["n_dis"]
    trainer.total_nimg = per_iter * spec["warmup"]
    trainer.run()
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    trainer.total_nimg = per_iter * (spec["warmup"] + spec["iters"])
    t0 = time.perf_counter()
    trainer.run()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    sec = (time.perf_counter() - t0) / spec["iters"]
    peak = (torch.cuda.max_memory_allocated() if dev.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    flops = model_flops(trainer, spec)
    return {"ms_per_iter": sec * 1000, "img_per_s": per_iter / sec, "peak_memory_MiB": peak / 2 ** 20,
            "model_flops_per_iter": flops, "achieved_flops": flops / sec}


def matmul_peak(device: str, dtype: torch.dtype, threads: int | None, quick: bool) -> float:
    """Measured matmul FLOP/s (best of several square products) on ``device`` in ``dtype``."""
    if threads:
        torch.set_num_threads(threads)
    n = 1024 if device == "cpu" else 8192
    if quick:
        n //= 4
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    best = 0.0
    for _ in range(2 if quick else 6):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        reps = 1 if device == "cpu" else 10
        for _ in range(reps):
            a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        best = max(best, 2 * n ** 3 * reps / (time.perf_counter() - t0))
    return best


# ---------------------------------------------------------------------------------------------------------------------
# orchestration


def measure(spec: dict, timeout: float) -> dict:
    """Run :func:`run_one` in a fresh subprocess; errors and timeouts come back as ``{"error": ...}``."""
    env = dict(os.environ, PYTHONPATH=str(HERE.parent / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    try:
        p = subprocess.run([sys.executable, __file__, "--run-one", json.dumps(spec)], capture_output=True, text=True,
                           timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout} s"}
    if p.returncode != 0:
        return {"error": (p.stderr.strip().splitlines() or ["?"])[-1][:300]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="CPU threads per measurement (torch.set_num_threads)")
    ap.add_argument("--presets", default=",".join(PRESETS))
    ap.add_argument("--options", default=None, help=f"speed options to measure on the diffaug preset ({OPTIONS})")
    ap.add_argument("--suite", default=None, help="model:resolution:width:batch:n_dis,... instead of the default suite")
    ap.add_argument("--no-reference", action="store_true", help="skip the reference SNGAN comparison")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per measurement")
    ap.add_argument("--quick", action="store_true",
                    help="2 iterations, 1 warm-up, one small config: checks that everything runs (numbers meaningless)")
    ap.add_argument("--reference-batch", type=int, default=64, help="batch of the reference SNGAN comparison")
    ap.add_argument("--reference-rounds", type=int, default=3, help="alternating rounds of the reference comparison")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--run-one", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.run_one:
        print(json.dumps(run_one(json.loads(args.run_one))))
        return

    from degan.models import list_models

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    registered = set(list_models())
    suite = CPU_SUITE if device == "cpu" else GPU_SUITE
    if args.suite:
        suite = [(m, int(r), float(w), int(b), int(k)) for m, r, w, b, k in
                 (s.split(":") for s in args.suite.split(","))]
    options = args.options.split(",") if args.options else (
        ["fp32", "bf16", "channels_last", "foreach"] if device == "cpu" else list(OPTIONS))
    presets = args.presets.split(",")
    if args.quick:
        args.iters, args.warmup = 2, 1
        suite = [("dcgan", 32, 0.25, 8, 1)] if not args.suite else suite[:1]
        if args.options is None and device == "cpu":
            options = ["fp32", "bf16", "channels_last", "foreach"]
    notes, results = [], []
    peaks = {"fp32": matmul_peak(device, torch.float32, args.threads, args.quick)}
    if "bf16" in options:
        peaks["bf16"] = matmul_peak(device, torch.bfloat16, args.threads, args.quick)
    if device == "cuda" and "fp16" in options:
        peaks["fp16"] = matmul_peak(device, torch.float16, args.threads, args.quick)
    for model, res, width, batch, n_dis in suite:
        if model not in registered:
            notes.append(f"model {model!r} is not registered in this checkout: skipped")
            continue
        base = dict(model=model, resolution=res, width=width, batch=batch, n_dis=n_dis, device=device,
                    iters=args.iters, warmup=args.warmup, threads=args.threads)
        runs = [(p, "fp32") for p in presets] + [("diffaug", o) for o in options if o != "fp32"]
        for preset, option in runs:
            if device == "cpu" and option in ("fused", "fp16", "compile") and not args.options:
                continue
            spec = dict(base, preset=preset, option=option)
            r = measure(spec, args.timeout)
            peak = peaks.get("bf16" if option == "bf16" else "fp16" if option == "fp16" else "fp32")
            if "achieved_flops" in r and peak:
                r["mfu"] = r["achieved_flops"] / peak
            results.append({**{k: v for k, v in spec.items() if k not in ("device",)}, **r})
            print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in results[-1].items()
                              if k in ("model", "batch", "preset", "option", "ms_per_iter", "img_per_s",
                                       "peak_memory_MiB", "mfu", "error")}), flush=True)
    overheads = []
    for r in results:
        if r["option"] != "fp32" or r["preset"] not in OVERHEAD_TARGETS or "ms_per_iter" not in r:
            continue
        ref_preset, target = OVERHEAD_TARGETS[r["preset"]]
        ref = next((x for x in results if x["model"] == r["model"] and x["batch"] == r["batch"]
                    and x["preset"] == ref_preset and x["option"] == "fp32" and "ms_per_iter" in x), None)
        if ref:
            ov = r["ms_per_iter"] / ref["ms_per_iter"]
            overheads.append({"model": r["model"], "batch": r["batch"], "preset": r["preset"], "vs": ref_preset,
                              "overhead": ov, "target": target, "within_target": ov <= target})
    options_speedup = []
    for r in results:
        if r["preset"] == "diffaug" and r["option"] != "fp32" and "ms_per_iter" in r:
            ref = next((x for x in results if x["model"] == r["model"] and x["batch"] == r["batch"]
                        and x["preset"] == "diffaug" and x["option"] == "fp32" and "ms_per_iter" in x), None)
            if ref:
                options_speedup.append({"model": r["model"], "batch": r["batch"], "option": r["option"],
                                        "speedup_vs_fp32": ref["ms_per_iter"] / r["ms_per_iter"]})
    reference = None
    if not args.no_reference and device == "cpu" and "sngan32" in registered:
        sys.path.insert(0, str(HERE))
        from reference_sngan import compare

        if args.threads:
            torch.set_num_threads(args.threads)
        reference = (compare("sngan32", 32, 0.25, 8, 1, iters=2, warmup=1, rounds=1) if args.quick
                     else compare("sngan32", 32, 1.0, args.reference_batch, 1, iters=args.iters, warmup=args.warmup,
                             rounds=args.reference_rounds))
    out = {"benchmark": "train_speed", "device": device,
           "device_name": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu",
           "quick": args.quick, "iters": args.iters, "warmup": args.warmup, "augment": AUGMENT,
           "matmul_peak_flops": peaks, "results": results, "overheads": overheads,
           "option_speedups": options_speedup, "reference_comparison": reference, "notes": notes,
           "torch_version": torch.__version__, "torch_threads": args.threads or torch.get_num_threads(),
           "cpu_count": os.cpu_count(), "load_average_1min_at_end": os.getloadavg()[0],
           "python": platform.python_version()}
    path = args.out or HERE / "results" / f"train_speed_{device}{'_quick' if args.quick else ''}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({"overheads": overheads, "option_speedups": options_speedup,
                      "reference": reference and reference["speedup_degan_vs_reference"], "notes": notes}, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
