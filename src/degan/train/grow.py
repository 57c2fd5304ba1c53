"""Progressive growing with fade-in (ProGAN) as a schedule the one training loop drives: a callback that sets the
growth level of G, D and G_ema from ``cur_nimg``, and an objective wrapper that shows D the reals the way G's output
looks at that level. The ``grow`` technique wires both for every model that declares it (``progan``).

Source: Karras, Aila, Laine, Lehtinen. *Progressive Growing of GANs for Improved Quality, Stability, and Variation*.
ICLR 2018, arXiv:1710.10196, section 3 and Appendix A.1: training starts at 4x4; each new resolution is first faded
in, its weight alpha rising linearly from 0 to 1 over 600k real images, and then trained stable for 600k more; the
reals are down-sampled to the current resolution and blended between the two resolutions with the same alpha
(SPEC.md section 9).

The schedule (:class:`GrowthSchedule`) is a pure function of the number of real images shown to D, ``cur_nimg``::

    phase 0:        resolution s0 (start_resolution), stable,  stable_kimg
    then per r in 2 s0, 4 s0, ..., R:   fade (alpha = elapsed / fade_kimg, 0 -> 1), fade_kimg
                                        stable (alpha = 1),                          stable_kimg
    after the last phase: (R, 1) for the rest of training

so a resumed run continues with exactly the level and alpha it stopped at; the level also lives in the networks'
buffers (``grow_resolution``, ``grow_alpha``), which checkpoints and G_ema files carry. ``--kimg`` shorter than the
schedule ends training mid-growth: G_ema then generates at the level reached (up-sampled to R), and the evaluation
measures that.

Timing: the level used by an iteration is the one for ``cur_nimg`` at its start (``alpha`` steps once per iteration,
by ``n_dis * batch_D / fade_nimg``); the stats record ``grow_resolution`` / ``grow_alpha`` of each iteration.

Which reals: the wrapper (:class:`ProgressiveRealsObjective`, outermost but precision) passes
``progressive_view(real, r, alpha)`` to everything inside it, so DiffAugment / ADA, R1, the gradient penalty,
LeCam, the reconstruction term and AdvAug all see the faded reals. So does the D overfitting monitor: it scores
the training and held-out reals through the same view at D's current level.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..losses import ObjectiveWrapper
from .loop import Callback
from .technique import StageContext, Technique, register_technique

__all__ = ["GrowthSchedule", "ProgressiveGrowing", "ProgressiveRealsObjective", "GrowTechnique", "declares_growth",
           "growable"]

ORDER = 95  # objective wrapping order: outside every term (the reals they see are faded), inside precision (100)
CALLBACK_ORDER = 15  # after RG-GAN (10), before the stats logger (50) and the snapshot (90)


def growable(net: nn.Module) -> bool:
    """Whether ``net`` has a growth level: ``set_growth(resolution, alpha)``, ``growth`` and ``levels``."""
    return callable(getattr(net, "set_growth", None)) and hasattr(net, "growth") and hasattr(net, "levels")


@dataclass(frozen=True)
class GrowthSchedule:
    """Resolution and fade-in weight as a function of the real images shown to D.

    Attributes:
        start_resolution: s0, the first level (paper 4), a power of two >= 4 and <= ``final_resolution``.
        final_resolution: R.
        fade_kimg: thousands of real images over which each new level fades in (paper 600); 0 = switch at once.
        stable_kimg: thousands of real images each level trains with alpha = 1 (paper 600), > 0.

    Raises:
        ValueError: (on construction) resolutions not powers of two with ``4 <= s0 <= R``, negative or non-finite
            ``fade_kimg``, ``stable_kimg <= 0``.
    """

    start_resolution: int
    final_resolution: int
    fade_kimg: float = 600.0
    stable_kimg: float = 600.0

    def __post_init__(self) -> None:
        s0, R = int(self.start_resolution), int(self.final_resolution)
        for name, r in (("start_resolution", s0), ("final_resolution", R)):
            if r < 4 or r & (r - 1):
                raise ValueError(f"grow.{name} must be a power of two >= 4; got {r}")
        if s0 > R:
            raise ValueError(f"grow.start_resolution={s0} is above the model's resolution {R}; choose 4..{R}")
        if not (float(self.fade_kimg) >= 0 and float(self.fade_kimg) < float("inf")):
            raise ValueError(f"grow.fade_kimg must be >= 0 (paper 600); got {self.fade_kimg}")
        if not (float(self.stable_kimg) > 0 and float(self.stable_kimg) < float("inf")):
            raise ValueError(f"grow.stable_kimg must be > 0 (paper 600); got {self.stable_kimg}")

    def phases(self) -> list[tuple[str, int, int, int]]:
        """``(kind, resolution, start_nimg, end_nimg)`` per phase, ``kind`` in ``stable`` | ``fade``; the first phase
        is the stable ``start_resolution`` one and the last the stable R one."""
        fade, stable = int(round(self.fade_kimg * 1000)), int(round(self.stable_kimg * 1000))
        out, t, r = [("stable", int(self.start_resolution), 0, stable)], stable, int(self.start_resolution)
        while r < self.final_resolution:
            r *= 2
            if fade > 0:
                out.append(("fade", r, t, t + fade))
                t += fade
            out.append(("stable", r, t, t + stable))
            t += stable
        return out

    @property
    def total_kimg(self) -> float:
        """Thousands of real images until the last phase ends (the paper's 256 px schedule: 7800)."""
        return self.phases()[-1][3] / 1000.0

    def at(self, cur_nimg: int) -> tuple[int, float]:
        """The level ``(resolution, alpha)`` after ``cur_nimg`` real images: alpha in [0, 1), rising linearly, inside
        a fade; 1.0 elsewhere; ``(R, 1.0)`` once the schedule is over."""
        for kind, r, start, end in self.phases():
            if cur_nimg < end:
                return (r, (cur_nimg - start) / (end - start)) if kind == "fade" else (r, 1.0)
        return int(self.final_resolution), 1.0


class ProgressiveGrowing(Callback):
    """Loop callback: before the first iteration and after every one, set the growth level of ``schedule.at(
    cur_nimg)`` on the state's G, D and G_ema (so a resume continues where it stopped); record in the iteration's
    stats the level it ran at (``grow_resolution``, ``grow_alpha``).

    Args:
        schedule: the :class:`GrowthSchedule`.
        log: ``print``-like function told of each new phase (None = silent).
    """

    def __init__(self, schedule: GrowthSchedule, log=None) -> None:
        self.schedule, self.log = schedule, log
        self.current: tuple[int, float] | None = None

    def apply(self, state: Any) -> tuple[int, float]:
        """Set the level for ``state.cur_nimg`` on G, D and G_ema; return it."""
        res, alpha = self.schedule.at(state.cur_nimg)
        for net in (state.G, state.D, state.G_ema):
            net.set_growth(res, alpha)
        if self.log is not None and (self.current is None or self.current[0] != res
                                     or (self.current[1] < 1.0) != (alpha < 1.0)):
            what = "fading in" if alpha < 1.0 else "stable at"
            self.log(f"[degan] progressive growing: {what} {res}x{res} (alpha {alpha:.3f}) at kimg "
                     f"{state.cur_nimg / 1000:.1f}")
        self.current = (res, alpha)
        return res, alpha

    def on_train_start(self, trainer) -> None:
        self.apply(trainer.state)

    def on_step_end(self, trainer, stats: dict[str, float]) -> None:
        if self.current is not None:
            stats["grow_resolution"], stats["grow_alpha"] = float(self.current[0]), float(self.current[1])
        self.apply(trainer.state)

    def state_dict(self) -> dict:
        """The schedule's settings (the level itself follows from ``cur_nimg`` and is in the networks' buffers)."""
        s = self.schedule
        return {"start_resolution": s.start_resolution, "final_resolution": s.final_resolution,
                "fade_kimg": s.fade_kimg, "stable_kimg": s.stable_kimg}

    def load_state_dict(self, sd: dict) -> None:
        """Nothing to restore: the schedule is the config's (part of the run hash), the level a function of
        ``cur_nimg``."""


class ProgressiveRealsObjective(ObjectiveWrapper):
    """Shows D the reals at D's current growth level: ``d_loss`` passes ``progressive_view(real, *D.growth)`` (see
    :func:`degan.models.progan.progressive_view`) to the wrapped objective; the G loss is unchanged.

    Args:
        objective: any objective (a :class:`~degan.losses.GANObjective` or a wrapper).
    """

    def d_loss(self, G: nn.Module, D: nn.Module, real: Tensor, z: Tensor,
               generator: torch.Generator | None = None, **kwargs: Any) -> tuple[Tensor, dict[str, float]]:
        from ..models.progan import progressive_view

        res, alpha = D.growth
        return self.objective.d_loss(G, D, progressive_view(real, res, alpha), z, generator, **kwargs)


class GrowTechnique(Technique):
    """The ``grow`` technique: the :class:`ProgressiveGrowing` callback and the :class:`ProgressiveRealsObjective`
    wrapper, for models that declare ``grow`` (``progan``) while ``grow.enabled``."""

    name, order, callback_order = "grow", ORDER, CALLBACK_ORDER

    def __init__(self, schedule: GrowthSchedule, log=None) -> None:
        self.cb = ProgressiveGrowing(schedule, log)

    def setup(self, state) -> None:
        for which in ("G", "D", "G_ema"):
            if not growable(getattr(state, which)):
                raise ValueError(f"the grow technique needs networks with a growth level; {which} has none")
        state.extras["grow"] = self.cb

    def callbacks(self, state) -> list:
        return [self.cb]

    def wrap(self, objective, state):
        return ProgressiveRealsObjective(objective)

    def summary(self, state) -> dict:
        res, alpha = state.G_ema.growth
        return {"grow": {**self.cb.state_dict(), "schedule_kimg": self.cb.schedule.total_kimg,
                         "final_level": {"resolution": res, "alpha": alpha}}}


def declares_growth(model_name: str) -> bool:
    """Whether the registered model ``model_name`` declares the ``grow`` term (its builder's ``objective_terms``)."""
    from ..models import MODELS

    return model_name in MODELS and "grow" in getattr(MODELS.get(model_name), "objective_terms", ())


def schedule_from_config(cfg) -> GrowthSchedule:
    """The :class:`GrowthSchedule` of a run config (``grow.*`` and ``data.resolution``).

    Raises:
        ValueError: invalid ``grow.*`` values (see :class:`GrowthSchedule`).
    """
    g = cfg.grow
    return GrowthSchedule(g.start_resolution, cfg.data.resolution, g.fade_kimg, g.stable_kimg)


@register_technique("grow")
def _grow(ctx: StageContext):
    if not ctx.cfg.grow.enabled or not declares_growth(ctx.cfg.model.name):
        return None
    from . import distributed as ddp

    return GrowTechnique(schedule_from_config(ctx.cfg), log=ctx.exp.log if ddp.is_main() else None)
