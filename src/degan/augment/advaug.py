"""AdvAug: adversarial (or Gaussian) perturbations of intermediate G and D features, as a GAN objective.

Source: T. Chen, Y. Cheng, Z. Gan, J. Liu, Z. Wang. *Data-Efficient GAN Training Beyond (Just) Augmentations:
A Lottery Ticket Perspective*. NeurIPS 2021, arXiv:2103.00397 (Eq. 3-6), as specified in SPEC §4.

Split points (defaults, SPEC §4): ``G = G2 ∘ G1`` with ``G1 = G.input_layer`` (the reshaped latent projection,
[N, C0, 4, 4]) and ``G2 = G.synthesis``; ``D = D2 ∘ D1`` with ``D1 = D.features`` (the pooled feature vector
[N, F]) and ``D2 = D.head`` (final linear and, for a conditional D, the projection term).

Perturbation by PGD on the feature ``f`` (delta is a constant in the outer update; the adversarial branch's gradient
still flows into G1 / D1 through ``f``)::

    delta_0 = 0                         (or U[-eps, eps] with random_start)
    delta_{t+1} = delta_t + step_size * sign(grad_delta J(f + delta_t))      t = 0 .. steps-1
    delta_{t+1} = clip(delta_{t+1}, -eps, eps)                                 if eps is given

The objective ``J`` ascended by PGD depends on ``direction`` (``s = D2(.)`` is D's score, f_D/f_G as in SPEC §1):

==============  ====================================================  ===============================
branch          ``worst_case`` (default; the paper's min-max)          ``reference`` (released code)
==============  ====================================================  ===============================
D, real         ``J = f_D(-s(f_real + delta))``: lowers D's real score  ``J = s``: raises D's score
D, fake         ``J = f_D(s(f_fake + delta))``: raises D's fake score  ``J = s``: raises D's score
G               ``J = f_G(-s(G2(h + delta)))``: lowers D's score       ``J = s``: raises D's score
==============  ====================================================  ===============================

Losses (lambda_D = lambda_G = 1 by default)::

    L_D_total = (L_D(clean) + lambda_D * L_D(adv)) / 2      adversarial D features of reals and fakes
    L_G_total = (L_G(clean) + lambda_G * L_G(adv)) / 2      adversarial G feature (generated images only)

With DiffAugment, images are augmented first, then features are extracted, then perturbed; the clean and the
adversarial branches share the same augmented images (the reference code forgets this on the adversarial G branch;
here the same augmentation draw is replayed with a cloned generator state).

``mode="gaussian"`` replaces PGD by ``delta ~ N(0, sigma^2)`` (sigma = 0.01), the baseline of Table 6.

Side effects of the extra forward passes (decision): only the clean forward pass updates running statistics.
The PGD passes and the adversarial forward pass run inside :func:`frozen_statistics`: BatchNorm normalises with
the batch statistics (training mode) without updating its running averages, and spectral norm skips its power
iteration, using the ``_u``, ``_v`` of the clean pass. So one training step advances BN averages and the SN
power iteration exactly once, with or without AdvAug (the released code updates them on every pass, i.e.
1 + steps + 1 times per step).
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
from torch import Tensor, nn

from ..config import ADVAUG_DIRECTIONS, ADVAUG_MODES, AdvAugConfig
from ..losses import GANObjective, call_net

DIRECTIONS = ADVAUG_DIRECTIONS
MODES = ADVAUG_MODES


class AdvAugSettings(AdvAugConfig):
    """AdvAug settings: the fields of :class:`degan.config.AdvAugConfig` (``enabled`` is ignored here) plus
    the resolution-dependent default step size (validation: :meth:`degan.config.AdvAugConfig.validate`).

    Fields: ``networks`` (``G,D`` | ``G`` | ``D``), ``steps`` (>= 1), ``step_size`` (None = 0.01 below 64 px,
    0.001 from 64 px), ``eps`` (L-inf radius or None = no projection), ``random_start`` (needs eps),
    ``direction`` (``worst_case`` | ``reference``), ``mode`` (``pgd`` | ``gaussian``), ``sigma``,
    ``lambda_D``, ``lambda_G``, ``split_G``, ``split_D`` (block indices; None = the defaults).
    """

    def gamma(self, resolution: int) -> float:
        """The PGD step size: the configured one, else 0.01 below 64 px and 0.001 from 64 px on."""
        if self.step_size is not None:
            return self.step_size
        return 0.01 if resolution < 64 else 0.001


# ---------------------------------------------------------------------------------------------------------------------
# split points


def _blocks(net: nn.Module, which: str) -> nn.Sequential:
    blocks = getattr(net, "blocks", None)
    if not isinstance(blocks, nn.Sequential):
        raise ValueError(f"{which} of model {getattr(net, 'name', type(net).__name__)!r} has no `blocks` sequence, "
                         "so only the default AdvAug split point is available")
    return blocks


def split_G(G: nn.Module, k: int | None) -> tuple[Callable, Callable]:
    """``(G1, G2)`` with ``G = G2 ∘ G1``, cut after block ``k`` of ``G.blocks`` (None or 0: after ``input_layer``).

    Raises:
        ValueError: ``k`` outside ``0 .. len(G.blocks)`` (the message gives the range).
    """
    if k is None or k == 0:
        return G.input_layer, G.synthesis
    blocks = _blocks(G, "G")
    if not 0 <= k <= len(blocks):
        raise ValueError(f"advaug.split_G={k} is out of range for this G: choose 0 .. {len(blocks)} "
                         f"(block index; 0 = after the latent projection)")
    return (lambda z, c=None: blocks[:k](G.input_layer(z, c))), (lambda h, c=None: G.output(blocks[k:](h)))
    # (a G whose blocks read the labels, e.g. BigGAN's conditional BN, keeps them outside ``G.blocks`` and so offers
    # the default split only)


def split_D(D: nn.Module, k: int | None) -> tuple[Callable, Callable]:
    """``(D1, D2)`` with ``D = D2 ∘ D1``, cut before block ``k`` of ``D.blocks`` (None: pooled features | head).

    Raises:
        ValueError: ``k`` outside ``0 .. len(D.blocks) - 1`` (the message gives the range).
    """
    if k is None:
        return D.features, D.head
    blocks = _blocks(D, "D")
    if not 0 <= k < len(blocks):
        raise ValueError(f"advaug.split_D={k} is out of range for this D: choose 0 .. {len(blocks) - 1} "
                         "(block index), or null for the pooled features before the head")
    return (lambda x, c=None: blocks[:k](x)), (lambda h, c=None: D.head(D.pool(blocks[k:](h)), c))


# ---------------------------------------------------------------------------------------------------------------------
# helpers


@contextlib.contextmanager
def frozen_statistics(*nets: nn.Module) -> Iterator[None]:
    """Forward passes inside leave BatchNorm running statistics and spectral-norm vectors untouched.

    BatchNorm layers in training mode stop tracking running statistics (they still normalise with the batch
    statistics, as in training); spectral-norm parametrizations switch to eval mode (no power iteration: they use
    the ``_u``, ``_v`` of the last clean pass). Nothing is modified in place, so autograd graphs built inside stay
    valid; the flags are restored on exit.
    """
    bn, sn = [], []
    for net in nets:
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats:
                bn.append(m)
            elif type(m).__name__ == "_SpectralNorm" and m.training:
                sn.append(m)
    try:
        for m in bn:
            m.track_running_stats = False
        for m in sn:
            m.training = False
        yield
    finally:
        for m in bn:
            m.track_running_stats = True
        for m in sn:
            m.training = True


def pgd_delta(f: Tensor, objective: Callable[[Tensor], Tensor], *, steps: int, step_size: float,
              eps: float | None = None, random_start: bool = False,
              generator: torch.Generator | None = None) -> Tensor:
    """PGD ascent on ``objective(f + delta)`` w.r.t. delta only; returns the detached delta (same shape as f).

    Args:
        f: the clean feature, any shape; it is detached here (gradients w.r.t. delta only).
        objective: maps the perturbed feature to a scalar to increase.
        steps: number of sign-gradient steps, >= 1.
        step_size: gamma > 0.
        eps: L-inf radius to project on after each step, or None.
        random_start: start from U[-eps, eps].
        generator: randomness of the random start.
    """
    from ..train.precision import fp32

    base = f.detach().float()  # the PGD gradient runs in fp32, autocast off (degan.train.precision)
    if random_start:
        u = torch.rand(base.shape, generator=generator, device="cpu" if generator is not None else base.device)
        delta = (u.to(base.device, base.dtype) * 2 - 1) * eps
    else:
        delta = torch.zeros_like(base)
    with fp32():
        for _ in range(steps):
            delta.requires_grad_(True)
            (grad,) = torch.autograd.grad(objective(base + delta), delta)
            delta = delta.detach() + step_size * grad.sign()
            if eps is not None:
                delta = delta.clamp(-eps, eps)
    return delta.detach().to(f.dtype)


def _replay(generator: torch.Generator | None) -> torch.Generator | None:
    """A generator in the same state, so an augmentation can be drawn twice identically."""
    if generator is None:
        return None
    g = torch.Generator(device=generator.device)
    g.set_state(generator.get_state())
    return g


# ---------------------------------------------------------------------------------------------------------------------
# the objective


class AdvAugObjective(GANObjective):
    """GAN objective with AdvAug feature perturbations in the D and/or G step (see the module docstring).

    Args:
        loss: ``hinge`` | ``nonsaturating``.
        augment: image augmentation (e.g. DiffAugment) applied before feature extraction, or None.
        settings: :class:`AdvAugSettings` (validated here).
        resolution: image side in pixels, for the default step size.

    Raises:
        ValueError: invalid settings (steps 0, negative step size, unknown direction or networks...).
    """

    def __init__(self, loss: str = "hinge", augment: Callable | None = None,
                 settings: AdvAugSettings | None = None, resolution: int = 32) -> None:
        super().__init__(loss, augment)
        self.settings = (settings or AdvAugSettings()).validate()
        self.step_size = self.settings.gamma(resolution)
        nets = {n.strip() for n in self.settings.networks.split(",")}
        self.on_D, self.on_G = "D" in nets, "G" in nets

    @property
    def reuse_clean_gradient(self) -> bool:
        """True when PGD is one worst-case step from delta = 0: then grad_delta J(f + 0) has the sign of the
        gradient of the clean loss term w.r.t. f (J is that term, summed instead of averaged), so the clean pass's
        graph gives delta without another forward pass. Same delta as :func:`pgd_delta` (tested)."""
        s = self.settings
        return s.mode == "pgd" and s.direction == "worst_case" and s.steps == 1 and not s.random_start

    def _one_step_from(self, clean: Tensor, feats: list[Tensor]) -> list[Tensor]:
        grads = torch.autograd.grad(clean, feats, retain_graph=True)
        deltas = [self.step_size * g.sign() for g in grads]
        if self.settings.eps is not None:
            deltas = [d.clamp(-self.settings.eps, self.settings.eps) for d in deltas]
        return [d.detach() for d in deltas]

    def perturb(self, f: Tensor, objective: Callable[[Tensor], Tensor],
                generator: torch.Generator | None) -> Tensor:
        """delta for feature ``f``: PGD on ``objective`` or Gaussian noise, detached."""
        s = self.settings
        if s.mode == "gaussian":
            noise = torch.randn(f.shape, generator=generator, device="cpu" if generator is not None else f.device)
            return (noise.to(f.device, f.dtype) * s.sigma).detach()
        return pgd_delta(f, objective, steps=s.steps, step_size=self.step_size, eps=s.eps,
                         random_start=s.random_start, generator=generator)

    def d_loss(self, G: nn.Module, D: nn.Module, real: Tensor, z: Tensor,
               generator: torch.Generator | None = None, *,
               c: tuple[Tensor | None, Tensor | None] | None = None) -> tuple[Tensor, dict[str, float]]:
        """As :meth:`GANObjective.d_loss` (labels ``c = (real_c, gen_c)`` reach D1 and D2 with their images)."""
        if not self.on_D:
            return super().d_loss(G, D, real, z, generator, c=c)
        real_c, gen_c = (None, None) if c is None else c
        with torch.no_grad():
            fake = call_net(G, z, gen_c)
        D1s, D2s = split_D(D, self.settings.split_D)
        D1 = lambda x, y: call_net(D1s, x, y)  # noqa: E731
        real_aug, fake_aug = self._aug(real, generator), self._aug(fake, generator)
        f_real, f_fake = D1(real_aug, real_c), D1(fake_aug, gen_c)
        D2r = lambda f: call_net(D2s, f, real_c)  # noqa: E731  (D2 with the reals' labels)
        D2f = lambda f: call_net(D2s, f, gen_c)  # noqa: E731  (D2 with the fakes' labels)
        s_real, s_fake = D2r(f_real), D2f(f_fake)
        self.last_d_pass = {"real": real_aug, "fake": fake_aug, "real_logits": s_real, "fake_logits": s_fake,
                            "real_c": real_c, "fake_c": gen_c}
        l_real, l_fake = self.loss.d_loss(s_real, s_fake)
        clean = l_real + l_fake
        ref = self.settings.direction == "reference"
        with frozen_statistics(D):
            if self.reuse_clean_gradient and clean.requires_grad:
                d_real, d_fake = self._one_step_from(clean, [f_real, f_fake])
            else:
                d_real = self.perturb(f_real, (lambda f: D2r(f).sum()) if ref else
                                      (lambda f: self.loss.f_D(-D2r(f)).sum()), generator)
                d_fake = self.perturb(f_fake, (lambda f: D2f(f).sum()) if ref else
                                      (lambda f: self.loss.f_D(D2f(f)).sum()), generator)
            a_real, a_fake = self.loss.d_loss(D2r(f_real + d_real), D2f(f_fake + d_fake))
        adv = a_real + a_fake
        loss = (clean + self.settings.lambda_D * adv) / 2
        stats = {"loss_D": float(loss.detach()), "loss_D_clean": float(clean.detach()),
                 "loss_D_adv": float(adv.detach()), "D_real": float(s_real.detach().mean()),
                 "D_fake": float(s_fake.detach().mean()), "r_t": float(torch.sign(s_real.detach()).mean())}
        return loss, stats

    def g_loss(self, G: nn.Module, D: nn.Module, z: Tensor, generator: torch.Generator | None = None, *,
               c: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
        """As :meth:`GANObjective.g_loss` (labels ``c`` of the fakes reach G1, G2 and D)."""
        if not self.on_G:
            return super().g_loss(G, D, z, generator, c=c)
        start = _replay(generator)  # state before the clean draw: every G pass replays the same augmentation
        G1, G2 = split_G(G, self.settings.split_G)
        h = call_net(G1, z, c)
        clean = self.loss.g_loss(call_net(D, self._aug(call_net(G2, h, c), generator), c))

        def score(hh: Tensor) -> Tensor:
            return call_net(D, self._aug(call_net(G2, hh, c), _replay(start)), c)

        ref = self.settings.direction == "reference"
        with frozen_statistics(G, D):
            if self.reuse_clean_gradient and clean.requires_grad:
                (delta,) = self._one_step_from(clean, [h])
            else:
                delta = self.perturb(h, (lambda hh: score(hh).sum()) if ref else
                                     (lambda hh: self.loss.f_G(-score(hh)).sum()), generator)
            adv = self.loss.g_loss(score(h + delta))
        loss = (clean + self.settings.lambda_G * adv) / 2
        return loss, {"loss_G": float(loss.detach()), "loss_G_clean": float(clean.detach()),
                      "loss_G_adv": float(adv.detach())}
