"""The reference comparison: a plain PyTorch GAN training step, written the way the reference lottery-ticket code
trains (fp32, no augmentation, masks multiplied into the weights by hand before every forward, hinge loss, Adam),
against degan's `Trainer` on the same model, masks, batch and machine.

The networks are degan's registered G and D built *without* mask parametrizations (plain layers, PyTorch's
spectral norm on D), so both sides run the same convolutions; the reference side then does what a
straightforward training script does: ``w.data.mul_(mask)`` on every pruned weight before each forward. degan's
side is the real loop (`degan.train.Trainer`, masks as parametrizations, EMA off so that the work is the same).
Ratio = reference time / degan time per iteration (>= 1.0: degan is at least as fast).

    PYTHONPATH=src python benchmarks/reference_sngan.py [--model sngan32] [--batch 64] [--iters 20] [--quick]
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from degan.losses import GANObjective
from degan.models import create_model
from degan.pruning import PRUNERS, add_masks, ones_like_mask, set_mask
from degan.train import Trainer, make_state


def masks_for(model: str, resolution: int, width: float, density_level: int = 5) -> dict:
    """Random ticket masks (IMP density 0.8 ** level) for G and D, keyed as degan masks ``{"G": {...}, "D": {...}}``."""
    torch.manual_seed(0)
    G, D = create_model(model, resolution=resolution, width=width, pre_sn_hook=add_masks)
    rate = 1 - 0.8 ** density_level
    return {"G": PRUNERS.get("random")(G, ones_like_mask(G), rate, seed=1),
            "D": PRUNERS.get("random")(D, ones_like_mask(D), rate, seed=2)}


def _raw_params(net: torch.nn.Module, mask: dict) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(raw weight, mask) pairs of a plain network for degan mask keys (``x.weight`` or SN's ``x.weight_orig``)."""
    params = dict(net.named_parameters())
    out = []
    for key, m in mask.items():
        base = key[: -len(".weight")] if key.endswith(".weight") else key
        for cand in (key, f"{base}.parametrizations.weight.original", f"{base}.weight_orig"):
            if cand in params:
                out.append((params[cand], m.to(params[cand].dtype)))
                break
        else:
            raise KeyError(f"no parameter for mask {key}")
    return out


def reference_ms(model: str, resolution: int, width: float, batch: int, n_dis: int, iters: int, warmup: int,
                 masks: dict) -> float:
    """ms per iteration of the plain reference loop."""
    torch.manual_seed(0)
    G, D = create_model(model, resolution=resolution, width=width)
    pairs = _raw_params(G, masks["G"]) + _raw_params(D, masks["D"])
    opt_G = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.0, 0.9))
    opt_D = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.0, 0.9))
    images = torch.randint(0, 256, (256, 3, resolution, resolution), dtype=torch.uint8)

    def apply_masks():
        with torch.no_grad():
            for w, m in pairs:
                w.mul_(m)

    def step():
        for _ in range(n_dis):
            apply_masks()
            real = images[torch.randint(0, images.shape[0], (batch,))].float() / 127.5 - 1
            with torch.no_grad():
                fake = G(torch.randn(batch, G.z_dim))
            loss_D = F.relu(1 - D(real)).mean() + F.relu(1 + D(fake)).mean()
            opt_D.zero_grad()
            loss_D.backward()
            opt_D.step()
        apply_masks()
        loss_G = -D(G(torch.randn(batch, G.z_dim))).mean()
        opt_G.zero_grad()
        loss_G.backward()
        opt_G.step()

    for _ in range(warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    return (time.perf_counter() - t0) / iters * 1000


def degan_ms(model: str, resolution: int, width: float, batch: int, n_dis: int, iters: int, warmup: int,
             masks: dict) -> float:
    """ms per iteration of degan's Trainer on the same networks and masks (no augmentation, EMA off)."""
    torch.manual_seed(0)
    G, D = create_model(model, resolution=resolution, width=width, pre_sn_hook=add_masks)
    set_mask(G, masks["G"])
    set_mask(D, masks["D"])
    state = make_state(G, D, lr_G=2e-4, lr_D=2e-4, betas=(0.0, 0.9))
    images = torch.randint(0, 256, (256, 3, resolution, resolution), dtype=torch.uint8)
    per_iter = batch * n_dis
    trainer = Trainer(state, images, GANObjective("hinge"), total_kimg=per_iter * warmup / 1000, batch_D=batch,
                      batch_G=batch, n_dis=n_dis, ema_decay=None)
    trainer.run()
    trainer.total_nimg = per_iter * (warmup + iters)
    t0 = time.perf_counter()
    trainer.run()
    return (time.perf_counter() - t0) / iters * 1000


def compare(model: str = "sngan32", resolution: int = 32, width: float = 1.0, batch: int = 64, n_dis: int = 1,
            iters: int = 20, warmup: int = 3, rounds: int = 3) -> dict:
    """Alternate reference and degan timings ``rounds`` times (so drifts in machine load hit both) and report the
    medians and the ratio reference / degan."""
    masks = masks_for(model, resolution, width)
    ref, ours = [], []
    for _ in range(rounds):
        ref.append(reference_ms(model, resolution, width, batch, n_dis, iters, warmup, masks))
        ours.append(degan_ms(model, resolution, width, batch, n_dis, iters, warmup, masks))
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    return {"model": model, "resolution": resolution, "width": width, "batch": batch, "n_dis": n_dis,
            "iters": iters, "rounds": rounds, "reference_ms_per_iter": med(ref), "degan_ms_per_iter": med(ours),
            "reference_runs_ms": ref, "degan_runs_ms": ours,
            "speedup_degan_vs_reference": med(ref) / med(ours), "target_speedup": 1.0,
            "within_target": med(ref) / med(ours) >= 1.0,
            "density": 0.8 ** 5, "torch_threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="sngan32")
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--n-dis", type=int, default=1)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--quick", action="store_true", help="2 iterations, 1 round, width 0.25: checks that it runs")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.iters, args.rounds, args.width = 2, 1, min(args.width, 0.25)
    res = compare(args.model, 32, args.width, args.batch, args.n_dis, args.iters, 1 if args.quick else 3, args.rounds)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
