"""Predicted run time from a short probe (``degan train --dry-run``): the real training path, a few iterations.

:func:`probe_train` trains the resolved config for ``warmup + iters`` iterations in a throw-away run folder (the
same data, model, techniques and precision as the real run; no evaluation, no snapshots on the way), reads the
``sec_per_kimg`` of the iterations after the warm-up from ``stats.jsonl`` and scales it to the run's length.
The evaluation at the end is predicted from the number of images the Inception network will see (samples + the
reference images) at a measured feature rate (:data:`FEATURES_PER_S`), since loading and timing the network would
cost more than the probe itself.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

__all__ = ["probe_train", "ProbeResult", "FEATURES_PER_S"]

#: Inception feature extraction, images/s, on 2 CPU cores (benchmarks/metrics_throughput.py, rounded down); on a
#: GPU the evaluation is not predicted.
FEATURES_PER_S = {"cpu": 12.0}


class ProbeResult(dict):
    """``sec_per_kimg``, ``train_minutes``, ``eval_images``, ``eval_minutes`` (None on GPU), ``probe_seconds``,
    ``iters``; :meth:`line` formats them."""

    def line(self) -> str:
        ev = (f" + evaluation of {self['eval_images']:,} images through Inception ~{self['eval_minutes']:.1f} min"
              if self.get("eval_minutes") is not None else "")
        return (f"# predicted: {self['sec_per_kimg']:.2f} s/kimg -> training {self['total_kimg']:g} kimg "
                f"~{self['train_minutes']:.1f} min{ev} (from a {self['iters']}-iteration probe on this machine, "
                f"{self['probe_seconds']:.0f} s; --probe 0 skips it)")


def probe_train(cfg, iters: int = 10, warmup: int = 2) -> ProbeResult:
    """Time ``iters`` training iterations of ``cfg`` after ``warmup`` untimed ones.

    Args:
        cfg: the resolved :class:`~degan.config.RunConfig` of the run to predict.
        iters: timed iterations (>= 1).
        warmup: untimed iterations first (allocator, oneDNN kernel selection).

    Returns:
        A :class:`ProbeResult`.

    Raises:
        ValueError: ``iters < 1``.
        DeganError: what the real run would raise (bad data, config).
    """
    from ..data import load_dataset  # noqa: F401  (imported for its side effects on the registries)
    from .runner import run_train

    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    batch = cfg.train.batch_D * max(1, cfg.train.n_dis)  # reals shown per iteration
    step_kimg = batch / 1000.0
    total = (warmup + iters) * step_kimg
    probe_cfg = replace(cfg, name="probe",
                        train=replace(cfg.train, total_kimg=total, snap_kimg=total * 10, log_kimg=step_kimg,
                                      seed=cfg.train.seed),
                        eval=replace(cfg.eval, metrics="none", best_every_kimg=None, early_stop=None))
    if hasattr(probe_cfg, "dynamic") and getattr(probe_cfg.dynamic, "enabled", False):
        probe_cfg = replace(probe_cfg, dynamic=replace(probe_cfg.dynamic, regen_every_kimg=None))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="degan-probe-") as tmp:
        run = run_train(probe_cfg, tmp, progress=False, log=lambda msg: None)
        rows = [json.loads(line) for line in Path(run.level(0).stats).read_text().splitlines() if line.strip()]
        num_reals = int(json.loads(Path(run.data).read_text()).get("num_selected", 0))
    probe_seconds = time.perf_counter() - t0
    rows = [r for r in rows if "wall_seconds" in r and "cur_nimg" in r]
    first = next((r for r in rows if r["cur_nimg"] >= warmup * batch), rows[0])
    last = rows[-1]
    if last["cur_nimg"] > first["cur_nimg"]:
        sec_per_kimg = (last["wall_seconds"] - first["wall_seconds"]) / ((last["cur_nimg"] - first["cur_nimg"]) / 1000)
    else:
        sec_per_kimg = last.get("sec_per_kimg") or float("nan")
    device = "cuda" if str(cfg.train.device).startswith("cuda") or (
        cfg.train.device == "auto" and _cuda()) else "cpu"
    eval_images = None
    eval_minutes = None
    metrics = [m for m in str(cfg.eval.metrics).split(",") if m.strip() and m.strip() != "none"]
    if metrics and device == "cpu":
        num_gen = cfg.eval.num_gen or 1000
        eval_images = num_gen + num_reals
        eval_minutes = eval_images / FEATURES_PER_S["cpu"] / 60.0 * _thread_factor()
    return ProbeResult(sec_per_kimg=sec_per_kimg, total_kimg=cfg.train.total_kimg,
                       train_minutes=sec_per_kimg * cfg.train.total_kimg / 60.0, eval_images=eval_images,
                       eval_minutes=eval_minutes, probe_seconds=probe_seconds, iters=iters)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _thread_factor() -> float:
    """The feature rate was measured with 2 threads; fewer threads take proportionally longer."""
    import torch

    return max(1.0, 2.0 / max(1, torch.get_num_threads()))
