"""Differentiable Augmentation (DiffAugment) for images in [-1, 1].

Source: Zhao, Liu, Lin, Zhu, Han. *Differentiable Augmentation for Data-Efficient GAN Training*.
NeurIPS 2020, arXiv:2006.10738. Written from SPEC.md section 2, not from the reference code.

Every op is a differentiable function of the image with its own random parameters drawn **per sample**
from torch (optionally from a seeded ``torch.Generator``), so gradients flow through it to G. The same
policy is applied to reals and fakes in the D step and to fakes in the G step.

Ops (``x``: float ``[N, C, H, W]``, ``u ~ U[0, 1)`` per sample):

- ``brightness``: ``x + (u - 0.5)``.
- ``saturation``: ``(x - m) * 2u + m``, ``m`` = mean over channels per pixel.
- ``contrast``: ``(x - m) * (u + 0.5) + m``, ``m`` = mean over C, H, W per image.
- ``translation``: integer shifts ``tx in [-sx, sx]`` along H and ``ty in [-sy, sy]`` along W, independent per
  sample, ``sx = int(0.125 * H + 0.5)``, ``sy = int(0.125 * W + 0.5)``; ``out[i, j] = x[i - tx, j - ty]`` and
  pixels shifted in from outside are 0 (zero padding, not wrap).
- ``cutout``: a square of side ``side_h = int(0.5 * H + 0.5)`` by ``side_w = int(0.5 * W + 0.5)`` with centre
  ``(cy, cx)``, ``cy`` uniform integer in ``[0, H + (1 - side_h % 2))`` (resp. W), covering rows
  ``[cy - side_h // 2, cy - side_h // 2 + side_h)`` clipped at the borders; the covered pixels are set to 0.

Images with alpha (C = 2 or 4, alpha last: ``data.background=keep-alpha``): the colour ops change the colour
channels only (``m`` is their mean) and leave alpha as it is; translation and cutout move / clear alpha with the
colour.

Policy words: ``color`` = ``brightness,saturation,contrast``; ``translation``; ``cutout``; the single colour op
names are accepted too. Outputs are not clamped (as in the paper), so values may leave [-1, 1].

Random draws, in order, per op (all on the generator's device, then moved to ``x.device``):
brightness / saturation / contrast: ``torch.rand(N, generator=g)``; translation:
``torch.randint(-sx, sx + 1, (N,), generator=g)`` then ``torch.randint(-sy, sy + 1, (N,), generator=g)``;
cutout: ``torch.randint(0, H + (1 - side_h % 2), (N,), generator=g)`` then the same along W.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from degan.registry import Registry

__all__ = [
    "DEFAULT_POLICY",
    "DIFFAUGMENT_OPS",
    "DiffAugment",
    "DiffAugmentModule",
    "parse_policy",
    "translation_shift",
    "cutout_size",
]

DEFAULT_POLICY = "color,translation,cutout"

Op = Callable[[Tensor, "torch.Generator | None"], Tensor]
DIFFAUGMENT_OPS: Registry[Op] = Registry("diffaugment op")


# ---------------------------------------------------------------------------------------------- helpers


def _draw_device(x: Tensor, generator: torch.Generator | None) -> torch.device:
    """Device to draw random numbers on: the generator's device if one is given, else ``x.device``."""
    return generator.device if generator is not None else x.device


def _rand(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """``u ~ U[0, 1)``, one per sample, float ``[N, 1, 1, 1]`` on ``x.device`` with ``x.dtype``."""
    u = torch.rand(x.shape[0], generator=generator, device=_draw_device(x, generator))
    return u.to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)


def _randint(low: int, high: int, n: int, x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Integers uniform in ``[low, high)``, long ``[n]`` on ``x.device``."""
    k = torch.randint(low, high, (n,), generator=generator, device=_draw_device(x, generator))
    return k.to(x.device)


def translation_shift(size: int, ratio: float = 0.125) -> int:
    """Largest translation in pixels along one axis: ``int(ratio * size + 0.5)``."""
    return int(ratio * size + 0.5)


def cutout_size(size: int, ratio: float = 0.5) -> int:
    """Side of the cutout square along one axis: ``int(ratio * size + 0.5)``."""
    return int(ratio * size + 0.5)


# ---------------------------------------------------------------------------------------------- ops


def _colour_only(op: Callable[[Tensor, torch.Generator | None], Tensor]):
    """Apply a colour op to the colour channels of an image with alpha (C in {2, 4}, alpha last), alpha unchanged."""

    def wrapped(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if x.shape[1] in (2, 4):
            return torch.cat([op(x[:, :-1], generator), x[:, -1:]], dim=1)
        return op(x, generator)

    wrapped.__name__, wrapped.__doc__ = op.__name__, op.__doc__
    return wrapped


@DIFFAUGMENT_OPS.register("brightness")
@_colour_only
def brightness(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """``x + (u - 0.5)`` with ``u ~ U[0, 1)`` per sample."""
    return x + (_rand(x, generator) - 0.5)


@DIFFAUGMENT_OPS.register("saturation")
@_colour_only
def saturation(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """``(x - m) * 2u + m`` with ``m`` the channel mean per pixel and ``u ~ U[0, 1)`` per sample."""
    m = x.mean(dim=1, keepdim=True)
    return (x - m) * (_rand(x, generator) * 2) + m


@DIFFAUGMENT_OPS.register("contrast")
@_colour_only
def contrast(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """``(x - m) * (u + 0.5) + m`` with ``m`` the mean over C, H, W per image and ``u ~ U[0, 1)``."""
    m = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - m) * (_rand(x, generator) + 0.5) + m


@DIFFAUGMENT_OPS.register("color")
def color(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """``brightness``, then ``saturation``, then ``contrast``."""
    return contrast(saturation(brightness(x, generator), generator), generator)


@DIFFAUGMENT_OPS.register("translation")
def translation(x: Tensor, generator: torch.Generator | None = None, ratio: float = 0.125) -> Tensor:
    """Per-sample integer shift with zero fill: ``out[n, :, i, j] = x[n, :, i - tx[n], j - ty[n]]`` or 0.

    Vectorised: pad with zeros by the largest shift, then gather rows and columns with per-sample indices.
    """
    n, c, h, w = x.shape
    sx, sy = translation_shift(h, ratio), translation_shift(w, ratio)
    tx = _randint(-sx, sx + 1, n, x, generator)
    ty = _randint(-sy, sy + 1, n, x, generator)
    if sx == 0 and sy == 0:
        return x
    padded = F.pad(x, (sy, sy, sx, sx))  # zeros; [N, C, H + 2sx, W + 2sy]
    # Row i of the output reads padded row (i - tx + sx), which is x row (i - tx) or a zero pad row.
    rows = torch.arange(h, device=x.device).view(1, h) - tx.view(n, 1) + sx  # [N, H]
    cols = torch.arange(w, device=x.device).view(1, w) - ty.view(n, 1) + sy  # [N, W]
    index_rows = rows.view(n, 1, h, 1).expand(n, c, h, w + 2 * sy)
    out = torch.gather(padded, 2, index_rows)  # [N, C, H, W + 2sy]
    index_cols = cols.view(n, 1, 1, w).expand(n, c, h, w)
    return torch.gather(out, 3, index_cols)


@DIFFAUGMENT_OPS.register("cutout")
def cutout(x: Tensor, generator: torch.Generator | None = None, ratio: float = 0.5) -> Tensor:
    """Zero a per-sample square of side ``int(0.5 * size + 0.5)``, clipped at the borders (vectorised mask)."""
    n, _, h, w = x.shape
    side_h, side_w = cutout_size(h, ratio), cutout_size(w, ratio)
    cy = _randint(0, h + (1 - side_h % 2), n, x, generator)
    cx = _randint(0, w + (1 - side_w % 2), n, x, generator)
    top = (cy - side_h // 2).view(n, 1)
    left = (cx - side_w // 2).view(n, 1)
    rows = torch.arange(h, device=x.device).view(1, h)
    cols = torch.arange(w, device=x.device).view(1, w)
    in_rows = (rows >= top) & (rows < top + side_h)  # [N, H]
    in_cols = (cols >= left) & (cols < left + side_w)  # [N, W]
    erased = in_rows.view(n, 1, h, 1) & in_cols.view(n, 1, 1, w)
    return x * (~erased).to(x.dtype)


# ---------------------------------------------------------------------------------------------- policy


def parse_policy(policy: str | None) -> list[str]:
    """Split a policy string into op names, validating each.

    Args:
        policy: comma-separated op names (``"color,translation,cutout"``); whitespace around names is ignored;
            ``None`` or ``""`` means no ops.

    Returns:
        The op names in the order given.

    Raises:
        ValueError: if a name is not a registered op; the message lists the valid ops.
    """
    if not policy:
        return []
    words = [w.strip() for w in policy.split(",")]
    words = [w for w in words if w]
    for w in words:
        DIFFAUGMENT_OPS.get(w)  # raises ValueError listing the valid names
    return words


def _check_images(x: Tensor) -> None:
    if not isinstance(x, Tensor) or x.dim() != 4 or not x.is_floating_point():
        desc = f"{tuple(x.shape)} {x.dtype}" if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"DiffAugment expects a float tensor [N, C, H, W]; got {desc}")


def DiffAugment(x: Tensor, policy: str = DEFAULT_POLICY, generator: torch.Generator | None = None) -> Tensor:
    """Apply the DiffAugment ops of ``policy`` in order, with independent randomness per sample.

    Zhao et al., *Differentiable Augmentation for Data-Efficient GAN Training*, NeurIPS 2020, arXiv:2006.10738.
    The op formulas are in this module's docstring.

    Args:
        x: float ``[N, C, H, W]`` images, nominally in [-1, 1]. Gradients flow back to ``x``.
        policy: comma-separated ops applied in order: ``color`` (= brightness, saturation, contrast),
            ``translation``, ``cutout``, or a single colour op. ``""`` returns ``x`` itself unchanged.
        generator: optional ``torch.Generator`` for reproducible draws. A generator on another device than
            ``x`` (e.g. a CPU generator with CUDA images) draws on its own device and the numbers are moved.

    Returns:
        float ``[N, C, H, W]``, same dtype and device as ``x``; values are not clamped.

    Raises:
        ValueError: if ``policy`` names an unknown op (the message lists the valid ops), or ``x`` is not a
            4-D floating-point tensor.
    """
    ops = parse_policy(policy)
    if not ops:
        return x
    _check_images(x)
    for name in ops:
        x = DIFFAUGMENT_OPS.get(name)(x, generator)
    return x


class DiffAugmentModule(nn.Module):
    """DiffAugment with a fixed policy, as an ``nn.Module`` (no parameters).

    Args:
        policy: see :func:`DiffAugment`; validated here.

    Attributes:
        policy: the canonical policy string (op names joined by ``","``).
        spec: the canonical ``build_augment`` string, ``"diffaug:<policy>"``.

    Raises:
        ValueError: if ``policy`` names an unknown op.
    """

    def __init__(self, policy: str = DEFAULT_POLICY) -> None:
        super().__init__()
        self.policy = ",".join(parse_policy(policy))
        self.spec = f"diffaug:{self.policy}"

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Augment ``x`` (float ``[N, C, H, W]``); see :func:`DiffAugment`."""
        return DiffAugment(x, self.policy, generator=generator)

    def extra_repr(self) -> str:
        return f"policy={self.policy!r}"
