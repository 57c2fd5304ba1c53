"""GAN losses as pure functions of D's logits, and the objective that the training loop calls.

SPEC §1: ``L_D = E_x[f_D(-D(x))] + E_z[f_D(D(G(z)))]``, ``L_G = E_z[f_G(-D(G(z)))]``, both minimised;
hinge: ``f_D(u) = max(0, 1 + u)``, ``f_G(u) = u`` (Lim & Ye 2017; Miyato et al. 2018);
non-saturating: ``f_D = f_G = softplus`` (Goodfellow et al. 2014).
Augmentation (DiffAugment, SPEC §2) acts inside these losses: the same policy on reals and fakes in the D step and
on fakes in the G step, with gradients flowing through it to G.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .registry import Registry

LOSSES: Registry = Registry("loss")


@dataclass(frozen=True)
class AdversarialLoss:
    """A pair of outer functions ``f_D``, ``f_G`` of SPEC §1."""

    name: str
    f_D: Callable[[Tensor], Tensor]
    f_G: Callable[[Tensor], Tensor]

    def d_loss(self, real_logits: Tensor, fake_logits: Tensor) -> tuple[Tensor, Tensor]:
        """D loss terms ``(E[f_D(-D(x))], E[f_D(D(G(z)))])`` for logits of shape [N]."""
        return self.f_D(-real_logits).mean(), self.f_D(fake_logits).mean()

    def g_loss(self, fake_logits: Tensor) -> Tensor:
        """G loss ``E[f_G(-D(G(z)))]`` for logits of shape [N]."""
        return self.f_G(-fake_logits).mean()


LOSSES.register("hinge")(AdversarialLoss("hinge", lambda u: F.relu(1.0 + u), lambda u: u))
LOSSES.register("nonsaturating")(AdversarialLoss("nonsaturating", F.softplus, F.softplus))


class GANObjective:
    """What one D step and one G step minimise: adversarial loss with augmentation inside.

    New techniques (AdvAug, distillation, R1, LeCam) extend this object, never the training loop.

    Args:
        loss: a registered loss name (``hinge`` | ``nonsaturating``).
        augment: callable ``aug(x, generator=None) -> x`` on float NCHW images in [-1, 1], or None.

    Raises:
        ValueError: unknown loss name.
    """

    def __init__(self, loss: str = "hinge", augment: Callable | None = None) -> None:
        self.loss: AdversarialLoss = LOSSES.get(loss)
        self.augment = augment

    def _aug(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        return self.augment(x, generator=generator) if self.augment is not None else x

    def d_loss(self, G: nn.Module, D: nn.Module, real: Tensor, z: Tensor,
               generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
        """D loss on a real batch (float [N, C, H, W] in [-1, 1]) and latents z (float [M, z_dim]).

        Returns:
            ``(loss, stats)``; stats holds the two loss terms and the mean logits, as floats.
        """
        with torch.no_grad():
            fake = G(z)
        real_logits = D(self._aug(real, generator))
        fake_logits = D(self._aug(fake, generator))
        l_real, l_fake = self.loss.d_loss(real_logits, fake_logits)
        loss = l_real + l_fake
        stats = {
            "loss_D": float(loss.detach()),
            "D_real": float(real_logits.detach().mean()),
            "D_fake": float(fake_logits.detach().mean()),
            "r_t": float(torch.sign(real_logits.detach()).mean()),
        }
        return loss, stats

    def g_loss(self, G: nn.Module, D: nn.Module, z: Tensor,
               generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
        """G loss for latents z (float [M, z_dim]); gradients flow through the augmentation into G."""
        fake_logits = D(self._aug(G(z), generator))
        loss = self.loss.g_loss(fake_logits)
        return loss, {"loss_G": float(loss.detach())}
