"""Path-length regularisation of G as StyleGAN2's lazy regularisation phase (technique ``pl``).

Source: Karras, Laine, Aittala, Hellsten, Lehtinen, Aila. *Analyzing and Improving the Image Quality of StyleGAN*.
CVPR 2020, arXiv:1912.04958: section 3.2 (Eq. 4: ``E_{w, y}(||J_w^T y||_2 - a)^2``, ``y`` an image of normal pixels,
``a`` the exponential moving average of the lengths), section 4 / Appendix B (lazy regularisation: the
regulariser runs every ``interval`` minibatches in its own optimizer step, its loss multiplied by ``interval``, and
Adam's hyperparameters of that network are scaled by ``c = interval / (interval + 1)``: ``lr * c``,
``beta ** c``, because the network now takes ``interval + 1`` optimizer steps per ``interval`` minibatches).
SPEC section 9: weight 2, decay 0.01 of the target length, on a batch shrunk by 2, every 4 G steps.

What one regularisation phase does (after the main G step of every ``interval``-th G step, counting from the
first one; :meth:`degan.train.loop.Trainer.train_step` runs it as a separate ``opt_G`` step)::

    z ~ N(0, I), batch_G // batch_shrink latents from the latent stream (then labels for a conditional G)
    lengths_n = ||J_w^T y||_2 / sqrt(num_ws)          degan.models.stylegan2.path_lengths (style mixing included)
    a <- a + decay * (mean_n lengths_n - a)           (a starts at 0; updated before the penalty)
    loss_G_reg = interval * weight * mean_n (lengths_n - a)^2

and, once when the stage is set up, every param group of ``opt_G`` gets ``lr * c`` and ``betas ** c`` (a resumed
run loads the already-scaled groups from its checkpoint).

Choices made here:

- The penalty runs in float32 with autocast disabled (it differentiates twice; R1 does the same); G's
  ``num_fp16_res`` blocks keep their own dtype.
- The lengths' random image ``y`` comes from the augmentation stream (``state.generators["augment"]``), the
  latents from the latent stream, so a run stays reproducible from its seed.
- The schedule follows ``TrainState.step`` (G steps done), so it survives a resume without a counter; the target
  length ``a`` and the last penalty are checkpointed in ``TrainState.extras["pl"]``.
- R1 (:mod:`degan.train.r1`) still adds its lazy term to the D loss of the same step (no separate D phase, no
  ``c`` correction of D's Adam).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ..losses import ObjectiveWrapper
from .technique import StageContext, Technique, register_technique

__all__ = ["PathLength", "PathLengthObjective", "PathLengthTechnique", "lazy_adam_scale"]


def lazy_adam_scale(opt: torch.optim.Optimizer, interval: int) -> float:
    """Scale an Adam optimizer for lazy regularisation (StyleGAN2 Appendix B): every param group gets
    ``lr * c`` and ``betas = (beta1 ** c, beta2 ** c)`` with ``c = interval / (interval + 1)``, in place.

    Returns:
        ``c``.

    Raises:
        ValueError: ``interval`` not an int >= 1.
    """
    if isinstance(interval, bool) or int(interval) != interval or interval < 1:
        raise ValueError(f"lazy regularisation interval must be an integer >= 1; got {interval!r}")
    c = interval / (interval + 1)
    for group in opt.param_groups:
        group["lr"] = group["lr"] * c
        b1, b2 = group["betas"]
        group["betas"] = (b1 ** c, b2 ** c)
    return c


class PathLength:
    """The path-length regulariser's settings and state.

    Args:
        weight: ``w_pl`` (StyleGAN2: 2); 0 = off.
        decay: EMA rate of the target length ``a`` per regularisation phase (StyleGAN2: 0.01).
        batch_shrink: the phase uses ``max(1, batch_G // batch_shrink)`` latents (StyleGAN2: 2).
        interval: a phase every this many G steps, loss multiplied by it (StyleGAN2: 4).

    Attributes:
        pl_mean: the target length ``a`` (0 before the first phase).
        last_penalty: the last ``mean (lengths - a)^2`` before the weight (None before the first phase).
        last_length: the last mean length (None before the first phase).

    Raises:
        ValueError: a weight that is negative or not finite, decay outside (0, 1], batch_shrink or interval not an
            int >= 1.
    """

    def __init__(self, weight: float = 2.0, decay: float = 0.01, batch_shrink: int = 2, interval: int = 4) -> None:
        if not (isinstance(weight, (int, float)) and math.isfinite(weight) and weight >= 0):
            raise ValueError(f"pl.weight must be a finite number >= 0 (StyleGAN2: 2; 0 = off); got {weight!r}")
        if not (isinstance(decay, (int, float)) and 0 < decay <= 1):
            raise ValueError(f"pl.decay must be in (0, 1] (StyleGAN2: 0.01); got {decay!r}")
        for name, v in (("batch_shrink", batch_shrink), ("interval", interval)):
            if isinstance(v, bool) or int(v) != v or v < 1:
                raise ValueError(f"pl.{name} must be an integer >= 1 (StyleGAN2: {2 if name == 'batch_shrink' else 4}); "
                                 f"got {v!r}")
        self.weight, self.decay = float(weight), float(decay)
        self.batch_shrink, self.interval = int(batch_shrink), int(interval)
        self.pl_mean = 0.0
        self.last_penalty: float | None = None
        self.last_length: float | None = None

    def due(self, step: int) -> bool:
        """Whether G step ``step`` (0-based) has a regularisation phase: steps 0, interval, 2 interval, ..."""
        return self.weight > 0 and step % self.interval == 0

    def batch(self, batch_G: int) -> int:
        """Latents of one phase: ``max(1, batch_G // batch_shrink)``."""
        return max(1, batch_G // self.batch_shrink)

    def wrap(self, objective: Any) -> "PathLengthObjective":
        """The objective with the lazy G phase (see :class:`PathLengthObjective`)."""
        return PathLengthObjective(objective, self)

    def state_dict(self) -> dict:
        return {"pl_mean": self.pl_mean, "last_penalty": self.last_penalty, "last_length": self.last_length,
                "weight": self.weight, "decay": self.decay, "batch_shrink": self.batch_shrink,
                "interval": self.interval}

    def load_state_dict(self, sd: dict) -> None:
        """Restore the target length and the last values (the settings stay those of the current config)."""
        self.pl_mean = float(sd["pl_mean"])
        self.last_penalty = None if sd.get("last_penalty") is None else float(sd["last_penalty"])
        self.last_length = None if sd.get("last_length") is None else float(sd["last_length"])


class PathLengthObjective(ObjectiveWrapper):
    """Adds StyleGAN2's lazy path-length phase of G to any objective.

    The training loop asks ``g_reg_batch(batch_G, step)`` after each main G step; a positive answer makes it draw
    that many latents (and labels) and take one ``opt_G`` step on :meth:`g_reg_loss`. ``d_loss`` and ``g_loss``
    are the wrapped objective's; ``g_loss`` adds the stats ``pl_penalty`` (last ``mean (lengths - a)^2``, 0 before
    the first) and ``pl_mean`` (the target length ``a``) so every record has them.

    Args:
        objective: the objective to extend.
        pl: the :class:`PathLength` state (checkpointed in ``TrainState.extras["pl"]``).
    """

    def __init__(self, objective: Any, pl: PathLength) -> None:
        super().__init__(objective)
        self.pl = pl

    def _stats(self) -> dict[str, float]:
        pl = self.pl
        return {"pl_penalty": pl.last_penalty or 0.0, "pl_mean": pl.pl_mean}

    def g_loss(self, G: nn.Module, D: nn.Module, z: Tensor, generator: torch.Generator | None = None,
               **kwargs: Any) -> tuple[Tensor, dict[str, float]]:
        loss, stats = self.objective.g_loss(G, D, z, generator, **kwargs)
        return loss, dict(stats, **self._stats())

    def g_reg_batch(self, batch_G: int, step: int) -> int:
        """Latents of the regularisation phase after G step ``step`` (0-based): ``batch_G // batch_shrink`` when
        due, else 0 (no phase)."""
        return self.pl.batch(batch_G) if self.pl.due(step) else 0

    def g_reg_loss(self, G: nn.Module, D: nn.Module, z: Tensor, generator: torch.Generator | None = None, *,
                   c: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
        """``interval * weight * mean_n (lengths_n - a)^2`` for latents z float ``[M, z_dim]`` (labels ``c``
        long ``[M]``); updates ``a`` first. Returns ``(loss, stats)`` with ``pl_penalty``, ``pl_mean``,
        ``pl_length``. ``D`` is unused.

        Raises:
            TypeError: ``G`` has no mapping network (no ``styles``; path lengths are taken w.r.t. w).
        """
        from ..models.stylegan2 import path_length_penalty, path_lengths

        if not hasattr(G, "styles"):
            raise TypeError(f"path-length regularisation needs a generator with a mapping network (StyleGAN2); "
                            f"got {type(G).__name__}")
        pl = self.pl
        lengths = path_lengths(G, z, c, generator)
        mean = float(lengths.detach().mean())
        pl.pl_mean = pl.pl_mean + pl.decay * (mean - pl.pl_mean)
        penalty = path_length_penalty(lengths, pl.pl_mean)
        pl.last_penalty, pl.last_length = float(penalty.detach()), mean
        return penalty * (pl.interval * pl.weight), dict(self._stats(), pl_length=mean)


class PathLengthTechnique(Technique):
    """The ``pl`` technique: the lazy path-length phase of G, ``opt_G`` scaled by ``c`` (see the module doc)."""

    name, order = "pl", 22

    def __init__(self, pl: PathLength) -> None:
        self.pl = pl

    def setup(self, state) -> None:
        state.extras["pl"] = self.pl
        lazy_adam_scale(state.opt_G, self.pl.interval)  # a resume then loads the saved (scaled) groups

    def wrap(self, objective, state):
        return self.pl.wrap(objective)

    def summary(self, state) -> dict:
        pl = self.pl
        return {"pl": {"weight": pl.weight, "decay": pl.decay, "batch_shrink": pl.batch_shrink,
                       "interval": pl.interval, "pl_mean": pl.pl_mean, "last_penalty": pl.last_penalty}}


@register_technique("pl")
def _pl(ctx: StageContext):
    cfg = ctx.cfg.pl
    if not cfg.weight > 0:
        return None
    return PathLengthTechnique(PathLength(cfg.weight, cfg.decay, cfg.batch_shrink, cfg.interval))
