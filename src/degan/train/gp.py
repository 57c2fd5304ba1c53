"""WGAN-GP: the gradient penalty and the drift term on D, as an objective wrapper and the ``gp`` technique.

Sources: Gulrajani, Ahmed, Arjovsky, Dumoulin, Courville. *Improved Training of Wasserstein GANs*. NeurIPS 2017,
arXiv:1704.00028 (Algorithm 1: ``x_hat = eps x + (1 - eps) G(z)``, eps ~ U[0, 1] per sample, penalty
``lambda E[(||grad_x_hat D(x_hat)||_2 - 1)^2]``, lambda = 10); the drift term ``eps_drift E_x[D(x)^2]`` with
eps_drift = 0.001 that keeps D's output near 0 is from Karras et al. *Progressive Growing of GANs*, ICLR 2018,
arXiv:1710.10196, Appendix A.1 (SPEC.md section 9).

The adversarial part is the registered loss ``wgangp`` (or ``wgan``): ``f_D(u) = f_G(u) = u``, i.e.
``L_D = E[D(G(z))] - E[D(x)]``, ``L_G = -E[D(G(z))]`` (:mod:`degan.losses`). With ``train.loss=wgangp`` the stage
runner adds this module's penalty (technique ``gp``, weights ``gp.weight`` and ``gp.drift``)::

    loss_D += weight * E_n[(||grad D(x_hat_n)||_2 - 1)^2] + drift * E_n[D(x_n)^2]

Choices made here:

- ``x`` and ``G(z)`` are the images D scored in this step, *after* augmentation (the wrapped objective's
  ``last_d_pass``), so the penalty constrains D on the inputs it sees; eps is drawn from the step's augmentation
  generator (checkpointed, so a resume continues bit-identically).
- The norm is over C, H, W per sample; the penalty is computed in float32 with autocast off (as R1).
- Conditional D: ``x_hat`` is scored with the labels of the reals.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ..losses import ObjectiveWrapper
from .technique import StageContext, Technique, register_technique

__all__ = ["GradientPenaltyObjective", "GradientPenaltyTechnique", "gradient_penalty"]

ORDER = 15  # objective wrapping order: after LeCam (10), before R1 (20)


def gradient_penalty(D: nn.Module, real: Tensor, fake: Tensor, eps: Tensor, c: Tensor | None = None,
                     target: float = 1.0, create_graph: bool = True) -> Tensor:
    """``E_n[(||grad_x D(x_hat)_n||_2 - target)^2]`` at ``x_hat = eps * real + (1 - eps) * fake``.

    Args:
        D: the discriminator, ``D(x)`` (or ``D(x, c)``) -> float ``[N]``.
        real, fake: float ``[N, C, H, W]`` (detached here).
        eps: float ``[N, 1, 1, 1]`` (or broadcastable) interpolation weights in [0, 1].
        c: long ``[N]`` labels for a conditional D, or None.
        target: the norm the penalty pulls to (1 in WGAN-GP).
        create_graph: keep the gradient's graph so the penalty trains D; False for a measurement.

    Returns:
        Scalar float32 tensor >= 0.

    Raises:
        ValueError: ``real`` and ``fake`` differ in shape.
    """
    if real.shape != fake.shape:
        raise ValueError(f"real and fake must have the same shape; got {tuple(real.shape)} and {tuple(fake.shape)}")
    with torch.autocast(device_type=real.device.type, enabled=False):
        eps = eps.to(device=real.device, dtype=torch.float32)
        x_hat = torch.lerp(fake.detach().float(), real.detach().float(), eps).requires_grad_(True)
        logits = D(x_hat) if c is None else D(x_hat, c)
        (grad,) = torch.autograd.grad(logits.float().sum(), x_hat, create_graph=create_graph)
        norm = grad.flatten(1).norm(dim=1)
        return (norm - target).square().mean()


class GradientPenaltyObjective(ObjectiveWrapper):
    """Adds ``weight * GP + drift * E[D(x)^2]`` to the D loss of any objective that records ``last_d_pass``.

    Stats added to every D step: ``gp_penalty`` (GP before the weight), ``drift`` (``E[D(x)^2]`` before its weight).

    Args:
        objective: the objective to extend.
        weight: lambda >= 0 (10).
        drift: eps_drift >= 0 (0.001).

    Raises:
        ValueError: a negative or non-finite weight.
        RuntimeError: (in ``d_loss``) the wrapped objective did not record its D pass.
    """

    def __init__(self, objective: Any, weight: float = 10.0, drift: float = 0.001) -> None:
        super().__init__(objective)
        for name, v in (("weight", weight), ("drift", drift)):
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"gp.{name} must be a finite number >= 0; got {v!r}")
        self.weight, self.drift = float(weight), float(drift)

    def d_loss(self, G: nn.Module, D: nn.Module, real: Tensor, z: Tensor,
               generator: torch.Generator | None = None, **kwargs: Any) -> tuple[Tensor, dict[str, float]]:
        loss, stats = self.objective.d_loss(G, D, real, z, generator, **kwargs)
        p = self.objective.last_d_pass
        if p is None:
            raise RuntimeError("the wrapped objective did not record its D pass; the gradient penalty needs "
                               "last_d_pass")
        x, fake = p["real"], p["fake"]
        n = min(x.shape[0], fake.shape[0])
        device = generator.device if generator is not None else x.device
        eps = torch.rand(n, 1, 1, 1, generator=generator, device=device)
        c = p.get("real_c")
        gp = gradient_penalty(D, x[:n], fake[:n], eps, None if c is None else c[:n])
        drift = p["real_logits"].float().square().mean()
        stats = dict(stats, gp_penalty=float(gp.detach()), drift=float(drift.detach()))
        return loss + self.weight * gp + self.drift * drift, stats


class GradientPenaltyTechnique(Technique):
    """The ``gp`` technique: wraps the objective with :class:`GradientPenaltyObjective` when ``train.loss`` is
    ``wgangp``."""

    name, order = "gp", ORDER

    def __init__(self, weight: float, drift: float) -> None:
        self.weight, self.drift = weight, drift

    def wrap(self, objective, state):
        return GradientPenaltyObjective(objective, self.weight, self.drift)

    def summary(self, state) -> dict:
        return {"wgangp": {"weight": self.weight, "drift": self.drift}}


@register_technique("gp")
def _gp(ctx: StageContext):
    if ctx.cfg.train.loss != "wgangp":
        return None
    return GradientPenaltyTechnique(ctx.cfg.gp.weight, ctx.cfg.gp.drift)
