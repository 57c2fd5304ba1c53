"""GAN losses as pure functions of D's logits, and the objective that the training loop calls.

SPEC §1: ``L_D = E_x[f_D(-D(x))] + E_z[f_D(D(G(z)))]``, ``L_G = E_z[f_G(-D(G(z)))]``, both minimised;
hinge: ``f_D(u) = max(0, 1 + u)``, ``f_G(u) = u`` (Lim & Ye 2017; Miyato et al. 2018);
non-saturating: ``f_D = f_G = softplus`` (Goodfellow et al. 2014); Wasserstein (``wgan``, ``wgangp``):
``f_D(u) = f_G(u) = u`` (Arjovsky et al. 2017; the penalty of WGAN-GP is :mod:`degan.train.gp`).
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
# Wasserstein loss (Arjovsky et al. 2017): f_D(u) = f_G(u) = u, so L_D = E[D(G(z))] - E[D(x)], L_G = -E[D(G(z))].
# `wgangp` is the same pair; with it the stage runner adds the gradient penalty and drift term (degan.train.gp,
# technique `gp`); in Python, wrap the objective with degan.train.gp.GradientPenaltyObjective.
LOSSES.register("wgan")(AdversarialLoss("wgan", lambda u: u, lambda u: u))
LOSSES.register("wgangp")(AdversarialLoss("wgangp", lambda u: u, lambda u: u))


def call_net(net: nn.Module, x: Tensor, c: Tensor | None = None) -> Tensor:
    """``net(x)`` when ``c`` is None, else ``net(x, c)``: G(z, c) / D(x, c) of a conditional GAN, and unconditional
    networks (or plain callables) that take no label argument keep working."""
    return net(x) if c is None else net(x, c)


class GANObjective:
    """What one D step and one G step minimise: adversarial loss with augmentation inside.

    New techniques (AdvAug, distillation, R1, LeCam) extend this object, never the training loop.

    Args:
        loss: a registered loss name (``hinge`` | ``nonsaturating`` | ``wgan`` | ``wgangp``; the WGAN-GP penalty is
            added by :class:`degan.train.gp.GradientPenaltyObjective`).
        augment: callable ``aug(x, generator=None) -> x`` on float NCHW images in [-1, 1], or None.

    Raises:
        ValueError: unknown loss name.
    """

    def __init__(self, loss: str = "hinge", augment: Callable | None = None) -> None:
        self.loss: AdversarialLoss = LOSSES.get(loss)
        self.augment = augment
        self.last_d_pass: dict[str, Tensor] | None = None
        """D's inputs (after augmentation) and clean logits of the last :meth:`d_loss`, for distillation terms."""

    def _aug(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        return self.augment(x, generator=generator) if self.augment is not None else x

    def d_loss(self, G: nn.Module, D: nn.Module, real: Tensor, z: Tensor,
               generator: torch.Generator | None = None, *,
               c: tuple[Tensor | None, Tensor | None] | None = None) -> tuple[Tensor, dict[str, float]]:
        """D loss on a real batch (float [N, C, H, W] in [-1, 1]) and latents z (float [M, z_dim]).

        Args:
            c: class labels of a conditional GAN as ``(real_c, gen_c)``: long [N] labels of the reals (passed to
                D with them) and long [M] labels of the fakes (passed to G and to D with the fakes); None for an
                unconditional GAN (G and D are then called without labels). Augmentation acts on images only.

        Returns:
            ``(loss, stats)``; stats holds the two loss terms and the mean logits, as floats.
        """
        real_c, gen_c = (None, None) if c is None else c
        with torch.no_grad():
            fake = call_net(G, z, gen_c)
        real_aug, fake_aug = self._aug(real, generator), self._aug(fake, generator)
        real_logits, fake_logits = call_net(D, real_aug, real_c), call_net(D, fake_aug, gen_c)
        self.last_d_pass = {"real": real_aug, "fake": fake_aug, "real_logits": real_logits,
                            "fake_logits": fake_logits, "real_c": real_c, "fake_c": gen_c}
        l_real, l_fake = self.loss.d_loss(real_logits, fake_logits)
        loss = l_real + l_fake
        stats = {
            "loss_D": float(loss.detach()),
            "D_real": float(real_logits.detach().mean()),
            "D_fake": float(fake_logits.detach().mean()),
            "r_t": float(torch.sign(real_logits.detach()).mean()),
        }
        return loss, stats

    def g_loss(self, G: nn.Module, D: nn.Module, z: Tensor, generator: torch.Generator | None = None, *,
               c: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
        """G loss for latents z (float [M, z_dim]); gradients flow through the augmentation into G.

        Args:
            c: long [M] class labels of the fakes (passed to G and D) for a conditional GAN, else None.
        """
        fake_logits = call_net(D, self._aug(call_net(G, z, c), generator), c)
        loss = self.loss.g_loss(fake_logits)
        return loss, {"loss_G": float(loss.detach())}


def kd_loss(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """Distillation loss of GAN-LTH's IMP_GD^KD (SPEC §3): ``KL(p_teacher || p_student)``, mean over elements.

    Each logit ``s`` becomes the two-class distribution ``p = [sigmoid(s), 1 - sigmoid(s)]``; the loss is
    ``mean_{i, c} p_t[i, c] * (log p_t[i, c] - log p_s[i, c])`` over the N samples and the 2 classes (PyTorch's
    ``kl_div(reduction="mean")``, i.e. half the per-sample KL averaged over samples).

    Args:
        student_logits: float [N] (or [N, 1]), with gradient.
        teacher_logits: float, same shape; treated as constants.

    Returns:
        Scalar tensor >= 0; 0 iff the logits are equal.

    Raises:
        ValueError: shapes differ.

    Source: Chen et al., *GANs Can Play Lottery Tickets Too*, ICLR 2021, §3 (knowledge distillation from the dense
    trained discriminator).
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student and teacher logits differ in shape: {tuple(student_logits.shape)} vs "
                         f"{tuple(teacher_logits.shape)}")
    s, t = student_logits.reshape(-1, 1), teacher_logits.detach().reshape(-1, 1)
    log_ps = torch.cat([F.logsigmoid(s), F.logsigmoid(-s)], dim=1)
    log_pt = torch.cat([F.logsigmoid(t), F.logsigmoid(-t)], dim=1)
    return (log_pt.exp() * (log_pt - log_ps)).mean()


class ObjectiveWrapper:
    """Base of objectives that extend another one (distillation, LeCam, ADA feedback, RG-GAN regulariser, ...).

    Stores the wrapped objective as ``self.objective``, passes ``d_loss`` / ``g_loss`` through unchanged unless a
    subclass overrides them, and forwards every other attribute (``loss``, ``augment``, ``last_d_pass``...) to it,
    so wrappers stack in any order.

    Args:
        objective: a :class:`GANObjective` or another wrapper.
    """

    def __init__(self, objective) -> None:
        self.objective = objective

    def __getattr__(self, name: str):
        inner = self.__dict__.get("objective")
        if inner is None:  # not yet set (e.g. during unpickling): avoid infinite recursion
            raise AttributeError(name)
        return getattr(inner, name)

    def d_loss(self, *args, **kwargs) -> tuple[Tensor, dict[str, float]]:
        """The wrapped objective's ``d_loss``, arguments passed through unchanged (incl. labels ``c=``)."""
        return self.objective.d_loss(*args, **kwargs)

    def g_loss(self, *args, **kwargs) -> tuple[Tensor, dict[str, float]]:
        """The wrapped objective's ``g_loss``, arguments passed through unchanged (incl. labels ``c=``)."""
        return self.objective.g_loss(*args, **kwargs)


class DistillationObjective(ObjectiveWrapper):
    """Adds ``weight * L_KD`` from a frozen teacher D (the dense trained D) to the D loss of any objective.

    The teacher scores the same augmented reals and (detached) fakes the student saw in this D step (read from
    ``objective.last_d_pass``); the G loss is unchanged. Everything else is delegated to the wrapped objective.

    Args:
        objective: a :class:`GANObjective` (or subclass, e.g. AdvAug) that records ``last_d_pass``.
        teacher: the frozen dense D (eval mode is not forced: spectral norm buffers stay as trained).
        weight: lambda of the KD term (1 in GAN-LTH).
    """

    def __init__(self, objective: GANObjective, teacher: nn.Module, weight: float = 1.0) -> None:
        super().__init__(objective)
        self.teacher, self.weight = teacher.requires_grad_(False), float(weight)

    def d_loss(self, G: nn.Module, D: nn.Module, real: Tensor, z: Tensor,
               generator: torch.Generator | None = None, **kwargs) -> tuple[Tensor, dict[str, float]]:
        loss, stats = self.objective.d_loss(G, D, real, z, generator, **kwargs)
        p = self.objective.last_d_pass
        if p is None:
            raise RuntimeError("the wrapped objective did not record its D pass; distillation needs last_d_pass")
        with torch.no_grad():
            t_real = call_net(self.teacher, p["real"], p.get("real_c"))
            t_fake = call_net(self.teacher, p["fake"], p.get("fake_c"))
        kd = kd_loss(torch.cat([p["real_logits"], p["fake_logits"]]), torch.cat([t_real, t_fake]))
        stats = dict(stats, loss_KD=float(kd.detach()))
        return loss + self.weight * kd, stats
