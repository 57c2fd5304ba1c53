"""R1 regularisation of the discriminator, as an objective wrapper with lazy regularisation.

Sources: Mescheder, Geiger, Nowozin. *Which Training Methods for GANs do actually Converge?* ICML 2018,
arXiv:1801.04406 (R1 = ``gamma / 2 * E_x[||grad_x D(x)||^2]`` on reals); lazy regularisation from Karras et al.
*Analyzing and Improving the Image Quality of StyleGAN*, CVPR 2020, arXiv:1912.04958 (section 4: the penalty is
computed every ``interval`` D steps and multiplied by ``interval``); with augmentation as in Zhao et al.
*Differentiable Augmentation for Data-Efficient GAN Training*, NeurIPS 2020, arXiv:2006.10738 and Karras et al.
*Training GANs with Limited Data* (ADA), NeurIPS 2020: the gradient is taken w.r.t. the **un-augmented** reals x
through the augmentation, ``grad_x D(T(x))`` (SPEC section 2: the same policy on reals and fakes in the D step).

What one regularised D step adds (every ``interval``-th D step, counting from the first one)::

    x = reals.detach().requires_grad_()
    penalty = mean_n ||grad_x sum_n D(T(x_n))||^2          (sum over C, H, W per sample, mean over the batch)
    loss_D += interval * gamma / 2 * penalty

Choices made here:

- ``T`` is a fresh draw of the wrapped objective's augmentation (from the same seeded ``torch.Generator``) in a
  separate forward pass, as StyleGAN2-ADA's separate regularisation pass does; with no augmentation ``T`` is the
  identity.
- The penalty is added to the D loss of the same step (one optimizer step), not taken in a separate optimizer step
  with StyleGAN2's ``interval / (interval + 1)`` correction of Adam's learning rate and betas.
- The R1 forward and the gradient run in float32 with autocast disabled (the squared gradient norm underflows in
  half precision).
- Labels: keyword arguments of ``d_loss`` go to the wrapped objective unchanged; D is called with the labels of the
  reals: ``c[0]`` when ``c=(real_c, gen_c)`` (the training loop's convention), else ``c`` itself.

The regulariser's state (the D-step counter and the last penalty) goes into ``TrainState.extras`` so a resumed run
keeps the lazy schedule.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from degan.losses import ObjectiveWrapper

__all__ = ["R1", "R1Objective", "r1_penalty"]


def r1_penalty(D: nn.Module, real: Tensor, augment: Any = None, generator: torch.Generator | None = None,
               c: Tensor | None = None, create_graph: bool = True) -> Tensor:
    """``E_n[||grad_x D(T(x))_n||^2]``: the squared gradient norm of D's logits w.r.t. the un-augmented reals.

    Runs in float32 with autocast disabled for ``real``'s device type.

    Args:
        D: the discriminator; ``D(x)`` (or ``D(x, c)``) returns float ``[N]`` logits.
        real: float ``[N, C, H, W]`` reals in [-1, 1] (detached here; the gradient is w.r.t. this tensor).
        augment: ``aug(x, generator=...) -> x`` differentiable augmentation, or None for the identity.
        generator: the augmentation's random stream.
        c: long ``[N]`` labels of the reals for a conditional D, or None.
        create_graph: keep the graph of the gradient so the penalty can be back-propagated into D (training);
            False for a measurement.

    Returns:
        Scalar float32 tensor >= 0 (with a graph into D's parameters when ``create_graph``).
    """
    with torch.autocast(device_type=real.device.type, enabled=False):
        x = real.detach().to(torch.float32).requires_grad_(True)
        x_aug = augment(x, generator=generator) if augment is not None else x
        logits = D(x_aug) if c is None else D(x_aug, c)
        (grad,) = torch.autograd.grad(logits.float().sum(), x, create_graph=create_graph)
        return grad.square().sum(dim=tuple(range(1, grad.dim()))).mean()


class R1:
    """The R1 regulariser's settings and state.

    Args:
        gamma: R1 weight gamma >= 0 (the penalty is ``gamma / 2 * E||grad||^2``; StyleGAN2 / DiffAugment: 10 for
            100-shot 256 px, 0.01-0.1 for CIFAR-10). 0 = off (the wrapper then adds nothing).
        interval: lazy regularisation: the penalty is computed every ``interval`` D steps and scaled by
            ``interval`` (StyleGAN2: 16); 1 = every step.
        separate: False (default): the lazy term is added to that D step's loss; True: it is its own D optimizer
            step right after that D step, on the same reals (StyleGAN2's ``Dreg`` phase, Appendix B), and D's Adam
            gets ``lr * c``, ``beta ** c`` with ``c = interval / (interval + 1)`` (set up by the ``r1`` technique).

    Attributes:
        d_steps: D steps seen.
        last_penalty: the last computed ``E||grad||^2`` (None before the first).

    Raises:
        ValueError: gamma negative or not finite, interval not an int >= 1.
    """

    def __init__(self, gamma: float, interval: int = 16, separate: bool = False) -> None:
        if not (isinstance(gamma, (int, float)) and math.isfinite(gamma) and gamma >= 0):
            raise ValueError(f"R1 gamma must be a finite number >= 0 (0 = off); got {gamma!r}")
        if isinstance(interval, bool) or int(interval) != interval or interval < 1:
            raise ValueError(f"R1 interval must be an integer >= 1 (StyleGAN2 lazy regularisation: 16); "
                             f"got {interval!r}")
        self.gamma, self.interval, self.separate = float(gamma), int(interval), bool(separate)
        self.d_steps = 0
        self.last_penalty: float | None = None

    def due(self) -> bool:
        """Whether the next D step is a regularisation step (the 1st, the ``interval + 1``-th, ...)."""
        return self.gamma > 0 and self.d_steps % self.interval == 0

    def wrap(self, objective: Any) -> R1Objective:
        """The objective with the lazy R1 term added to its D loss (see :class:`R1Objective`)."""
        return R1Objective(objective, self)

    def state_dict(self) -> dict:
        """Plain values: the D-step counter, the last penalty and the settings."""
        return {"d_steps": self.d_steps, "last_penalty": self.last_penalty, "gamma": self.gamma,
                "interval": self.interval}

    def load_state_dict(self, sd: dict) -> None:
        """Restore the counter and the last penalty (the settings stay those of the current config)."""
        self.d_steps = int(sd["d_steps"])
        self.last_penalty = None if sd.get("last_penalty") is None else float(sd["last_penalty"])


class R1Objective(ObjectiveWrapper):
    """Adds ``interval * gamma / 2 * E||grad_x D(T(x))||^2`` to every ``interval``-th D loss of any objective.

    Stats added to every D step: ``r1_penalty`` (the last computed ``E||grad||^2``, before gamma; 0 before the
    first) and ``r1_on`` (1.0 on the steps where the term was added). ``loss_D`` stays the adversarial loss. The G
    loss and every other attribute are delegated unchanged.

    Args:
        objective: the objective to extend; its ``augment`` (forwarded through wrappers) is the ``T`` of the penalty.
        r1: the :class:`R1` state (kept in ``TrainState.extras`` for checkpoints).
    """

    def __init__(self, objective: Any, r1: R1) -> None:
        super().__init__(objective)
        self.r1 = r1

    def d_loss(self, G: nn.Module, D: nn.Module, real: Tensor, z: Tensor,
               generator: torch.Generator | None = None, **kwargs: Any) -> tuple[Tensor, dict[str, float]]:
        loss, stats = self.objective.d_loss(G, D, real, z, generator, **kwargs)
        r1 = self.r1
        on = r1.due() and not r1.separate
        if on:
            c = kwargs.get("c")
            c = c[0] if isinstance(c, (tuple, list)) else c
            penalty = r1_penalty(D, real, getattr(self.objective, "augment", None), generator, c)
            loss = loss + (r1.interval * r1.gamma / 2.0) * penalty
            r1.last_penalty = float(penalty.detach())
        r1.d_steps += 1
        stats = dict(stats, r1_penalty=r1.last_penalty if r1.last_penalty is not None else 0.0, r1_on=float(on))
        return loss, stats

    def g_loss(self, G: nn.Module, D: nn.Module, z: Tensor, generator: torch.Generator | None = None,
               **kwargs: Any) -> tuple[Tensor, dict[str, float]]:
        return self.objective.g_loss(G, D, z, generator, **kwargs)

    def d_reg_batch(self, batch: int) -> int:
        """With ``separate``: the reals of the D step just taken get a regularisation phase when it was the 1st,
        the ``interval + 1``-th, ... D step (the schedule of the in-step variant); returns ``batch`` then, else 0."""
        r1 = self.r1
        return batch if (r1.separate and r1.gamma > 0 and (r1.d_steps - 1) % r1.interval == 0) else 0

    def d_reg_loss(self, G: nn.Module, D: nn.Module, real: Tensor, generator: torch.Generator | None = None,
                   c: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
        """The separate phase's loss ``interval * gamma / 2 * E||grad_x D(T(x))||^2`` on reals float
        ``[N, C, R, R]`` in [-1, 1] (labels ``c`` long ``[N]`` for a conditional D)."""
        r1 = self.r1
        penalty = r1_penalty(D, real, getattr(self.objective, "augment", None), generator, c)
        r1.last_penalty = float(penalty.detach())
        return (r1.interval * r1.gamma / 2.0) * penalty, {"r1_penalty": r1.last_penalty, "r1_on": 1.0}
