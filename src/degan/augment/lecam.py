"""LeCam regularisation of the discriminator, as an objective wrapper with checkpointed EMA state.

Source: Tseng, Jiang, Liu, Yang, Yang. *Regularizing Generative Adversarial Networks under Limited Data*.
CVPR 2021, arXiv:2104.03310 (Eq. 3). Written from the paper and issue #9, not from the reference code.

With ``alpha_R`` and ``alpha_F`` exponential moving averages (decay 0.99) of D's mean output on reals and on fakes,

    R_LC = E_x[relu(D(x) - alpha_F)^2] + E_z[relu(alpha_R - D(G(z)))^2]

is added to the D loss with weight lambda (default 0.3) once ``start_step`` G steps are done. The EMAs are updated
at every D step (before the penalty of that step is computed, so the current batch counts), from D's logits on the
very images the D loss used (augmented when ADA or DiffAugment is on), read from the wrapped objective's
``last_d_pass``. They start at 0 and are bias-corrected like Adam's moments (``ema / (1 - decay^t)``), i.e. the
zero-debiased moving average of the TensorFlow reference; after the first step they equal that step's means.
The G loss is unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from degan.losses import ObjectiveWrapper

__all__ = ["LeCam", "LeCamObjective", "lecam_penalty"]


def lecam_penalty(real_logits: Tensor, fake_logits: Tensor, alpha_R: float, alpha_F: float) -> Tensor:
    """``mean(relu(real_logits - alpha_F)^2) + mean(relu(alpha_R - fake_logits)^2)``.

    Args:
        real_logits: D's logits on (augmented) reals, float [N] or [N, 1], with gradient.
        fake_logits: D's logits on (augmented, detached) fakes, float [M] or [M, 1], with gradient.
        alpha_R: EMA of D's mean output on reals (a constant).
        alpha_F: EMA of D's mean output on fakes (a constant).

    Returns:
        Scalar tensor >= 0.
    """
    return F.relu(real_logits - alpha_F).pow(2).mean() + F.relu(alpha_R - fake_logits).pow(2).mean()


class LeCam:
    """The LeCam regulariser's settings and state: the two EMAs, the update count.

    Args:
        weight: lambda >= 0 (paper and issue #9: 0.3).
        decay: EMA decay in [0, 1) (0.99).
        start_step: the penalty is applied once this many G steps are done (``step_fn() >= start_step``; with no
            ``step_fn`` the count of D steps seen); the EMAs are updated from the first D step on. >= 0 (1000).

    Attributes:
        alpha_R, alpha_F: the bias-corrected EMAs (None before the first update).
        updates: D steps seen.

    Raises:
        ValueError: weight negative or not finite, decay outside [0, 1), start_step negative.
    """

    def __init__(self, weight: float = 0.3, decay: float = 0.99, start_step: int = 1000) -> None:
        if not (weight >= 0) or not math.isfinite(weight):
            raise ValueError(f"LeCam weight must be a finite number >= 0 (paper 0.3), got {weight}")
        if not (0.0 <= decay < 1.0):
            raise ValueError(f"LeCam EMA decay must be in [0, 1) (paper 0.99), got {decay}")
        if int(start_step) != start_step or start_step < 0:
            raise ValueError(f"LeCam start_step must be an integer >= 0 (G steps before it applies), got {start_step}")
        self.weight, self.decay, self.start_step = float(weight), float(decay), int(start_step)
        self._real, self._fake = 0.0, 0.0  # biased EMAs (start at 0)
        self.updates = 0

    @property
    def alpha_R(self) -> float | None:
        return None if self.updates == 0 else self._real / (1.0 - self.decay ** self.updates)

    @property
    def alpha_F(self) -> float | None:
        return None if self.updates == 0 else self._fake / (1.0 - self.decay ** self.updates)

    def update(self, real_logits: Tensor, fake_logits: Tensor) -> None:
        """One D step: move both EMAs towards this step's mean logits (detached)."""
        from ..train.distributed import all_reduce_mean

        # DDP: the means over all ranks' batches (equal per-rank batches), so every rank holds the same EMAs
        r, f = all_reduce_mean([float(real_logits.detach().float().mean()), float(fake_logits.detach().float().mean())])
        self._real = self.decay * self._real + (1.0 - self.decay) * r
        self._fake = self.decay * self._fake + (1.0 - self.decay) * f
        self.updates += 1

    def penalty(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        """R_LC of these logits against the current EMAs (see :func:`lecam_penalty`).

        Raises:
            RuntimeError: no update yet (the EMAs are undefined).
        """
        if self.updates == 0:
            raise RuntimeError("LeCam.penalty before any update: call update() with this D step's logits first")
        return lecam_penalty(real_logits, fake_logits, self.alpha_R, self.alpha_F)

    def wrap(self, objective: Any, step_fn: Callable[[], int] | None = None) -> LeCamObjective:
        """The objective with ``weight * R_LC`` added to its D loss (see :class:`LeCamObjective`)."""
        return LeCamObjective(objective, self, step_fn)

    def state_dict(self) -> dict:
        """Plain values: the biased EMAs, the update count and the settings."""
        return {"ema_real": self._real, "ema_fake": self._fake, "updates": self.updates, "weight": self.weight,
                "decay": self.decay, "start_step": self.start_step}

    def load_state_dict(self, sd: dict) -> None:
        """Restore the EMAs and the update count (the settings stay those of the current config)."""
        self._real, self._fake, self.updates = float(sd["ema_real"]), float(sd["ema_fake"]), int(sd["updates"])


class LeCamObjective(ObjectiveWrapper):
    """Adds ``weight * R_LC`` to the D loss of any objective that records ``last_d_pass`` (every degan objective).

    Stats added to the D step: ``lecam_alpha_R``, ``lecam_alpha_F``, ``loss_LeCam`` (R_LC before the weight, logged
    from the first step on) and ``lecam_on`` (1.0 once it is added to the loss, else 0.0). ``loss_D`` stays the
    adversarial loss. The G loss is delegated unchanged, as is every other attribute.

    Args:
        objective: the objective to extend.
        lecam: the :class:`LeCam` state (kept in ``TrainState.extras`` for checkpoints).
        step_fn: returns the number of G steps done (``lambda: state.step``); None = count D steps instead.
    """

    def __init__(self, objective: Any, lecam: LeCam, step_fn: Callable[[], int] | None = None) -> None:
        super().__init__(objective)
        self.lecam, self.step_fn = lecam, step_fn

    def d_loss(self, G: nn.Module, D: nn.Module, real: Tensor, z: Tensor,
               generator: torch.Generator | None = None, **kwargs) -> tuple[Tensor, dict[str, float]]:
        loss, stats = self.objective.d_loss(G, D, real, z, generator, **kwargs)
        p = self.objective.last_d_pass
        if p is None:
            raise RuntimeError("the wrapped objective did not record its D pass; LeCam needs last_d_pass")
        lc = self.lecam
        lc.update(p["real_logits"], p["fake_logits"])
        step = self.step_fn() if self.step_fn is not None else lc.updates - 1
        stats = dict(stats, lecam_alpha_R=lc.alpha_R, lecam_alpha_F=lc.alpha_F)
        if lc.weight > 0 and step >= lc.start_step:
            reg = lc.penalty(p["real_logits"], p["fake_logits"])
            loss = loss + lc.weight * reg
        else:  # not applied yet: still logged, so the curve (and its average over a log period) is complete
            with torch.no_grad():
                reg = lc.penalty(p["real_logits"], p["fake_logits"])
        stats["loss_LeCam"] = float(reg.detach())
        stats["lecam_on"] = float(lc.weight > 0 and step >= lc.start_step)
        return loss, stats
