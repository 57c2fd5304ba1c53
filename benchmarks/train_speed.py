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

StyleGAN2 reference comparison (CPU, issue 15): :func:`compare_stylegan2` times degan's StyleGAN2 step (the real
``Trainer``) against a plain PyTorch StyleGAN2 step written in this file the way the released StyleGAN2(-ADA)
PyTorch code runs without its custom ops (:func:`_sg2_reference_nets`: transposed conv + FIR up-sampling, FIR +
stride-2 down-sampling, upfirdn2d by zero insertion + pad + depthwise 4x4 conv), at 32 px, channel base 4096, 8
mapping layers, z 512, batch 16, fp32, non-saturating loss, no regularisers; interleaved pairs (reference, degan)
x ``--sg2-rounds`` (5) of ``--sg2-iters`` (1) iterations each, after one warm-up iteration of each; medians;
ratio = reference / degan (target >= 1.0), also per pair (``pair_ratios``, ``median_pair_ratio``). The result goes under the key
``stylegan2_reference_comparison``; ``--stylegan2-only`` updates just that key of the existing JSON:

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH=src python benchmarks/train_speed.py --device cpu --threads 1 \
        --stylegan2-only

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
# StyleGAN2: degan's step against a plain PyTorch step written here the way the released StyleGAN2(-ADA) PyTorch code
# runs on CPU (its pure-PyTorch fallback, no custom ops): upfirdn2d as zero insertion by reshape + pad + a 4x4
# depthwise conv (+ slicing to down-sample), modulation as input scaling + shared conv + demodulation scaling in
# training, the up-sampling conv as stride-2 transposed conv + FIR, the down-sampling conv as FIR + stride-2 conv.


def _sg2_reference_nets(resolution: int, z_dim: int, mapping_layers: int, channel_base: int, channel_max: int = 512):
    """A plain StyleGAN2 G and D (config F layout, skip G / residual D, equalised lr) as nn.Modules."""
    import math

    import torch.nn as nn
    import torch.nn.functional as F

    f1 = torch.tensor([1.0, 3.0, 3.0, 1.0])
    fir = torch.outer(f1, f1) / f1.sum() ** 2

    def upfirdn(x, up=1, down=1, pad=(0, 0), gain=1.0):
        n, c, h, w = x.shape
        if up > 1:  # zero insertion by reshape + pad
            x = x.reshape(n, c, h, 1, w, 1)
            x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
            x = x.reshape(n, c, h * up, w * up)
        x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
        x = F.conv2d(x, (fir * gain).to(x.dtype).expand(c, 1, 4, 4), groups=c)
        return x[:, :, ::down, ::down] if down > 1 else x

    def act(x):
        return F.leaky_relu(x, 0.2) * math.sqrt(2)

    class FC(nn.Module):
        def __init__(self, i, o, lr_mul=1.0, bias_init=0.0, activation=False):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(o, i) / lr_mul)
            self.bias = nn.Parameter(torch.full([o], float(bias_init)))
            self.gain, self.lr_mul, self.activation = lr_mul / math.sqrt(i), lr_mul, activation

        def forward(self, x):
            y = F.linear(x, self.weight * self.gain, self.bias * self.lr_mul)
            return act(y) if self.activation else y

    class ModConv(nn.Module):
        def __init__(self, i, o, w_dim, k, demod=True, up=False, res=4, noise=True, activation=True):
            super().__init__()
            self.affine = FC(w_dim, i, bias_init=1.0)
            self.weight = nn.Parameter(torch.randn(o, i, k, k))
            self.bias = nn.Parameter(torch.zeros(o))
            self.noise_strength = nn.Parameter(torch.zeros([])) if noise else None
            self.gain, self.demod, self.up, self.res, self.k, self.activation = (
                1 / math.sqrt(i * k * k), demod, up, res, k, activation)

        def forward(self, x, w):
            s = self.affine(w)
            wt = self.weight * self.gain
            x = x * s[:, :, None, None]
            if self.up:
                x = F.conv_transpose2d(x, wt.transpose(0, 1).flip(2, 3), stride=2)
                x = upfirdn(x, pad=(1, 1), gain=4.0)
            else:
                x = F.conv2d(x, wt, padding=self.k // 2)
            if self.demod:
                d = (s.square() @ wt.square().sum(dim=(2, 3)).t() + 1e-8).rsqrt()
                x = x * d[:, :, None, None]
            if self.noise_strength is not None:
                x = x + torch.randn(x.shape[0], 1, self.res, self.res) * self.noise_strength
            x = x + self.bias[None, :, None, None]
            return act(x) if self.activation else x

    ch = lambda r: min(channel_base // r, channel_max)  # noqa: E731
    res = [2 ** k for k in range(2, int(math.log2(resolution)) + 1)]

    class G(nn.Module):
        def __init__(self):
            super().__init__()
            self.z_dim = z_dim
            self.mapping = nn.Sequential(*[FC(z_dim, z_dim, lr_mul=0.01, activation=True)
                                           for _ in range(mapping_layers)])
            self.const = nn.Parameter(torch.randn(ch(4), 4, 4))
            self.convs, self.torgbs = nn.ModuleList(), nn.ModuleList()
            for r in res:
                if r > 4:
                    self.convs.append(ModConv(ch(r // 2), ch(r), z_dim, 3, up=True, res=r))
                self.convs.append(ModConv(ch(r), ch(r), z_dim, 3, res=r))
                self.torgbs.append(ModConv(ch(r), 3, z_dim, 1, demod=False, noise=False, activation=False))

        def forward(self, z):
            x = z * (z.square().mean(1, keepdim=True) + 1e-8).rsqrt()
            w = self.mapping(x)
            x = self.const[None].repeat(z.shape[0], 1, 1, 1)
            img, ci = None, 0
            for bi, r in enumerate(res):
                for _ in range(1 if r == 4 else 2):
                    x = self.convs[ci](x, w)
                    ci += 1
                y = self.torgbs[bi](x, w)
                img = y if img is None else upfirdn(img, up=2, pad=(2, 1), gain=4.0) + y
            return img

    class Conv(nn.Module):
        def __init__(self, i, o, k, bias=True, activation=True, down=False, gain=1.0):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(o, i, k, k))
            self.bias = nn.Parameter(torch.zeros(o)) if bias else None
            self.wg, self.k, self.activation, self.down, self.gain = 1 / math.sqrt(i * k * k), k, activation, down, gain

        def forward(self, x):
            wt = self.weight * self.wg
            if self.down and self.k == 1:
                x = F.conv2d(upfirdn(x, down=2, pad=(1, 1)), wt, self.bias)
            elif self.down:
                x = F.conv2d(upfirdn(x, pad=(2, 2)), wt, self.bias, stride=2)
            else:
                x = F.conv2d(x, wt, self.bias, padding=self.k // 2)
            x = act(x) if self.activation else x
            return x * self.gain

    class DBlock(nn.Module):
        def __init__(self, i, o):
            super().__init__()
            self.conv0 = Conv(i, i, 3)
            self.conv1 = Conv(i, o, 3, down=True, gain=math.sqrt(0.5))
            self.skip = Conv(i, o, 1, bias=False, activation=False, down=True, gain=math.sqrt(0.5))

        def forward(self, x):
            return self.skip(x) + self.conv1(self.conv0(x))

    class D(nn.Module):
        def __init__(self):
            super().__init__()
            self.fromrgb = Conv(3, ch(resolution), 1)
            self.blocks = nn.Sequential(*[DBlock(ch(r), ch(r // 2)) for r in reversed(res[1:])])
            self.conv = Conv(ch(4) + 1, ch(4), 3)
            self.fc = FC(ch(4) * 16, ch(4), activation=True)
            self.out = FC(ch(4), 1)

        def forward(self, img):
            x = self.blocks(self.fromrgb(img))
            n, c, h, w = x.shape
            g = min(4, n)
            y = x.reshape(g, -1, c, h, w)
            y = (y - y.mean(0)).square().mean(0).add(1e-8).sqrt().mean(dim=(1, 2, 3))
            y = y.reshape(-1, 1, 1, 1).repeat(g, 1, h, w)
            x = self.conv(torch.cat([x, y], 1))
            return self.out(self.fc(x.flatten(1))).squeeze(1)

    return G(), D()


def _sg2_reference_step(G, D, G_ema, opt_G, opt_D, images, batch: int, gen: torch.Generator) -> None:
    """One D step + one G step (non-saturating loss, no regularisers, no augmentation) + EMA (0.999)."""
    import torch.nn.functional as F

    real = images[torch.randint(0, images.shape[0], (batch,), generator=gen)].float() / 127.5 - 1
    D.requires_grad_(True)
    G.requires_grad_(False)
    with torch.no_grad():
        fake = G(torch.randn(batch, G.z_dim, generator=gen))
    loss = F.softplus(D(fake)).mean() + F.softplus(-D(real)).mean()
    opt_D.zero_grad(set_to_none=True)
    loss.backward()
    opt_D.step()
    G.requires_grad_(True)
    D.requires_grad_(False)
    loss = F.softplus(-D(G(torch.randn(batch, G.z_dim, generator=gen)))).mean()
    opt_G.zero_grad(set_to_none=True)
    loss.backward()
    opt_G.step()
    D.requires_grad_(True)
    with torch.no_grad():
        for pe, p in zip(G_ema.parameters(), G.parameters()):
            pe.lerp_(p, 1 - 0.999)


def compare_stylegan2(resolution: int = 32, channel_base: int = 4096, mapping_layers: int = 8, z_dim: int = 512,
                      batch: int = 16, iters: int = 1, warmup: int = 1, rounds: int = 5) -> dict:
    """Interleaved timing of the plain reference StyleGAN2 step and degan's (`Trainer`, same settings: fp32,
    non-saturating loss, Adam 0.002 betas (0, 0.99), EMA 0.999, no augmentation, no R1 / PL / mixing, random noise):
    ``rounds`` pairs, reference then degan, ``iters`` iterations each; medians of ms per iteration and the ratio
    reference / degan (>= 1.0: degan at least as fast)."""
    import copy

    from degan.losses import GANObjective
    from degan.models import create_model
    from degan.train import Trainer, make_state

    images = torch.randint(0, 256, (256, 3, resolution, resolution), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    rG, rD = _sg2_reference_nets(resolution, z_dim, mapping_layers, channel_base)
    rG_ema = copy.deepcopy(rG).requires_grad_(False)
    r_opt_G = torch.optim.Adam(rG.parameters(), lr=0.002, betas=(0.0, 0.99))
    r_opt_D = torch.optim.Adam(rD.parameters(), lr=0.002, betas=(0.0, 0.99))
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    G, D = create_model("stylegan2", resolution=resolution, channel_base=channel_base,
                        mapping_layers=mapping_layers, z_dim=z_dim)
    n_ref = sum(p.numel() for p in rG.parameters()) + sum(p.numel() for p in rD.parameters())
    n_degan = sum(p.numel() for p in G.parameters()) + sum(p.numel() for p in D.parameters())
    state = make_state(G, D, lr_G=0.002, lr_D=0.002, betas=(0.0, 0.99))
    trainer = Trainer(state, images, GANObjective("nonsaturating"), total_kimg=0.0, batch_D=batch, batch_G=batch,
                      n_dis=1, ema_decay=0.999)

    def ref_ms(n):
        t0 = time.perf_counter()
        for _ in range(n):
            _sg2_reference_step(rG, rD, rG_ema, r_opt_G, r_opt_D, images, batch, gen)
        return (time.perf_counter() - t0) / n * 1000

    def degan_ms(n):
        trainer.total_nimg = state.cur_nimg + batch * n
        t0 = time.perf_counter()
        trainer.run()
        return (time.perf_counter() - t0) / n * 1000

    ref_ms(warmup)
    degan_ms(warmup)
    ref, ours = [], []
    for _ in range(rounds):
        ref.append(ref_ms(iters))
        ours.append(degan_ms(iters))
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    pair_ratios = [r / o for r, o in zip(ref, ours)]
    return {"model": "stylegan2", "resolution": resolution, "channel_base": channel_base,
            "mapping_layers": mapping_layers, "z_dim": z_dim, "batch": batch, "precision": "fp32",
            "iters_per_round": iters, "rounds": rounds, "params_reference": n_ref, "params_degan": n_degan,
            "reference_ms_per_iter": med(ref), "degan_ms_per_iter": med(ours), "reference_runs_ms": ref,
            "degan_runs_ms": ours, "pair_ratios": pair_ratios, "median_pair_ratio": med(pair_ratios),
            "speedup_degan_vs_reference": med(ref) / med(ours), "target_speedup": 1.0,
            "within_target": med(ref) / med(ours) >= 1.0, "torch_threads": torch.get_num_threads(),
            "load_average_1min_at_end": os.getloadavg()[0]}


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
    ap.add_argument("--no-stylegan2-reference", action="store_true",
                    help="skip the StyleGAN2 comparison against the plain reference step (CPU)")
    ap.add_argument("--stylegan2-only", action="store_true",
                    help="run only the StyleGAN2 comparison and update its key in the existing JSON")
    ap.add_argument("--sg2-rounds", type=int, default=5, help="interleaved (reference, degan) pairs")
    ap.add_argument("--sg2-iters", type=int, default=1, help="iterations per timing of the StyleGAN2 comparison")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--run-one", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.run_one:
        print(json.dumps(run_one(json.loads(args.run_one))))
        return

    from degan.models import list_models

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if args.stylegan2_only:
        if args.threads:
            torch.set_num_threads(args.threads)
        sg2 = (compare_stylegan2(iters=1, warmup=1, rounds=1, batch=4) if args.quick
               else compare_stylegan2(iters=args.sg2_iters, rounds=args.sg2_rounds))
        path = args.out or HERE / "results" / f"train_speed_{device}{'_quick' if args.quick else ''}.json"
        out = json.loads(path.read_text()) if path.is_file() else {"benchmark": "train_speed", "device": device}
        out["stylegan2_reference_comparison"] = sg2
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=2) + "\n")
        print(json.dumps({k: v for k, v in sg2.items() if not k.endswith("_ms") and k != "pair_ratios"}, indent=1))
        print(f"wrote {path}")
        return
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
    sg2 = None
    if not args.no_stylegan2_reference and device == "cpu" and "stylegan2" in registered:
        sg2 = (compare_stylegan2(iters=1, warmup=1, rounds=1, batch=4) if args.quick
               else compare_stylegan2(iters=args.sg2_iters, rounds=args.sg2_rounds))
    out = {"benchmark": "train_speed", "device": device,
           "device_name": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu",
           "quick": args.quick, "iters": args.iters, "warmup": args.warmup, "augment": AUGMENT,
           "matmul_peak_flops": peaks, "results": results, "overheads": overheads,
           "option_speedups": options_speedup, "reference_comparison": reference,
           "stylegan2_reference_comparison": sg2, "notes": notes,
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
