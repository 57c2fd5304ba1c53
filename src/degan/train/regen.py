"""RG-GAN training pieces: the augmented-regeneration trigger, the training callback, the regularised objective,
the optimizer with threshold groups, and sparse / dense exports (SPEC §5).

Source: Saxena, Cao, Xu, Kulshrestha. *RG-GAN: Dynamic Regenerative Pruning for Data-Efficient Generative
Adversarial Networks*. AAAI 2024 (dynamic pruning + recurrent regeneration + augmented regeneration; Sparse_RG and
Dense_RG outputs of Table 5), and its released code (github.com/IntellicentAI-Lab/RG-GAN, ``src/rggan_main.py``)
for the ``reference`` trigger. The masks themselves are :class:`degan.pruning.dynamic.DynamicMask`.

Wiring (what a runner does)::

    G, D = create_model(name, pre_sn_hook=lambda n: add_dynamic_masks(n, threshold_grad="ste"), **kw)
    state = make_dynamic_state(G, D, lr_G=2e-4, lr_D=2e-4, betas=(0.0, 0.9))   # thresholds in Adam
    dyn = DynamicPruning(lam=5e-12, regen_every_kimg=50, evaluate=fid_of, log_path=run / "dynamic.jsonl")
    trainer = Trainer(state, images, dyn.wrap(GANObjective("hinge", aug)), ..., callbacks=[dyn, StatsLogger(...)])
"""

from __future__ import annotations

import json
import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from ..fileio import append_jsonl, read_jsonl, write_text
from ..losses import GANObjective, ObjectiveWrapper
from ..pruning.dynamic import (
    density_of,
    dynamic_layers,
    is_dynamic,
    param_groups,
    set_dense,
    threshold_penalty,
)
from .loop import Callback, Trainer
from .state import TrainState, make_generators

__all__ = [
    "REFERENCE_WEIGHTS",
    "TRIGGER_MODES",
    "DynamicPruning",
    "DynamicPruningObjective",
    "RegenTrigger",
    "dense_state_dict",
    "make_dynamic_state",
    "sparse_state_dict",
]

TRIGGER_MODES = ("paper", "reference")
REFERENCE_WEIGHTS = (0.1, 0.1, 0.2, 0.2, 0.4)
"""Weights of the released code's average over the last 5 FIDs *including* the current one, oldest first."""


# ---------------------------------------------------------------------------------------------------------------------
# the trigger


class RegenTrigger:
    """When to enter and leave the dense phase of augmented regeneration, from a sequence of FIDs.

    Modes:

    - ``"paper"`` (default): the paper regenerates "when current epoch's FID is greater than the weighted average
      FID value calculated over the previous n (n=5) epochs" and gives no weights, so the average is **uniform**
      over the 5 FIDs before the current one: ``A = mean(f[-6:-1])``. Decisions start at the 6th FID.
    - ``"reference"``: the released code: ``A = 0.1 f[-5] + 0.1 f[-4] + 0.2 f[-3] + 0.2 f[-2] + 0.4 f[-1]`` over the
      last 5 FIDs *including* the current one ``f[-1]`` (:data:`REFERENCE_WEIGHTS`). Decisions start at the 5th FID,
      as in that code.

    In both modes the FID is "worse" when ``fid > A`` (strictly). In the sparse (pruning) phase a worse FID means
    ``"regenerate"`` (enter the dense phase). In the dense phase the FID has **improved** when it is no longer worse
    (``fid <= A``, the same comparison with the same window, which then holds the FID that caused the switch): that
    means ``"resume_pruning"``. This is what the released code does (it re-decides the phase at every evaluation);
    the paper does not say when pruning resumes. Every FID, whatever the phase, enters the history.

    Args:
        mode: ``"paper"`` or ``"reference"``.
        window: n, the number of FIDs averaged (5 in the paper; ``reference`` needs 5).

    Raises:
        ValueError: an unknown mode, or a window < 1 (or != 5 with ``reference``).
    """

    def __init__(self, mode: str = "paper", window: int = 5) -> None:
        if mode not in TRIGGER_MODES:
            raise ValueError(f"regeneration trigger mode must be one of {', '.join(TRIGGER_MODES)}; got {mode!r}")
        if not isinstance(window, int) or window < 1:
            raise ValueError(f"trigger window must be an int >= 1 (the paper uses 5); got {window!r}")
        if mode == "reference" and window != len(REFERENCE_WEIGHTS):
            raise ValueError(f"the reference trigger averages exactly {len(REFERENCE_WEIGHTS)} FIDs with weights "
                             f"{REFERENCE_WEIGHTS}; got window={window} (use mode='paper' for another window)")
        self.mode, self.window = mode, window
        self.history: list[float] = []
        self.dense = False
        self.last_average: float | None = None

    @property
    def phase(self) -> str:
        """``"dense"`` or ``"sparse"``."""
        return "dense" if self.dense else "sparse"

    def average(self, fid: float) -> float | None:
        """The value a new ``fid`` is compared with (None while there are too few FIDs to decide)."""
        if self.mode == "paper":
            prev = self.history[-self.window:]
            return sum(prev) / len(prev) if len(prev) == self.window else None
        vals = (self.history + [float(fid)])[-self.window:]
        if len(vals) < self.window:
            return None
        return sum(w * v for w, v in zip(REFERENCE_WEIGHTS, vals))

    def update(self, fid: float) -> str:
        """Feed the FID of the latest evaluation; returns ``"regenerate"``, ``"resume_pruning"`` or ``"none"``.

        Args:
            fid: a finite FID (lower is better).

        Raises:
            ValueError: ``fid`` is NaN or infinite (a broken evaluation; the trigger cannot compare it).
        """
        fid = float(fid)
        if not math.isfinite(fid):
            raise ValueError(f"FID must be a finite number for the regeneration trigger; got {fid}. "
                             "Check the evaluation (enough samples? a diverged generator?)")
        avg = self.average(fid)
        self.history.append(fid)
        self.last_average = avg
        if avg is None:
            return "none"
        worse = fid > avg
        if not self.dense and worse:
            self.dense = True
            return "regenerate"
        if self.dense and not worse:
            self.dense = False
            return "resume_pruning"
        return "none"

    def state_dict(self) -> dict:
        """Plain-Python state (JSON- and ``weights_only``-safe)."""
        return {"mode": self.mode, "window": self.window, "history": list(self.history), "dense": self.dense,
                "last_average": self.last_average}

    def load_state_dict(self, sd: dict) -> None:
        """Restore from :meth:`state_dict`.

        Raises:
            ValueError: the state was written by a trigger of another mode or window.
        """
        if sd.get("mode", self.mode) != self.mode or int(sd.get("window", self.window)) != self.window:
            raise ValueError(f"trigger state is for mode={sd.get('mode')!r}, window={sd.get('window')}; this trigger "
                             f"is mode={self.mode!r}, window={self.window}: resume with the same trigger settings")
        self.history = [float(v) for v in sd.get("history", [])]
        self.dense = bool(sd.get("dense", False))
        la = sd.get("last_average")
        self.last_average = None if la is None else float(la)


# ---------------------------------------------------------------------------------------------------------------------
# the objective


class DynamicPruningObjective(ObjectiveWrapper):
    """A GAN objective plus RG-GAN's sparsity regulariser (Eq. 3) on the network being updated.

    ``d_loss`` adds ``sparsity_regularizer(D, lam)`` and ``g_loss`` adds ``sparsity_regularizer(G, lam)`` while that
    network is pruning (it has dynamic masks and is not in the dense phase), as the released code adds it to the D
    and G losses. Everything else (loss, augmentation, AdvAug...) is the wrapped objective's. The reported
    ``loss_D`` / ``loss_G`` stats stay the adversarial terms; the penalties are reported as ``reg_D`` / ``reg_G``.

    Args:
        base: the objective to extend (a :class:`~degan.losses.GANObjective` or subclass).
        lam: lambda >= 0 (paper 5e-12, released code 1e-12); 0 disables the penalty.

    Raises:
        ValueError: ``lam`` negative or not finite.
    """

    def __init__(self, base: GANObjective, lam: float = 5e-12) -> None:
        if not (lam >= 0 and math.isfinite(lam)):
            raise ValueError(f"sparsity regulariser lambda must be a finite number >= 0 (paper: 5e-12); got {lam}")
        super().__init__(base)
        self.lam = float(lam)
        self._layers: dict[int, list] = {}  # id(net) -> its DynamicMasks (the structure does not change in training)

    def _penalty(self, net: nn.Module) -> Tensor | None:
        dms = self._layers.get(id(net))
        if dms is None:
            dms = self._layers[id(net)] = [dm for _, _, dm in dynamic_layers(net)]
        if self.lam == 0 or not dms or all(dm.dense for dm in dms):
            return None
        return threshold_penalty([dm.threshold for dm in dms], self.lam)

    def d_loss(self, G: nn.Module, D: nn.Module, real: Tensor, z: Tensor,
               generator: torch.Generator | None = None, **kwargs) -> tuple[Tensor, dict[str, float]]:
        """The wrapped D loss + ``lam * sum exp(-t_D)``; same arguments (labels ``c=`` passed through) and return
        as GANObjective.d_loss."""
        loss, stats = self.objective.d_loss(G, D, real, z, generator, **kwargs)
        r = self._penalty(D)
        if r is not None:
            loss = loss + r
            stats = {**stats, "reg_D": float(r.detach())}
        return loss, stats

    def g_loss(self, G: nn.Module, D: nn.Module, z: Tensor,
               generator: torch.Generator | None = None, **kwargs) -> tuple[Tensor, dict[str, float]]:
        """The wrapped G loss + ``lam * sum exp(-t_G)``; same arguments (labels ``c=`` passed through) and return
        as GANObjective.g_loss."""
        loss, stats = self.objective.g_loss(G, D, z, generator, **kwargs)
        r = self._penalty(G)
        if r is not None:
            loss = loss + r
            stats = {**stats, "reg_G": float(r.detach())}
        return loss, stats


# ---------------------------------------------------------------------------------------------------------------------
# the callback


def _nimg(kimg: float | None) -> int | None:
    return None if kimg is None else max(1, round(kimg * 1000))


class DynamicPruning(Callback):
    """The RG-GAN callback of :class:`~degan.train.loop.Trainer`: collapse guard, densities, augmented regeneration.

    After every iteration it

    1. (pruning phase) resets to 0 the thresholds of every G / D layer whose kept ratio is ``<= min_keep``
       (collapse guard; logged as ``collapse_guard`` events);
    2. adds to the iteration's ``stats``: ``density_G``, ``density_D`` (effective kept fraction of the masked
       weights, 1.0 in the dense phase), ``thr_mean_G``, ``thr_min_G``, ``thr_max_G`` (and ``_D``) and
       ``dense_phase`` (0 / 1), which :class:`~degan.train.callbacks.StatsLogger` averages per log period;
    3. every ``log_kimg``: appends a per-layer density record (``kind: "density"``) to the JSONL log (Figure 3 of
       the paper);
    4. every ``regen_every_kimg``: calls ``evaluate(G_ema)`` for an FID, feeds the :class:`RegenTrigger` and, on
       ``"regenerate"``, switches the masks of G, D and G_ema to dense (every pruned weight back with its frozen
       value); on ``"resume_pruning"`` back to pruning. Every FID is logged (``kind: "fid"``, with the trigger
       state) and every switch as an event (``kind: "event"``) with the FIDs that caused it, in :attr:`events` and
       in the JSONL log.

    The sparsity regulariser lives in the objective: train with :meth:`wrap` (a :class:`DynamicPruningObjective`
    with this ``lam``). The thresholds must be in the optimizers: build the state with :func:`make_dynamic_state`
    (or Adam over :func:`degan.pruning.dynamic.param_groups`).

    Resume: :meth:`state_dict` / :meth:`load_state_dict`; if neither was used and training starts at
    ``cur_nimg > 0``, the state is rebuilt from the JSONL log (records after the checkpoint are dropped from it).

    Args:
        lam: sparsity regulariser lambda (used by :meth:`wrap`), >= 0; paper 5e-12.
        min_keep: collapse-guard floor on a layer's kept ratio, in [0, 1); 0.01 as the released code.
        regen_every_kimg: evaluation period of augmented regeneration in kimg; None = no augmented regeneration
            (dynamic pruning and recurrent regeneration only).
        trigger: ``"paper"`` or ``"reference"`` (see :class:`RegenTrigger`).
        evaluate: ``fn(G_ema) -> FID`` (float, lower is better), e.g. an FID on a few thousand samples; required
            when ``regen_every_kimg`` is set.
        log_path: JSONL file for density records, FIDs and events (None = in memory only).
        log_kimg: period of the per-layer density records in kimg (None = none; a record is also written at the
            start and the end).
        window: number of FIDs the trigger averages (5).
        metric: the name of what ``evaluate`` returns (``fid``, ``kid_train``, ...), recorded with each check and
            used by the plots' labels.
        log: called with one line per regeneration check (value, trigger average, phase, decision); None = silent.

    Raises:
        ValueError: ``regen_every_kimg`` set without ``evaluate``; a non-positive period; invalid ``lam``,
            ``min_keep`` or ``trigger``.
    """

    def __init__(self, *, lam: float = 5e-12, min_keep: float = 0.01, regen_every_kimg: float | None = None,
                 trigger: str = "paper", evaluate: Callable[[nn.Module], float] | None = None,
                 log_path: str | Path | None = None, log_kimg: float | None = None, window: int = 5,
                 metric: str = "fid", log: Callable[[str], None] | None = None) -> None:
        if not (lam >= 0 and math.isfinite(lam)):
            raise ValueError(f"sparsity regulariser lambda must be a finite number >= 0 (paper: 5e-12); got {lam}")
        if not 0.0 <= min_keep < 1.0:
            raise ValueError(f"min_keep must be in [0, 1) (a kept ratio; RG-GAN uses 0.01); got {min_keep}")
        for key, v in (("regen_every_kimg", regen_every_kimg), ("log_kimg", log_kimg)):
            if v is not None and not v > 0:
                raise ValueError(f"{key} must be > 0 kimg or None; got {v}")
        if regen_every_kimg is not None and evaluate is None:
            raise ValueError("regeneration without a metric configured: regen_every_kimg is set but no evaluate "
                             "function (G_ema -> FID) was given; pass evaluate=..., or regen_every_kimg=None to train "
                             "with dynamic pruning and recurrent regeneration only")
        self.lam, self.min_keep = float(lam), float(min_keep)
        self.regen_nimg, self.log_nimg = _nimg(regen_every_kimg), _nimg(log_kimg)
        self.evaluate = evaluate
        self.metric, self.log = str(metric), log
        self.trigger = RegenTrigger(trigger, window)
        self.log_path = Path(log_path) if log_path is not None else None
        self.events: list[dict] = []
        self.fids: list[dict] = []
        self._next_regen: int | None = None
        self._next_log: int | None = None
        self._loaded = False
        self._layers: tuple | None = None  # ((id(G), id(D)), {"G": [(name, DynamicMask)], "D": [...]})

    # -- wiring ---------------------------------------------------------------------------------------------------
    def wrap(self, objective: GANObjective) -> DynamicPruningObjective:
        """``objective`` plus the sparsity regulariser with this callback's ``lam``."""
        return DynamicPruningObjective(objective, self.lam)

    @property
    def dense(self) -> bool:
        """True in the dense phase of augmented regeneration."""
        return self.trigger.dense

    # -- state ----------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Plain-Python state for checkpoints: trigger (history, phase), events, FID records, next due points."""
        return {"trigger": self.trigger.state_dict(), "events": [dict(e) for e in self.events],
                "fids": [dict(f) for f in self.fids], "next_regen_nimg": self._next_regen,
                "next_log_nimg": self._next_log}

    def load_state_dict(self, sd: dict) -> None:
        """Restore from :meth:`state_dict`; the phase is applied to the networks at ``on_train_start``.

        Raises:
            ValueError: the trigger state is for another trigger mode or window.
        """
        self.trigger.load_state_dict(sd["trigger"])
        self.events = [dict(e) for e in sd.get("events", [])]
        self.fids = [dict(f) for f in sd.get("fids", [])]
        self._next_regen = sd.get("next_regen_nimg")
        self._next_log = sd.get("next_log_nimg")
        self._loaded = True

    def _truncate_log(self, cur_nimg: int) -> list[dict]:
        """Drop the log records written after ``cur_nimg`` (a run that went on past its last checkpoint)."""
        records = read_jsonl(self.log_path) if self.log_path is not None else []
        kept = [r for r in records if int(r.get("cur_nimg", 0)) <= cur_nimg]
        if len(kept) != len(records):
            write_text(self.log_path, "".join(json.dumps(r, default=str) + "\n" for r in kept))
        return kept

    def _restore_from_log(self, records: list[dict]) -> None:
        fids = [r for r in records if r.get("kind") == "fid"]
        if fids and "trigger" in fids[-1]:
            self.trigger.load_state_dict(fids[-1]["trigger"])
        self.fids = [{k: v for k, v in r.items() if k not in ("kind", "trigger")} for r in fids]
        self.events = [{k: v for k, v in r.items() if k != "kind"} for r in records if r.get("kind") == "event"]

    # -- logging --------------------------------------------------------------------------------------------------
    def _write(self, record: dict) -> None:
        if self.log_path is not None:
            append_jsonl(self.log_path, {**record, "timestamp": time.time()})

    @staticmethod
    def _where(trainer: Trainer) -> dict:
        s = trainer.state
        return {"kimg": round(s.kimg, 3), "cur_nimg": s.cur_nimg, "step": s.step}

    def _event(self, trainer: Trainer, event: str, **info) -> None:
        rec = {"event": event, **self._where(trainer), "phase": self.trigger.phase, **info}
        self.events.append(rec)
        self._write({"kind": "event", **rec})

    def _layer_lists(self, trainer: Trainer) -> dict[str, list]:
        s = trainer.state
        if self._layers is None or self._layers[0] != (id(s.G), id(s.D)):
            self._layers = ((id(s.G), id(s.D)), {key: [(name, dm) for name, _, dm in dynamic_layers(net)]
                                                 for key, net in (("G", s.G), ("D", s.D))})
        return self._layers[1]

    def _density_record(self, trainer: Trainer) -> None:
        rec = {"kind": "density", **self._where(trainer), "phase": self.trigger.phase}
        for key, layers in self._layer_lists(trainer).items():
            d = density_of(layers)
            rec[key] = {"density": d["density"], "kept": d["kept"], "total": d["total"],
                        "layers": {n: v["density"] for n, v in d["layers"].items()}, "threshold": d["threshold"]}
        self._write(rec)

    def _apply_phase(self, trainer: Trainer) -> None:
        s = trainer.state
        for net in (s.G, s.D, s.G_ema):
            set_dense(net, self.trigger.dense)

    # -- callback hooks -------------------------------------------------------------------------------------------
    def on_train_start(self, trainer: Trainer) -> None:
        s = trainer.state
        if not (is_dynamic(s.G) or is_dynamic(s.D)):
            raise ValueError("DynamicPruning needs networks with dynamic masks; build them with "
                             "create_model(..., pre_sn_hook=add_dynamic_masks)")
        if s.cur_nimg == 0 and not self._loaded and self.log_path is not None:
            self.log_path.unlink(missing_ok=True)
        elif s.cur_nimg > 0:
            records = self._truncate_log(s.cur_nimg)
            if not self._loaded:
                self._restore_from_log(records)
        self._apply_phase(trainer)
        if self.regen_nimg is not None and (self._next_regen is None or not self._loaded):
            self._next_regen = (s.cur_nimg // self.regen_nimg + 1) * self.regen_nimg
        if self.log_nimg is not None and (self._next_log is None or not self._loaded):
            self._next_log = (s.cur_nimg // self.log_nimg + 1) * self.log_nimg
        if s.cur_nimg == 0:
            modes = sorted({dm.threshold_grad for net in (s.G, s.D) for _, _, dm in dynamic_layers(net)})
            self._write({"kind": "config", "cur_nimg": 0, "kimg": 0.0, "lam": self.lam, "min_keep": self.min_keep,
                         "regen_every_kimg": None if self.regen_nimg is None else self.regen_nimg / 1000,
                         "trigger": self.trigger.mode, "window": self.trigger.window, "threshold_grad": modes,
                         "optimizer_G": _opt_summary(s.opt_G), "optimizer_D": _opt_summary(s.opt_D)})
            self._density_record(trainer)

    @torch.no_grad()
    def on_step_end(self, trainer: Trainer, stats: dict[str, float]) -> None:
        s = trainer.state
        for key, layers in self._layer_lists(trainer).items():
            if not layers:
                continue
            d = density_of(layers)
            if not self.trigger.dense:
                reset = [name for name, v in d["layers"].items() if v["density"] <= self.min_keep]
                if reset:
                    before = {name: d["layers"][name]["density"] for name in reset}
                    by_name = dict(layers)
                    for name in reset:
                        by_name[name].threshold.zero_()
                    self._event(trainer, "collapse_guard", net=key, layers=before)
                    d = density_of(layers)
            stats[f"density_{key}"] = d["density"]
            for stat in ("mean", "min", "max"):
                stats[f"thr_{stat}_{key}"] = d["threshold"][stat]
        stats["dense_phase"] = float(self.trigger.dense)

        if self._next_log is not None and s.cur_nimg >= self._next_log:
            self._density_record(trainer)
            self._next_log = (s.cur_nimg // self.log_nimg + 1) * self.log_nimg

        if self._next_regen is not None and s.cur_nimg >= self._next_regen:
            self._next_regen = (s.cur_nimg // self.regen_nimg + 1) * self.regen_nimg
            self.regenerate_check(trainer)

    def regenerate_check(self, trainer: Trainer) -> str:
        """Evaluate G_ema now, feed the trigger, switch phases if it says so; returns the decision."""
        s = trainer.state
        fid = float(self.evaluate(s.G_ema))
        window = self.trigger.history[-self.trigger.window:]
        decision = self.trigger.update(fid)
        rec = {**self._where(trainer), "fid": fid, "metric": self.metric, "average": self.trigger.last_average,
               "phase": self.trigger.phase, "decision": decision}
        if self.log is not None:
            avg = self.trigger.last_average
            self.log(f"[degan] RG-GAN check at kimg {s.kimg:.1f}: {self.metric} {fid:.4g}"
                     + (f" (trigger average {avg:.4g})" if avg is not None else "")
                     + f", {self.trigger.phase} phase" + (f" -> {decision}" if decision != "none" else ""))
        self.fids.append(rec)
        self._write({"kind": "fid", **rec, "trigger": self.trigger.state_dict()})
        if decision != "none":
            self._apply_phase(trainer)
            self._event(trainer, decision, fid=fid, average=self.trigger.last_average,
                        previous_fids=window, trigger=self.trigger.mode)
        return decision

    def on_train_end(self, trainer: Trainer) -> None:
        if self.log_path is not None:
            self._density_record(trainer)


def _opt_summary(opt: torch.optim.Optimizer) -> list[dict]:
    """Hyper-parameters of each param group (what the threshold speed depends on; SPEC §5)."""
    out = []
    for g in opt.param_groups:
        out.append({k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()
                    if k in ("name", "lr", "betas", "eps", "weight_decay")} | {"n_params": len(g["params"])})
    return out


# ---------------------------------------------------------------------------------------------------------------------
# optimizer state


def make_dynamic_state(G: nn.Module, D: nn.Module, *, lr_G: float, lr_D: float, betas: tuple[float, float],
                       eps: float = 1e-8, seed: int = 0, threshold_lr: float | None = None,
                       threshold_betas: tuple[float, float] | None = None,
                       threshold_eps: float | None = None) -> TrainState:
    """A fresh :class:`~degan.train.state.TrainState` whose Adam optimizers hold the thresholds in their own group.

    Like :func:`degan.train.state.make_state` (G_ema = a copy of G) but each optimizer gets
    :func:`degan.pruning.dynamic.param_groups` (weights; thresholds with weight decay 0).

    Args:
        G, D: networks with dynamic masks.
        lr_G, lr_D: learning rates of the weights.
        betas, eps: Adam settings of the weights (and of the thresholds unless overridden).
        seed: seed of the RNG streams.
        threshold_lr: learning rate of the thresholds of both networks; None = that network's lr.
        threshold_betas, threshold_eps: Adam settings of the threshold groups; None = as the weights.

    Returns:
        The state; its optimizers' param groups are named ``"weights"`` and ``"thresholds"``.
    """
    import copy

    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    betas = (float(betas[0]), float(betas[1]))

    def adam(net: nn.Module, lr: float) -> torch.optim.Adam:
        return torch.optim.Adam(param_groups(net, lr, threshold_lr, threshold_betas=threshold_betas,
                                             threshold_eps=threshold_eps), lr=lr, betas=betas, eps=eps)

    return TrainState(G=G, D=D, G_ema=G_ema, opt_G=adam(G, lr_G), opt_D=adam(D, lr_D),
                      generators=make_generators(seed))


# ---------------------------------------------------------------------------------------------------------------------
# exports


def _export(net: nn.Module, sparse: bool) -> OrderedDict[str, Tensor]:
    sd = net.state_dict()
    rename: dict[str, str | None] = {}
    replace: dict[str, Tensor] = {}
    for wname, module, dm in dynamic_layers(net):
        prefix = wname[: -len("weight")]
        base = f"{prefix}parametrizations.weight."
        plist = module.parametrizations.weight
        idx = next(i for i, p in enumerate(plist) if p is dm)
        w = plist.original.detach()
        w = w * dm.sparse_mask() if sparse else w.clone()
        pattern = re.compile(re.escape(base) + r"(\d+)\.(.*)$")
        for k in sd:
            m = pattern.match(k)
            if m is None:
                continue
            j = int(m.group(1))
            rename[k] = None if j == idx else (f"{base}{j - 1}.{m.group(2)}" if j > idx else k)
        if len(plist) == 1:
            rename[base + "original"] = prefix + "weight"
            replace[prefix + "weight"] = w
        else:
            replace[base + "original"] = w
    out: OrderedDict[str, Tensor] = OrderedDict()
    for k, v in sd.items():
        new = rename.get(k, k)
        if new is None:
            continue
        out[new] = replace.get(new, v).detach().clone()
    return out


@torch.no_grad()
def sparse_state_dict(net: nn.Module) -> OrderedDict[str, Tensor]:
    """Sparse_RG export (RG-GAN Table 5): weights with ``|W| <= t`` set to 0, masks and thresholds removed.

    The mask is ``S(|W| - t)`` from the current weights and thresholds, also in the dense phase. Other weight
    parametrizations (spectral norm) stay, re-indexed as in a network built without masks, so the result loads
    with ``strict=True`` into ``create_model(name, spectral_norm=..., **config)`` (no ``pre_sn_hook``); its spectral
    norm vectors ``u, v`` are those of the masked weight.

    Args:
        net: a network with dynamic masks (e.g. G_ema); not modified.

    Returns:
        A new ordered state dict of detached CPU-or-device tensors (copies).
    """
    return _export(net, sparse=True)


@torch.no_grad()
def dense_state_dict(net: nn.Module) -> OrderedDict[str, Tensor]:
    """Dense_RG export (RG-GAN Table 5): every weight as stored (pruned ones with their frozen values), masks and
    thresholds removed; loads into a network built without masks like :func:`sparse_state_dict`. Spectral-norm
    ``u, v`` are those of the masked weight and re-converge with the power iteration in training mode.
    """
    return _export(net, sparse=False)
