"""The CycleGAN objective (Zhu et al. 2017, arXiv:1703.10593): LSGAN, cycle-consistency and identity L1 terms."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .networks import NETS


def lsgan_loss(pred: Tensor, target_is_real: bool) -> Tensor:
    """Least-squares GAN loss (Mao et al. 2017): ``mean((pred - 1)^2)`` for real targets, ``mean(pred^2)`` for fake.

    Args:
        pred: raw D scores, any shape (PatchGAN grid ``[N, 1, h, w]``).
    """
    return F.mse_loss(pred, torch.ones_like(pred) if target_is_real else torch.zeros_like(pred))


def cycle_loss(real: Tensor, reconstructed: Tensor) -> Tensor:
    """Cycle-consistency L1 ``mean(|F(G(x)) - x|)`` (Zhu et al. 2017, Eq. 2), unweighted; float ``[N, C, H, W]``."""
    return F.l1_loss(reconstructed, real)


def identity_loss(real: Tensor, same: Tensor) -> Tensor:
    """Identity L1 ``mean(|G(y) - y|)`` for ``G: X -> Y`` applied to ``y`` in Y (Zhu et al. 2017, §5.2), unweighted."""
    return F.l1_loss(same, real)


def generator_loss(nets: dict[str, nn.Module], real_A: Tensor, real_B: Tensor, lambda_cycle: float = 10.0,
                   lambda_identity: float = 5.0) -> tuple[Tensor, dict[str, Tensor], tuple[Tensor, Tensor]]:
    """The generators' objective ``L_GAN + lambda_cycle * L_cycle + lambda_identity * L_identity`` (Zhu et al. 2017).

    ``L_GAN = lsgan(D_B(G_AB(a)), real) + lsgan(D_A(G_BA(b)), real)``; ``L_cycle = |G_BA(G_AB(a)) - a|_1 +
    |G_AB(G_BA(b)) - b|_1``; ``L_identity = |G_AB(b) - b|_1 + |G_BA(a) - a|_1`` (not computed when its weight is 0).

    Args:
        nets: ``{"G_AB", "G_BA", "D_A", "D_B"}``.
        real_A, real_B: float ``[N, C, H, W]`` in [-1, 1].

    Returns:
        ``(loss, {"gan", "cycle", "identity"} unweighted 0-d tensors, (fake_A, fake_B))``.
    """
    G_AB, G_BA, D_A, D_B = (nets[n] for n in NETS)
    fake_B, fake_A = G_AB(real_A), G_BA(real_B)
    gan = lsgan_loss(D_B(fake_B), True) + lsgan_loss(D_A(fake_A), True)
    cyc = cycle_loss(real_A, G_BA(fake_B)) + cycle_loss(real_B, G_AB(fake_A))
    idt = (identity_loss(real_B, G_AB(real_B)) + identity_loss(real_A, G_BA(real_A))
           if lambda_identity > 0 else torch.zeros((), device=real_A.device))
    loss = gan + lambda_cycle * cyc + lambda_identity * idt
    return loss, {"gan": gan, "cycle": cyc, "identity": idt}, (fake_A, fake_B)
