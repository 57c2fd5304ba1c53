"""Adaptive discriminator augmentation (ADA) for images in [-1, 1], differentiable, pure PyTorch.

Source: Karras, Aittala, Hellsten, Laine, Lehtinen, Aila. *Training Generative Adversarial Networks with Limited
Data*. NeurIPS 2020, arXiv:2006.06676 (section 2.3, Appendix B). Written from the paper, not from its code.

Every image D sees (reals and fakes in the D step, fakes in the G step; a future R1 pass would take the augmented
reals of :attr:`degan.losses.GANObjective.last_d_pass`) goes through the same pipeline. Each transform is applied
to each sample independently with probability ``p`` (the two arbitrary rotations with ``p_rot = 1 - sqrt(1 - p)``
each, so that some rotation happens with probability ``p``); a transform that is not applied uses its identity
parameter. All randomness comes from torch (optionally a seeded ``torch.Generator``), and the output is a
differentiable function of the input, so G's gradient flows through it.

Transforms, in the fixed order they are applied (strengths = the paper's defaults, the keys of :data:`STRENGTHS`):

==============  ======================================================================================  ===========
transform       what it does per sample (u ~ U[0, 1), n ~ N(0, 1), drawn per sample)                     group
==============  ======================================================================================  ===========
``xflip``       horizontal flip with probability 1/2 (i uniform in {0, 1})                              b (blit)
``rotate90``    rotation by k * 90 degrees, k uniform in {0, 1, 2, 3}                                    b
``xint``        integer translation by ``round((2u - 1) * xint_max * size)`` pixels per axis             b
``scale``       isotropic scaling by ``2 ** (n * scale_std)``                                            g (geom)
``rotate``      rotation by ``(2u - 1) * pi * rotate_max`` (twice: before and after ``aniso``)           g
``aniso``       anisotropic scaling: x by ``s``, y by ``1 / s``, ``s = 2 ** (n * aniso_std)``            g
``xfrac``       fractional translation by ``n * xfrac_std * size`` pixels per axis                       g
``brightness``  add ``n * brightness_std`` to every channel                                              c (color)
``contrast``    multiply by ``2 ** (n * contrast_std)`` (around 0, the middle of [-1, 1])                c
``lumaflip``    reflect the colour along the luma axis ``v = (1, 1, 1) / sqrt(3)``, probability 1/2      c
``hue``         rotate the colour around ``v`` by ``(2u - 1) * pi * hue_max``                            c
``saturation``  scale the colour orthogonal to ``v`` by ``2 ** (n * saturation_std)``                    c
``imgfilter``   amplify 4 frequency bands by ``2 ** (n * imgfilter_std)`` each (energy-normalised)       f (filter)
``noise``       add Gaussian noise of std ``|n| * noise_std`` per sample                                n (noise)
``cutout``      zero a square of side ``cutout_size * size`` at a uniform centre                         o (cutout)
==============  ======================================================================================  ===========

Geometric transforms (``b``, ``g``) are composed into one affine matrix per sample in pixel-centred coordinates
and applied once with ``torch.nn.functional.grid_sample`` (bilinear, ``padding_mode="reflection"``,
``align_corners=False``). Differences from the paper, by design:

- The paper resamples with a 2x upsampling by a wavelet filter, the affine warp, and a filtered downsampling; here
  the warp is one bilinear ``grid_sample`` (no custom CUDA, as asked by issue #9). Pixel-exact transforms (flips,
  90-degree rotations of square images, integer translations) map pixel centres onto pixel centres and stay exact.
- grid_sample's reflection repeats the border pixel (``x[-1] = x[0]``); the paper's reflection does not.
- ``imgfilter`` is applied in the Fourier domain (reflection padding, then ``rfft2``) with a gain that is linear
  in log-frequency between the four band centres (bands 0-1/16, 1/16-1/8, 1/8-1/4, 1/4-1/2 cycles per pixel, i.e.
  0-pi/8, pi/8-pi/4, pi/4-pi/2, pi/2-pi), instead of the paper's wavelet filter bank. Gains are renormalised after
  each band as in the paper, assuming an expected power of 10 : 1 : 1 : 1 over the bands.
- Colour transforms on 1-channel images act on the grey value replicated to RGB and average the result back
  (so ``hue`` and ``saturation`` change nothing visible and ``lumaflip`` negates).

Named pipelines (:data:`PIPELINES`): ``blit`` / ``b``, ``geom`` / ``g``, ``color`` / ``c``, ``filter`` / ``f``,
``noise`` / ``n``, ``cutout`` / ``o``, ``bg``, ``bgc`` (the default and the paper's recommendation), ``bgcf``,
``bgcfn``, ``bgcfnc`` (the paper's name for bgcfn + cutout). A custom pipeline lists transforms joined by ``+``
(``xflip+rotate90+brightness``); they are still applied in the order of the table.

Adaptive p (paper section 2.3): :class:`ADAController` accumulates ``r_t = E[sign(D(real_aug))]`` over
``interval`` D steps and moves p by ``sign(r_t - target) * (images in those steps) / (kimg * 1000)``, clamped to
[0, 1]; with ``interval`` steps of ``batch`` reals that is ``batch * interval / (kimg * 1000)``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from degan.losses import ObjectiveWrapper

__all__ = [
    "GROUPS",
    "LEAK_P",
    "PIPELINES",
    "STRENGTHS",
    "TRANSFORMS",
    "ADAController",
    "ADAObjective",
    "AdaAugment",
    "AdaSettings",
    "ada_rows",
    "leak_statistics",
    "parse_ada_spec",
    "parse_pipeline",
    "plot_ada",
]

TRANSFORMS: tuple[str, ...] = (
    "xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac",
    "brightness", "contrast", "lumaflip", "hue", "saturation", "imgfilter", "noise", "cutout",
)
"""Every transform, in the order the pipeline applies them."""

GROUPS: dict[str, tuple[str, ...]] = {
    "b": ("xflip", "rotate90", "xint"),
    "g": ("scale", "rotate", "aniso", "xfrac"),
    "c": ("brightness", "contrast", "lumaflip", "hue", "saturation"),
    "f": ("imgfilter",),
    "n": ("noise",),
    "o": ("cutout",),
}
"""The paper's transform groups: blit, general geometric, color, filter, noise, cutout."""

PIPELINES: dict[str, tuple[str, ...]] = {
    "blit": GROUPS["b"], "geom": GROUPS["g"], "color": GROUPS["c"], "filter": GROUPS["f"],
    "noise": GROUPS["n"], "cutout": GROUPS["o"],
    "b": GROUPS["b"], "g": GROUPS["g"], "c": GROUPS["c"], "f": GROUPS["f"], "n": GROUPS["n"], "o": GROUPS["o"],
    "bg": GROUPS["b"] + GROUPS["g"],
    "bgc": GROUPS["b"] + GROUPS["g"] + GROUPS["c"],
    "bgcf": GROUPS["b"] + GROUPS["g"] + GROUPS["c"] + GROUPS["f"],
    "bgcfn": GROUPS["b"] + GROUPS["g"] + GROUPS["c"] + GROUPS["f"] + GROUPS["n"],
    "bgcfnc": GROUPS["b"] + GROUPS["g"] + GROUPS["c"] + GROUPS["f"] + GROUPS["n"] + GROUPS["o"],
}
"""Pipeline names of the paper (Figure 4 / Table 2) and single-letter aliases of the groups."""

DEFAULT_PIPELINE = "bgc"

STRENGTHS: dict[str, float] = {
    "xint_max": 0.125,       # fraction of the image size
    "scale_std": 0.2,        # log2 units
    "rotate_max": 1.0,       # fraction of a half turn each way: U(-pi, pi) = up to a full turn
    "aniso_std": 0.2,        # log2 units
    "xfrac_std": 0.125,      # fraction of the image size
    "brightness_std": 0.2,   # in image units ([-1, 1] range)
    "contrast_std": 0.5,     # log2 units
    "hue_max": 1.0,          # fraction of a half turn each way
    "saturation_std": 1.0,   # log2 units
    "imgfilter_std": 1.0,    # log2 units
    "noise_std": 0.1,        # image units
    "cutout_size": 0.5,      # fraction of the image size
}
"""The paper's default strength of each transform (Appendix B), overridable in the spec (``ada:bgc:scale_std=0.1``)."""

_BANDS_LOG2 = (-4.5, -3.5, -2.5, -1.5)  # log2 of the band centres in cycles/pixel: 0-1/16, 1/16-1/8, 1/8-1/4, 1/4-1/2
_BAND_POWER = (10.0 / 13, 1.0 / 13, 1.0 / 13, 1.0 / 13)  # assumed expected power per band (sums to 1)


# ---------------------------------------------------------------------------------------------- settings and spec


@dataclass(frozen=True)
class AdaSettings:
    """Everything that defines an ADA augmentation and its p schedule.

    Attributes:
        pipeline: a name in :data:`PIPELINES` or transforms joined by ``+``.
        p: fixed augmentation probability in [0, 1], or None for adaptive p (starting at 0).
        target: adaptive p's target for ``r_t`` in (0, 1) (paper 0.6).
        interval: D steps (minibatches) between p updates, >= 1 (paper 4).
        kimg: thousands of real images over which p can move from 0 to 1, > 0 (paper 500).
        strengths: overrides of :data:`STRENGTHS` (all >= 0).
        diffaug: a DiffAugment policy (ops joined by ``+``) applied after ADA on every image, or None. Only used
            when asked for explicitly (see :func:`parse_ada_spec`).
    """

    pipeline: str = DEFAULT_PIPELINE
    p: float | None = None
    target: float = 0.6
    interval: int = 4
    kimg: float = 500.0
    strengths: dict[str, float] = field(default_factory=dict)
    diffaug: str | None = None

    @property
    def adaptive(self) -> bool:
        return self.p is None

    def validate(self) -> AdaSettings:
        """Check ranges and names.

        Raises:
            ValueError: unknown pipeline, transform or strength; p outside [0, 1]; target outside (0, 1);
                interval < 1; kimg <= 0; a negative strength; an unknown DiffAugment op.
        """
        parse_pipeline(self.pipeline)
        if self.p is not None and not (0.0 <= self.p <= 1.0):
            raise ValueError(f"ADA p={self.p:g} is not a probability; use a value in [0, 1] (e.g. ada:bgc:p=0.3), "
                             "or leave p out for adaptive p")
        if not (0.0 < self.target < 1.0) or not math.isfinite(self.target):
            raise ValueError(f"ADA target={self.target:g} must be in (0, 1): r_t = E[sign(D(real))] is in [-1, 1] and "
                             "the paper uses 0.6")
        if int(self.interval) != self.interval or self.interval < 1:
            raise ValueError(f"ADA interval={self.interval!r} must be an integer >= 1 (D steps between p updates; "
                             "paper 4)")
        if not (self.kimg > 0) or not math.isfinite(self.kimg):
            raise ValueError(f"ADA kimg={self.kimg:g} must be > 0 (thousands of reals for p to go from 0 to 1; "
                             "paper 500)")
        for k, v in self.strengths.items():
            if k not in STRENGTHS:
                raise ValueError(f"unknown ADA strength {k!r}; valid strengths are: {', '.join(STRENGTHS)}")
            if not (v >= 0) or not math.isfinite(v):
                raise ValueError(f"ADA strength {k}={v:g} must be a finite number >= 0")
        if self.diffaug is not None:
            from .diffaug import parse_policy

            parse_policy(self.diffaug.replace("+", ","))
        return self

    @property
    def spec(self) -> str:
        """The canonical ``build_augment`` string (options that differ from the defaults only)."""
        opts = []
        if self.p is not None:
            opts.append(f"p={self.p:g}")
        else:
            d = AdaSettings()
            opts += [f"{k}={getattr(self, k):g}" for k in ("target", "interval", "kimg") if getattr(self, k) != getattr(d, k)]
        opts += [f"{k}={v:g}" for k, v in sorted(self.strengths.items()) if v != STRENGTHS[k]]
        if self.diffaug is not None:
            opts.append(f"diffaug={self.diffaug}")
        return f"ada:{self.pipeline}" + (":" + ",".join(opts) if opts else "")


def parse_pipeline(name: str) -> tuple[str, ...]:
    """The transforms of a pipeline, in application order.

    Args:
        name: a name in :data:`PIPELINES` (``bgc``, ``bg``, ``b``, ``c``, ``blit``, ...) or transform names joined
            by ``+`` (``xflip+rotate90+brightness``).

    Returns:
        The transform names, ordered as in :data:`TRANSFORMS`.

    Raises:
        ValueError: unknown pipeline or transform name (the message lists the valid ones).
    """
    text = str(name).strip()
    if text in PIPELINES:
        return PIPELINES[text]
    words = [w.strip() for w in text.split("+") if w.strip()]
    bad = [w for w in words if w not in TRANSFORMS]
    if not words or bad:
        what = f"transform {bad[0]!r}" if bad and "+" in text else f"pipeline {text!r}"
        raise ValueError(f"unknown ADA {what}; use a pipeline ({', '.join(PIPELINES)}) or transforms joined by '+' "
                         f"({', '.join(TRANSFORMS)})")
    return tuple(t for t in TRANSFORMS if t in words)


_OPTION_KEYS = ("p", "target", "interval", "kimg", "diffaug")


def parse_ada_spec(arg: str | None) -> AdaSettings:
    """Parse the argument of an ``ada`` augment spec (the text after ``"ada:"``).

    Grammar: ``[<pipeline>][:<key>=<value>,...]``; the pipeline may be left out (``ada:p=0.3``). Keys:

    - ``p``: fixed p in [0, 1] (fixed mode); without it p is adaptive, starting at 0.
    - ``target`` (0.6), ``interval`` (4 D steps), ``kimg`` (500): the adaptive p controller; not with ``p``.
    - any key of :data:`STRENGTHS`, e.g. ``scale_std=0.1``.
    - ``diffaug=<ops joined by +>``: the explicit request to run DiffAugment after ADA in the same D pass.

    Examples: ``None`` -> adaptive ``bgc``; ``"bg"``; ``"bgc:p=0.3"``; ``"bgc:target=0.7,kimg=100"``;
    ``"xflip+rotate90:p=1"``; ``"bgc:diffaug=translation+cutout"``.

    Raises:
        ValueError: malformed option, unknown key, pipeline or transform, p with target/interval/kimg, or a value
            out of range (see :meth:`AdaSettings.validate`).
    """
    text = (arg or "").strip()
    pipeline, opts_text = DEFAULT_PIPELINE, ""
    if text:
        head, _, tail = text.partition(":")
        if "=" in head:
            opts_text = text
        else:
            pipeline = head.strip() or DEFAULT_PIPELINE
            opts_text = tail
    kw: dict[str, Any] = {}
    strengths: dict[str, float] = {}
    for item in (s.strip() for s in opts_text.split(",")):
        if not item:
            continue
        key, eq, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or not value:
            raise ValueError(f"ADA option {item!r} must be key=value, e.g. ada:bgc:p=0.3 or ada:bgc:target=0.6")
        if key not in _OPTION_KEYS and key not in STRENGTHS:
            raise ValueError(f"unknown ADA option {key!r}; valid options are: {', '.join(_OPTION_KEYS)}, "
                             f"{', '.join(STRENGTHS)}")
        if key == "diffaug":
            kw[key] = value
            continue
        try:
            num = float(value)
        except ValueError:
            raise ValueError(f"ADA option {key}={value!r} must be a number") from None
        if key in STRENGTHS:
            strengths[key] = num
        elif key == "interval":
            if num != int(num):
                raise ValueError(f"ADA interval={value} must be an integer >= 1")
            kw[key] = int(num)
        else:
            kw[key] = num
    if "p" in kw and any(k in kw for k in ("target", "interval", "kimg")):
        raise ValueError("ADA p=... fixes p, while target/interval/kimg set up adaptive p; give one or the other "
                         "(e.g. ada:bgc:p=0.3 or ada:bgc:target=0.6)")
    return AdaSettings(pipeline=pipeline, strengths=strengths, **kw).validate()


# ---------------------------------------------------------------------------------------------- random draws


class _Draw:
    """Per-sample random numbers on the generator's device (or ``device`` without a generator), float32."""

    def __init__(self, n: int, generator: torch.Generator | None, device: torch.device) -> None:
        self.n, self.g = n, generator
        self.device = generator.device if generator is not None else device

    def rand(self, *shape: int) -> Tensor:
        return torch.rand(self.n, *shape, generator=self.g, device=self.device)

    def randn(self, *shape: int) -> Tensor:
        return torch.randn(self.n, *shape, generator=self.g, device=self.device)

    def randint(self, high: int) -> Tensor:
        return torch.randint(0, high, (self.n,), generator=self.g, device=self.device)

    def gate(self, p: float) -> Tensor:
        """Bool [N]: which samples get the transform (probability p each)."""
        return self.rand() < p


def _eye(n: int, k: int, device: torch.device) -> Tensor:
    return torch.eye(k, device=device).expand(n, k, k).clone()


def _mat2(a: Tensor, b: Tensor, c: Tensor, d: Tensor, tx: Tensor, ty: Tensor) -> Tensor:
    """Batched 3x3 affine matrices ``[[a, b, tx], [c, d, ty], [0, 0, 1]]``."""
    z, o = torch.zeros_like(a), torch.ones_like(a)
    return torch.stack([torch.stack([a, b, tx], -1), torch.stack([c, d, ty], -1), torch.stack([z, z, o], -1)], -2)


def _rot(cos: Tensor, sin: Tensor) -> Tensor:
    z = torch.zeros_like(cos)
    return _mat2(cos, -sin, sin, cos, z, z)


# ---------------------------------------------------------------------------------------------- the pipeline


class AdaAugment(nn.Module):
    """The ADA pipeline with probability ``p``, as an ``aug(x, generator=None)`` module (no parameters).

    Args:
        settings: an :class:`AdaSettings` (validated here), or None for the defaults (adaptive ``bgc``).

    Attributes:
        p: the current augmentation probability in [0, 1]; the :class:`ADAController` moves it in adaptive mode.
        settings: the settings; ``adaptive``, ``target``, ``interval``, ``kimg`` configure the controller.
        transforms: the transform names, in application order.
        strengths: :data:`STRENGTHS` with the settings' overrides.
        spec: the canonical ``build_augment`` string (``"ada:bgc"``, ``"ada:bgc:p=0.3"``, ...).
        last_params: per-sample parameters of the last call (CPU tensors keyed by transform; identity values
            where a transform was not applied): ``xflip`` {0, 1}, ``rotate90`` k, ``xint`` pixels [N, 2] (x, y),
            ``scale``, ``rotate`` radians [N, 2] (pre, post), ``aniso``, ``xfrac`` pixels [N, 2], ``brightness``,
            ``contrast``, ``lumaflip``, ``hue`` radians, ``saturation``, ``imgfilter`` gains [N, 4], ``noise``
            std, ``cutout`` centre [N, 2] in [0, 1] (NaN where not applied). Empty when p = 0.

    Raises:
        ValueError: invalid settings.

    Example:
        >>> aug = AdaAugment(AdaSettings(pipeline="bgc", p=0.5))
        >>> y = aug(torch.zeros(4, 3, 16, 16), generator=torch.Generator().manual_seed(0))
    """

    def __init__(self, settings: AdaSettings | None = None) -> None:
        super().__init__()
        self.settings = (settings or AdaSettings()).validate()
        self.transforms = parse_pipeline(self.settings.pipeline)
        self.strengths = {**STRENGTHS, **self.settings.strengths}
        self.p = float(self.settings.p) if self.settings.p is not None else 0.0
        self.spec = self.settings.spec
        self.last_params: dict[str, Tensor] = {}
        self._diffaug = None
        if self.settings.diffaug is not None:
            from .diffaug import DiffAugmentModule

            self._diffaug = DiffAugmentModule(self.settings.diffaug.replace("+", ","))

    @property
    def adaptive(self) -> bool:
        """True when the controller moves p (no fixed p in the settings)."""
        return self.settings.adaptive

    def with_p(self, p: float) -> AdaAugment:
        """A copy in fixed mode at probability ``p`` (e.g. for previews).

        Raises:
            ValueError: p outside [0, 1].
        """
        return AdaAugment(replace(self.settings, p=float(p), target=AdaSettings.target,
                                  interval=AdaSettings.interval, kimg=AdaSettings.kimg))

    def extra_repr(self) -> str:
        return f"spec={self.spec!r}, p={self.p:.4f}"

    # -- the call ------------------------------------------------------------------------------------------------------
    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Augment float ``[N, C, H, W]`` images (nominally in [-1, 1]); differentiable in ``x``.

        Args:
            x: float images; any C for geometric/filter/noise/cutout transforms, C in {1, 3} for colour.
            generator: optional ``torch.Generator`` for reproducible draws (numbers are drawn on its device and
                moved to ``x.device``); None = torch's global RNG on ``x.device``.

        Returns:
            float ``[N, C, H, W]``, same dtype and device; ``x`` itself when p = 0 (exact identity). Values are not
            clamped. DiffAugment (if explicitly requested) follows ADA.

        Raises:
            ValueError: ``x`` not a 4-D float tensor, or colour transforms on images with C not in {1, 3}.
        """
        if not isinstance(x, Tensor) or x.dim() != 4 or not x.is_floating_point():
            desc = f"{tuple(x.shape)} {x.dtype}" if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"ADA expects a float tensor [N, C, H, W]; got {desc}")
        self.last_params = {}
        if self.p > 0 and self.transforms:
            x = self._ada(x, generator)
        if self._diffaug is not None:
            x = self._diffaug(x, generator=generator)
        return x

    def _ada(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        n, c, h, w = x.shape
        t, s, p = set(self.transforms), self.strengths, self.p
        r = _Draw(n, generator, x.device)
        rec: dict[str, Tensor] = {}
        geom = [k for k in TRANSFORMS[:7] if k in t]
        if geom:
            x = self._warp(x, self._geometry(r, t, s, p, h, w, rec))
        if t & set(GROUPS["c"]):
            if c not in (1, 2, 3, 4):
                raise ValueError(f"ADA colour transforms need 1 or 3 channels (2 or 4 with alpha last), got {c}; use "
                                 "a pipeline without c (e.g. ada:bg)")
            A, b = self._color(r, t, s, p, rec)
            A, b = A.to(x.device, x.dtype), b.to(x.device, x.dtype)
            if c in (2, 4):  # alpha last (data.background=keep-alpha): colour transforms leave it alone
                x = torch.cat([self._apply_color(x[:, :-1], A, b), x[:, -1:]], dim=1)
            else:
                x = self._apply_color(x, A, b)
        if "imgfilter" in t:
            x = self._imgfilter(x, r, s, p, rec)
        if "noise" in t:
            sigma = torch.where(r.gate(p), r.randn().abs() * s["noise_std"], torch.zeros(n, device=r.device))
            rec["noise"] = sigma
            noise = torch.randn(x.shape, generator=generator, device=r.device).to(x.device, x.dtype)
            x = x + noise * sigma.to(x.device, x.dtype).view(n, 1, 1, 1)
        if "cutout" in t:
            on = r.gate(p)
            centre = r.rand(2)
            size = torch.where(on, torch.full((n,), s["cutout_size"], device=r.device), torch.zeros(n, device=r.device))
            rec["cutout"] = torch.where(on[:, None], centre, torch.full_like(centre, float("nan")))
            cy = (torch.arange(h, device=x.device, dtype=x.dtype) + 0.5) / h
            cx = (torch.arange(w, device=x.device, dtype=x.dtype) + 0.5) / w
            centre, size = centre.to(x.device, x.dtype), size.to(x.device, x.dtype)
            out_x = (cx.view(1, w) - centre[:, :1]).abs() >= size.view(n, 1) / 2  # [N, W]
            out_y = (cy.view(1, h) - centre[:, 1:]).abs() >= size.view(n, 1) / 2  # [N, H]
            keep = out_x.view(n, 1, 1, w) | out_y.view(n, 1, h, 1)
            x = x * keep.to(x.dtype)
        self.last_params = {k: v.detach().cpu() for k, v in rec.items()}
        return x

    # -- geometry ------------------------------------------------------------------------------------------------------
    @staticmethod
    def _geometry(r: _Draw, t: set, s: dict, p: float, h: int, w: int, rec: dict) -> Tensor:
        """The sampling matrix S [N, 3, 3] (output pixel-centred coordinates -> input coordinates, pixels).

        S is the inverse of the forward transform ``T_k ... T_1``: ``S = T_1^-1 T_2^-1 ... T_k^-1``.
        """
        n, dev = r.n, r.device
        S = _eye(n, 3, dev)
        zero, one = torch.zeros(n, device=dev), torch.ones(n, device=dev)
        if "xflip" in t:
            i = torch.where(r.gate(p), r.randint(2), torch.zeros(n, dtype=torch.long, device=dev)).float()
            rec["xflip"] = i
            S = S @ _mat2(1 - 2 * i, zero, zero, one, zero, zero)  # its own inverse
        if "rotate90" in t:
            k = torch.where(r.gate(p), r.randint(4), torch.zeros(n, dtype=torch.long, device=dev))
            rec["rotate90"] = k.float()
            cos = torch.tensor([1.0, 0.0, -1.0, 0.0], device=dev)[k]  # exact cos/sin of k * 90 degrees
            sin = torch.tensor([0.0, 1.0, 0.0, -1.0], device=dev)[k]
            S = S @ _rot(cos, -sin)  # inverse rotation
        if "xint" in t:
            on = r.gate(p)
            u = (r.rand(2) * 2 - 1) * s["xint_max"]
            shift = torch.where(on[:, None], torch.round(u * torch.tensor([w, h], device=dev)), torch.zeros_like(u))
            rec["xint"] = shift
            S = S @ _mat2(one, zero, zero, one, -shift[:, 0], -shift[:, 1])
        if "scale" in t:
            sc = torch.where(r.gate(p), torch.exp2(r.randn() * s["scale_std"]), one)
            rec["scale"] = sc
            S = S @ _mat2(1 / sc, zero, zero, 1 / sc, zero, zero)
        p_rot = 1 - math.sqrt(max(1.0 - p, 0.0))
        angles = []

        def rotate(S: Tensor) -> Tensor:
            th = torch.where(r.gate(p_rot), (r.rand() * 2 - 1) * math.pi * s["rotate_max"], zero)
            angles.append(th)
            return S @ _rot(torch.cos(th), -torch.sin(th))

        if "rotate" in t:
            S = rotate(S)
        if "aniso" in t:
            a = torch.where(r.gate(p), torch.exp2(r.randn() * s["aniso_std"]), one)
            rec["aniso"] = a
            S = S @ _mat2(1 / a, zero, zero, a, zero, zero)
        if "rotate" in t:
            S = rotate(S)
            rec["rotate"] = torch.stack(angles, 1)
        if "xfrac" in t:
            on = r.gate(p)
            u = r.randn(2) * s["xfrac_std"] * torch.tensor([w, h], device=dev)
            shift = torch.where(on[:, None], u, torch.zeros_like(u))
            rec["xfrac"] = shift
            S = S @ _mat2(one, zero, zero, one, -shift[:, 0], -shift[:, 1])
        return S

    @staticmethod
    def _warp(x: Tensor, S: Tensor) -> Tensor:
        """Resample ``x`` at ``S @ q`` for every output pixel centre q (bilinear, reflection padding)."""
        n, _, h, w = x.shape
        if torch.equal(S, _eye(n, 3, S.device)):
            return x  # no sample transformed: exact identity
        # pixel-centred coordinates (units: pixels) -> grid_sample's normalised coordinates (align_corners=False)
        N = torch.diag(torch.tensor([2.0 / w, 2.0 / h, 1.0], device=S.device))
        N_inv = torch.diag(torch.tensor([w / 2.0, h / 2.0, 1.0], device=S.device))
        theta = (N @ S @ N_inv)[:, :2, :].to(x.device, x.dtype)
        grid = F.affine_grid(theta, [n, x.shape[1], h, w], align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    # -- colour --------------------------------------------------------------------------------------------------------
    @staticmethod
    def _color(r: _Draw, t: set, s: dict, p: float, rec: dict) -> tuple[Tensor, Tensor]:
        """The colour transform ``rgb -> A @ rgb + b`` per sample: A [N, 3, 3], b [N, 3]."""
        n, dev = r.n, r.device
        A, b = _eye(n, 3, dev), torch.zeros(n, 3, device=dev)
        zero, one = torch.zeros(n, device=dev), torch.ones(n, device=dev)
        v = torch.full((3,), 1.0 / math.sqrt(3.0), device=dev)
        vv = torch.outer(v, v)
        eye = torch.eye(3, device=dev)

        def then(M: Tensor, t_: Tensor | None = None) -> None:  # compose: apply (M, t_) after (A, b)
            nonlocal A, b
            A = M @ A
            b = (M @ b.unsqueeze(-1)).squeeze(-1) + (t_ if t_ is not None else 0)

        if "brightness" in t:
            br = torch.where(r.gate(p), r.randn() * s["brightness_std"], zero)
            rec["brightness"] = br
            then(eye.expand(n, 3, 3), br[:, None].expand(n, 3))
        if "contrast" in t:
            ct = torch.where(r.gate(p), torch.exp2(r.randn() * s["contrast_std"]), one)
            rec["contrast"] = ct
            then(eye * ct.view(n, 1, 1))
        if "lumaflip" in t:
            i = torch.where(r.gate(p), r.randint(2), torch.zeros(n, dtype=torch.long, device=dev)).float()
            rec["lumaflip"] = i
            then(eye - 2 * vv * i.view(n, 1, 1))  # Householder reflection along v
        if "hue" in t:
            th = torch.where(r.gate(p), (r.rand() * 2 - 1) * math.pi * s["hue_max"], zero)
            rec["hue"] = th
            cross = torch.tensor([[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]], device=dev) / math.sqrt(3.0)
            cos, sin = torch.cos(th).view(n, 1, 1), torch.sin(th).view(n, 1, 1)
            then(cos * eye + sin * cross + (1 - cos) * vv)  # Rodrigues: rotation about v by th
        if "saturation" in t:
            sat = torch.where(r.gate(p), torch.exp2(r.randn() * s["saturation_std"]), one)
            rec["saturation"] = sat
            then(vv + (eye - vv) * sat.view(n, 1, 1))
        return A, b

    @staticmethod
    def _apply_color(x: Tensor, A: Tensor, b: Tensor) -> Tensor:
        n, c = x.shape[:2]
        if c == 3:
            return torch.einsum("nij,njhw->nihw", A, x) + b.view(n, 3, 1, 1)
        # grey: replicate to RGB, transform, average back: g * mean_i(sum_j A_ij) + mean_i(b_i)
        return x * A.sum(2).mean(1).view(n, 1, 1, 1) + b.mean(1).view(n, 1, 1, 1)

    # -- image-space filtering -----------------------------------------------------------------------------------------
    @staticmethod
    def _imgfilter(x: Tensor, r: _Draw, s: dict, p: float, rec: dict) -> Tensor:
        n, h, w = x.shape[0], x.shape[2], x.shape[3]
        power = torch.tensor(_BAND_POWER, device=r.device)
        g = torch.ones(n, 4, device=r.device)
        for i in range(4):  # one band at a time, renormalised to keep the expected power (paper, Appendix B)
            t_i = torch.where(r.gate(p), torch.exp2(r.randn() * s["imgfilter_std"]), torch.ones(n, device=r.device))
            t = torch.ones(n, 4, device=r.device)
            t[:, i] = t_i
            t = t / (power * t * t).sum(1, keepdim=True).sqrt()
            g = g * t
        rec["imgfilter"] = g
        if torch.equal(g, torch.ones_like(g)):
            return x
        ph, pw = h // 2, w // 2
        xp = F.pad(x, (pw, pw, ph, ph), mode="reflect") if min(h, w) > 1 else x
        H, W = xp.shape[-2:]
        fy = torch.fft.fftfreq(H, device=x.device).abs().view(H, 1)
        fx = torch.fft.rfftfreq(W, device=x.device).view(1, -1)
        radius = torch.sqrt(fy * fy + fx * fx).clamp(min=2.0 ** _BANDS_LOG2[0], max=2.0 ** _BANDS_LOG2[-1])
        # gain linear in log-frequency between the band centres (piecewise-linear interpolation of log2 gains)
        pos = (torch.log2(radius) - _BANDS_LOG2[0]).clamp(0, 3)  # 0..3
        lo = pos.floor().long().clamp(max=2)
        frac = (pos - lo).to(x.dtype)
        lg = torch.log2(g).to(x.device, x.dtype)  # [N, 4]
        gain = torch.exp2(lg[:, lo] * (1 - frac) + lg[:, lo + 1] * frac)  # [N, H, W/2+1]
        spec = torch.fft.rfft2(xp.float()) * gain.float().unsqueeze(1)
        out = torch.fft.irfft2(spec, s=(H, W)).to(x.dtype)
        return out[..., ph:ph + h, pw:pw + w] if min(h, w) > 1 else out


# ---------------------------------------------------------------------------------------------- adaptive p


class ADAController:
    """Adaptive p of ADA (paper section 2.3), a training callback with checkpointed state.

    Every D step feeds ``r_t = E[sign(D(real_aug))]`` of its ``n`` augmented reals (:meth:`observe`). After
    ``interval`` D steps, p moves by ``sign(r - target) * n_sum / (kimg * 1000)`` with ``r`` the mean sign over
    those steps' reals and ``n_sum`` their number (``= batch * interval``), then is clamped to [0, 1]. In fixed mode
    p never moves; r_t is still measured and logged.

    Feeding: wrap the objective with :meth:`wrap` (every D step observed, as in the paper). Without the wrapper,
    :meth:`on_step_end` observes the iteration's ``stats["r_t"]`` (the last D step's; with ``n_dis > 1`` the others
    are not seen) weighted by all reals of the iteration, and ``interval`` then counts iterations.

    Logged per iteration into ``stats``: ``ada_p`` (p after this iteration) and ``ada_rt`` (mean sign over this
    iteration's observed reals). Use as a :class:`~degan.train.loop.Callback` and put it in
    ``TrainState.extras`` so p and the accumulators survive a resume.

    Args:
        augment: the :class:`AdaAugment` whose ``p`` is controlled.
        target: r_t target in (0, 1), default the augment's (paper 0.6).
        interval: D steps per update, default the augment's (paper 4).
        kimg: p's speed, thousands of reals for a 0 -> 1 move, default the augment's (paper 500).
        adaptive: move p; default the augment's mode.

    Raises:
        ValueError: target outside (0, 1), interval < 1, kimg <= 0.
    """

    def __init__(self, augment: AdaAugment, target: float | None = None, interval: int | None = None,
                 kimg: float | None = None, adaptive: bool | None = None) -> None:
        st = augment.settings
        self.augment = augment
        self.target = float(st.target if target is None else target)
        self.interval = int(st.interval if interval is None else interval)
        self.kimg = float(st.kimg if kimg is None else kimg)
        self.adaptive = st.adaptive if adaptive is None else bool(adaptive)
        AdaSettings(pipeline=st.pipeline, target=self.target, interval=self.interval, kimg=self.kimg).validate()
        self._sign_sum, self._n_sum, self._steps = 0.0, 0, 0  # current interval
        self._it_sign, self._it_n = 0.0, 0  # current iteration (for logging)
        self.last_rt: float | None = None  # r_t of the last completed interval
        self.updates = 0
        self._fed_by_wrapper = False
        self._last_nimg: int | None = None

    @property
    def p(self) -> float:
        return self.augment.p

    @p.setter
    def p(self, value: float) -> None:
        self.augment.p = float(value)

    def observe(self, r_t: float, n: int) -> None:
        """Account one D step: ``r_t`` = mean sign of D's logits on its ``n`` augmented reals (in [-1, 1]).

        Raises:
            ValueError: ``n`` < 1 or ``r_t`` outside [-1, 1] / not finite.
        """
        if n < 1 or not (-1.0 <= r_t <= 1.0):
            raise ValueError(f"observe(r_t={r_t}, n={n}): r_t must be in [-1, 1] and n >= 1")
        self._sign_sum += r_t * n
        self._n_sum += int(n)
        self._steps += 1
        self._it_sign += r_t * n
        self._it_n += int(n)
        if self._steps >= self.interval:
            r = self._sign_sum / self._n_sum
            self.last_rt = r
            if self.adaptive:
                step = ((r > self.target) - (r < self.target)) * self._n_sum / (self.kimg * 1000.0)
                self.p = min(max(self.p + step, 0.0), 1.0)
                self.updates += 1
            self._sign_sum, self._n_sum, self._steps = 0.0, 0, 0

    def wrap(self, objective: Any) -> ADAObjective:
        """The objective with every D step's ``r_t`` fed to this controller."""
        self._fed_by_wrapper = True
        return ADAObjective(objective, self)

    # -- Callback hooks (duck-typed: Trainer only calls them) ------------------------------------------------------------
    def on_train_start(self, trainer: Any) -> None:
        self._last_nimg = trainer.state.cur_nimg

    def on_step_end(self, trainer: Any, stats: dict[str, float]) -> None:
        nimg = trainer.state.cur_nimg
        if not self._fed_by_wrapper and "r_t" in stats:
            self.observe(float(stats["r_t"]), max(1, nimg - (self._last_nimg if self._last_nimg is not None else 0)))
        self._last_nimg = nimg
        stats["ada_p"] = self.p
        if self._it_n:
            stats["ada_rt"] = self._it_sign / self._it_n
        self._it_sign, self._it_n = 0.0, 0

    def on_train_end(self, trainer: Any) -> None:
        pass

    # -- checkpoint state ----------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Plain values: p, the interval accumulators, the last r_t and the number of updates."""
        return {"p": self.p, "sign_sum": self._sign_sum, "n_sum": self._n_sum, "steps": self._steps,
                "last_rt": self.last_rt, "updates": self.updates, "spec": self.augment.spec}

    def load_state_dict(self, sd: dict) -> None:
        """Restore :meth:`state_dict` (p is written into the augment)."""
        self.p = float(sd["p"])
        self._sign_sum, self._n_sum, self._steps = float(sd["sign_sum"]), int(sd["n_sum"]), int(sd["steps"])
        self.last_rt = None if sd.get("last_rt") is None else float(sd["last_rt"])
        self.updates = int(sd.get("updates", 0))


class ADAObjective(ObjectiveWrapper):
    """Delegates to ``objective`` and feeds each D step's ``r_t`` (and real batch size) to an :class:`ADAController`.

    Args:
        objective: a GAN objective whose ``d_loss`` stats hold ``r_t`` (every objective of degan does).
        controller: the controller to feed.
    """

    def __init__(self, objective: Any, controller: ADAController) -> None:
        super().__init__(objective)
        self.controller = controller

    def d_loss(self, G: nn.Module, D: nn.Module, real: Tensor, z: Tensor,
               generator: torch.Generator | None = None, **kwargs) -> tuple[Tensor, dict[str, float]]:
        loss, stats = self.objective.d_loss(G, D, real, z, generator, **kwargs)
        if "r_t" not in stats:
            raise RuntimeError("the wrapped objective's d_loss stats have no r_t; ADA needs the mean sign of D's "
                               "logits on the augmented reals")
        from ..train.distributed import global_mean_and_count

        # DDP: r_t over the global batch (every rank then moves p identically)
        self.controller.observe(*global_mean_and_count(float(stats["r_t"]), int(real.shape[0])))
        return loss, stats


# ---------------------------------------------------------------------------------------------- the p curve


def ada_rows(stats_path: str | Path) -> list[dict]:
    """Rows ``{kimg, p, r_t}`` of a stage's ``stats.jsonl`` (lines written while ADA ran; r_t may be None)."""
    from ..fileio import read_jsonl

    path = Path(stats_path)
    if not path.is_file():
        return []
    return [{"kimg": r["kimg"], "p": r["ada_p"], "r_t": r.get("ada_rt")} for r in read_jsonl(path) if "ada_p" in r]


def plot_ada(stats_path: str | Path, out_png: str | Path, target: float | None = None) -> tuple[Path, Path] | None:
    """Plot ADA's p (left axis) and r_t (right axis, with the target) over kimg; write the PNG and a CSV beside it.

    Args:
        stats_path: a stage's ``stats.jsonl`` with ``ada_p`` / ``ada_rt`` columns (logged by :class:`ADAController`).
        out_png: the PNG to write; the CSV gets the same name with ``.csv``.
        target: r_t target drawn as a dashed line (None: not drawn).

    Returns:
        ``(png, csv)``, or None when the log has no ADA rows (nothing is written).
    """
    import csv
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ..fileio import atomic_path, write_text

    rows = ada_rows(stats_path)
    if not rows:
        return None
    out_png = Path(out_png)
    csv_path = out_png.with_suffix(".csv")
    buf = io.StringIO()
    wr = csv.DictWriter(buf, fieldnames=["kimg", "p", "r_t"], lineterminator="\n")
    wr.writeheader()
    for r in rows:
        wr.writerow({k: ("" if r[k] is None else r[k]) for k in ("kimg", "p", "r_t")})
    write_text(csv_path, buf.getvalue())
    fig = Figure(figsize=(6.4, 3.6))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.plot([r["kimg"] for r in rows], [r["p"] for r in rows], color="tab:blue", lw=1.8, label="p")
    ax.set_xlabel("kimg (real images shown to D / 1000)")
    ax.set_ylabel("ADA p", color="tab:blue")
    ax.set_ylim(-0.02, max(0.1, max(r["p"] for r in rows) * 1.1))
    ax.grid(alpha=0.3)
    pts = [(r["kimg"], r["r_t"]) for r in rows if r["r_t"] is not None]
    if pts:
        ax2 = ax.twinx()
        ax2.plot(*zip(*pts), color="tab:orange", lw=1.0, alpha=0.8, label="r_t")
        if target is not None:
            ax2.axhline(target, color="tab:orange", ls="--", lw=0.8)
        ax2.set_ylabel("r_t = E[sign D(real)]" + (f" (target {target:g})" if target is not None else ""),
                       color="tab:orange")
        ax2.set_ylim(-1.05, 1.05)
    ax.set_title("ADA: augmentation probability p and overfitting heuristic r_t")
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    return out_png, csv_path


def _warn_combined(settings: AdaSettings) -> None:
    warnings.warn(
        f"ADA and DiffAugment in the same D pass (explicitly asked by {settings.spec!r}): every image D sees goes "
        f"through ADA (each transform with probability p) and then always through DiffAugment "
        f"({settings.diffaug}); r_t and hence the adaptive p measure the overfitting left after both", stacklevel=3)


def make_ada(arg: str | None) -> AdaAugment:
    """The ``build_augment`` factory of ``"ada[:<pipeline>][:<options>]"`` (see :func:`parse_ada_spec`)."""
    settings = parse_ada_spec(arg)
    if settings.diffaug is not None:
        _warn_combined(settings)
    return AdaAugment(settings)



# ---------------------------------------------------------------------------------------------- leak check


LEAK_P = 0.5
"""``degan eval`` runs :func:`leak_statistics` on stages whose final ADA p reached this value (the paper sees leaks
of some transforms from p ~ 0.8 on; checking earlier is cheap)."""


def _dihedral(x: Tensor) -> list[Tensor]:
    """The 8 flips/rotations of square images [N, C, S, S]: rot90 k = 0..3, then the same of the x-flipped images."""
    return [torch.rot90(x, k, dims=(2, 3)) for k in range(4)] + [torch.rot90(x.flip(3), k, dims=(2, 3))
                                                                  for k in range(4)]


def leak_statistics(reals: Tensor, fakes: Tensor) -> dict:
    """Statistics that show augmentation leaking into generated images, for reals and fakes side by side.

    A leak means G reproduces the augmentation (rotated, flipped or recoloured samples) because D could not tell
    augmented reals from augmented fakes (Karras et al. 2020, section 2.2). Measured here, each for reals and fakes:

    - ``rotated``: fraction of images whose best match among the 8 flips/rotations of the mean real image (cosine
      similarity of mean-free images) is a 90/180/270-degree rotation rather than the upright or mirrored one. A
      rotation leak raises it for fakes (needs square images).
    - ``brightness_mean`` / ``brightness_std``: mean and spread over images of the per-image mean value in [-1, 1].
    - ``contrast_mean`` / ``contrast_std``: mean and spread of the per-image standard deviation.
    - ``saturation_mean``: mean distance of pixels from grey (RGB only).
    - ``luma_inverted``: fraction of images anti-correlated with the mean real image (a luma-flip leak).

    ``suspect`` lists the statistics where the fakes depart from the reals by more than a simple margin (absolute
    0.1 for fractions, a ratio of 1.5 for spreads). These are heuristics for a look at the samples, not a test.

    Args:
        reals: uint8 [N, C, S, S] training images.
        fakes: uint8 [M, C, S, S] generated images (same C and size).

    Returns:
        ``{"reals": {...}, "fakes": {...}, "suspect": [names]}`` with plain floats.

    Raises:
        ValueError: not uint8 NCHW of equal channel count and size.
    """
    for name, t in (("reals", reals), ("fakes", fakes)):
        if t.dtype != torch.uint8 or t.dim() != 4:
            raise ValueError(f"leak_statistics expects uint8 [N, C, H, W] {name}, got {t.dtype} {tuple(t.shape)}")
    if reals.shape[1:] != fakes.shape[1:]:
        raise ValueError(f"reals {tuple(reals.shape[1:])} and fakes {tuple(fakes.shape[1:])} differ in shape")
    r, f = reals.float() / 127.5 - 1, fakes.float() / 127.5 - 1
    template = r.mean(0, keepdim=True)
    square = r.shape[2] == r.shape[3]
    variants = _dihedral(template) if square else [template, template.flip(3)]
    bank = torch.cat([v - v.mean() for v in variants]).flatten(1)
    bank = bank / bank.norm(dim=1, keepdim=True).clamp(min=1e-8)

    def stats(x: Tensor) -> dict:
        xc = (x - x.mean((1, 2, 3), keepdim=True)).flatten(1)
        xc = xc / xc.norm(dim=1, keepdim=True).clamp(min=1e-8)
        sim = xc @ bank.T  # [N, 8]
        best = sim.argmax(1)
        rotated = ((best % 4) != 0).float().mean().item() if square else float("nan")
        out = {"rotated": rotated, "luma_inverted": (sim[:, 0] < 0).float().mean().item(),
               "brightness_mean": x.mean((1, 2, 3)).mean().item(), "brightness_std": x.mean((1, 2, 3)).std().item(),
               "contrast_mean": x.std((1, 2, 3)).mean().item(), "contrast_std": x.std((1, 2, 3)).std().item()}
        if x.shape[1] == 3:
            out["saturation_mean"] = (x - x.mean(1, keepdim=True)).abs().mean().item()
        return out

    sr, sf = stats(r), stats(f)
    suspect = [k for k in ("rotated", "luma_inverted") if math.isfinite(sr[k]) and sf[k] - sr[k] > 0.1]
    suspect += [k for k in ("brightness_std", "contrast_std") if sf[k] > 1.5 * max(sr[k], 1e-6)]
    if "saturation_mean" in sr and sf["saturation_mean"] > 1.5 * max(sr["saturation_mean"], 1e-6):
        suspect.append("saturation_mean")
    return {"reals": sr, "fakes": sf, "suspect": suspect}
