"""ProGAN (``progan``): progressively grown generator and discriminator with pixel norm, equalised learning rate and
minibatch standard deviation.

Source: T. Karras, T. Aila, S. Laine, J. Lehtinen. *Progressive Growing of GANs for Improved Quality, Stability, and
Variation*. ICLR 2018, arXiv:1710.10196 (sections 2-4, Table 2, Appendix A). Written from the paper and SPEC.md
section 9; no code copied.

Layers (``R`` = resolution, ``ch(r) = max(1, int(min(channel_base / r, channel_max) * width))``: 512 at 4..32 px,
then 256, 128, 64, 32, 16 at 64..1024 px with the defaults ``channel_base = 16384``, ``channel_max = 512``, as the
paper's Table 2):

- G ``input_layer``: z ``[N, z_dim]`` (+ a class embedding when conditional) -> pixel norm -> equalised dense to
  ``ch(4) x 4 x 4`` (the paper's "conv 4x4" on a 1x1 latent) + bias per channel -> LeakyReLU(0.2) -> pixel norm.
- G ``synthesis``: conv3x3 at 4x4, then one block per doubling 8..R: nearest x2 -> conv3x3 -> LReLU -> PN -> conv3x3
  -> LReLU -> PN; a 1x1 ``to_rgb[r]`` (linear) at every resolution r in 4..R.
- D: a 1x1 ``from_rgb[r]`` (+ LReLU) at every resolution; one block per halving R..8: conv3x3 ``ch(r) -> ch(r)`` ->
  LReLU -> conv3x3 ``ch(r) -> ch(r/2)`` -> LReLU -> 2x2 average pooling; at 4x4: minibatch stddev (one channel,
  group ``min(4, N)``) -> conv3x3 -> LReLU -> conv4x4 (valid) -> LReLU = ``D.features`` ``[N, ch(4)]``; ``D.head``
  (``D.out``) a linear to one logit (+ the projection term ``<embed(c), f>`` when conditional).
- Equalised learning rate (paper section 4.1): every weight is stored N(0, 1) and multiplied at use by
  ``gain / sqrt(fan_in)`` (gain sqrt(2); 1 for ``to_rgb`` and the final linear); biases start at 0. The layers
  read ``self.weight``, so lottery-ticket masks and RG-GAN's dynamic masks (weight parametrizations) act on the
  stored weight before the gain. No spectral norm (the paper has none), so ``create_model(spectral_norm=...)``
  changes nothing here.
- Pixel norm (section 4.2): ``x / sqrt(mean_c x^2 + 1e-8)`` after every conv of G.

**Growth state and the fixed-size contract.** Both networks hold two buffers, ``grow_resolution`` (long scalar, the
current level r in 4..R) and ``grow_alpha`` (float scalar in [0, 1], the fade-in weight of level r), which go into
their ``state_dict`` (checkpoints, G_ema files). A freshly built pair is fully grown (``(R, 1.0)``), so without the
growing schedule ProGAN trains at full resolution like any other family. :meth:`ProGANGenerator.set_growth` /
:meth:`ProGANDiscriminator.set_growth` move them; the ``grow`` technique (:mod:`degan.train.grow`) does that from
``cur_nimg``. Whatever the level, the interface stays that of every degan family:

- ``G(z)`` is float ``[N, C, R, R]``: G runs the blocks up to r, its image at r is
  ``alpha * to_rgb[r](x_r) + (1 - alpha) * up2(to_rgb[r/2](x_{r/2}))`` (paper Fig. 2), and it is up-sampled to R by
  nearest-neighbour repetition (then tanh). So metrics, sample grids, augmentation and D always see R x R images.
- ``D(x)`` takes ``[N, C, R, R]``, average-pools it to r (exact for G's output, which is constant on r-blocks) and runs
  from ``from_rgb[r]``; during a fade the output of block r is blended with ``from_rgb[r/2]`` of the image pooled to
  r/2, with the same alpha.
- The reals are shown to D through :func:`progressive_view` (pool to r, blend with their r/2 version by alpha, nearest
  up to R): the same low-pass and blend as G's output (SPEC section 9). The ``grow`` technique applies it to the reals
  of every D step before any other term sees them.

Deviations from the paper, by choice:

- **tanh output** (``tanh_output=True``, the degan contract: images in [-1, 1]); the paper's G output is linear
  (``tanh_output=False`` restores it; images may then leave [-1, 1]).
- **Fixed-size tensors.** The paper's networks change input/output size per level; here they work at R and pool /
  repeat, as the authors' released code does (``lod`` input), so nothing else in degan needs to know about levels.
- **Dense 4x4 layer.** Gain sqrt(2) like every other layer (He init); the released code uses sqrt(2) / 4 there.
- **Conditional** (``num_classes > 0``, the paper's CIFAR-10 runs concatenate a one-hot label): G concatenates a
  learned class embedding (size z_dim) to z; D adds a projection term (Miyato & Koyama 2018) instead of an auxiliary
  classifier.
- Unused layers: at level r < R the blocks above r (and every ``to_rgb`` / ``from_rgb`` but r and r/2) get no
  gradient, so Adam leaves them alone, as in the paper (they are not yet in the network).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from degan.models.registry import register_model
from degan.models.layers import DiscriminatorBase, GeneratorBase, check_common_options, check_labels, up2
from degan.models.stylegan2 import minibatch_stddev

__all__ = ["EqualizedConv2d", "EqualizedLinear", "ProGANDiscriminator", "ProGANGenerator", "RESOLUTIONS",
           "pixel_norm", "progan", "progan_channels", "progressive_view"]

RESOLUTIONS = (8, 16, 32, 64, 128, 256, 512, 1024)
SQRT2 = math.sqrt(2.0)


# ---------------------------------------------------------------------------------------------- helpers, math


def progan_channels(resolution: int, width: float = 1.0, channel_base: int = 16384, channel_max: int = 512) -> int:
    """Channels of the maps at side ``resolution``: ``max(1, int(min(channel_base / r, channel_max) * width))``."""
    return max(1, int(min(channel_base / resolution, channel_max) * width))


def pixel_norm(x: Tensor, eps: float = 1e-8) -> Tensor:
    """Pixelwise feature normalisation (paper section 4.2): ``x / sqrt(mean over channels of x^2 + eps)``, any
    ``[N, C, ...]`` float tensor."""
    return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + eps)


def _lrelu(x: Tensor) -> Tensor:
    return F.leaky_relu(x, 0.2)


def _resize_nearest(x: Tensor, size: int) -> Tensor:
    """Square maps up to side ``size`` by repeating each pixel (``size`` a multiple of the side)."""
    f = size // x.shape[-1]
    if f == 1:
        return x
    n, c, h, w = x.shape
    return x[:, :, :, None, :, None].expand(n, c, h, f, w, f).reshape(n, c, h * f, w * f)


def _pool(x: Tensor, size: int) -> Tensor:
    """Square maps down to side ``size`` by averaging ``k x k`` blocks (``k = side / size``)."""
    k = x.shape[-1] // size
    return x if k == 1 else F.avg_pool2d(x, k)


def progressive_view(x: Tensor, resolution: int, alpha: float) -> Tensor:
    """Images as the networks see them at growth level ``(resolution, alpha)``: the reals' side of the fade-in.

    ``x`` is average-pooled to ``resolution`` (r); when ``alpha < 1`` it becomes
    ``alpha * x_r + (1 - alpha) * up2(pool2(x_r))`` (the blend of G's output, paper Fig. 2 and SPEC section 9); the
    result is repeated up to the input's side, so the shape is unchanged. ``(R, 1.0)`` returns ``x`` itself.

    Args:
        x: float ``[N, C, R, R]`` (R a power-of-two multiple of ``resolution``), e.g. reals in [-1, 1].
        resolution: r, a power of two in ``4 .. R``.
        alpha: fade-in weight in [0, 1].

    Returns:
        float ``[N, C, R, R]``, constant on r x r blocks; values stay within the range of ``x`` (convex blends of
        averages).

    Raises:
        ValueError: ``x`` not square 4-D, ``resolution`` not dividing its side, or ``alpha`` outside [0, 1].
    """
    if x.dim() != 4 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"x must be float [N, C, R, R]; got {tuple(x.shape)}")
    side = x.shape[-1]
    resolution = int(resolution)
    if resolution < 4 or side % resolution or (resolution & (resolution - 1)):
        raise ValueError(f"resolution must be a power of two in 4..{side}; got {resolution}")
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1]; got {alpha}")
    xr = _pool(x, resolution)
    if float(alpha) < 1.0:
        xr = torch.lerp(up2(F.avg_pool2d(xr, 2)), xr, float(alpha))
    return _resize_nearest(xr, side)


# ---------------------------------------------------------------------------------------------- layers


class EqualizedConv2d(nn.Conv2d):
    """Conv2d with equalised learning rate: weight N(0, 1), used as ``weight * gain / sqrt(c_in * k * k)``; bias 0.

    Args:
        c_in, c_out, kernel_size: as ``nn.Conv2d``.
        padding: None = ``kernel_size // 2`` ('same' for odd kernels); 0 for the valid 4x4 conv of D.
        gain: sqrt(2) (He, before LeakyReLU) or 1 (linear outputs).

    Shapes: ``[N, c_in, H, W] -> [N, c_out, H', W']``.
    """

    def __init__(self, c_in: int, c_out: int, kernel_size: int, padding: int | None = None, gain: float = SQRT2):
        super().__init__(c_in, c_out, kernel_size, padding=kernel_size // 2 if padding is None else padding)
        with torch.no_grad():
            self.weight.normal_(0.0, 1.0)
            self.bias.zero_()
        self.scale = gain / math.sqrt(c_in * kernel_size * kernel_size)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, padding=self.padding)


class EqualizedLinear(nn.Linear):
    """Linear layer with equalised learning rate: weight N(0, 1), used as ``weight * gain / sqrt(in_features)``.

    Shapes: ``[N, in_features] -> [N, out_features]``.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, gain: float = SQRT2) -> None:
        super().__init__(in_features, out_features, bias=bias)
        with torch.no_grad():
            self.weight.normal_(0.0, 1.0)
            if self.bias is not None:
                self.bias.zero_()
        self.scale = gain / math.sqrt(in_features)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.scale, self.bias)


class GBlock(nn.Module):
    """G block of side r: nearest x2 -> conv3x3 -> LReLU -> PN -> conv3x3 -> LReLU -> PN,
    ``[N, c_in, r/2, r/2] -> [N, c_out, r, r]``."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = EqualizedConv2d(c_in, c_out, 3)
        self.conv2 = EqualizedConv2d(c_out, c_out, 3)

    def forward(self, x: Tensor) -> Tensor:
        x = pixel_norm(_lrelu(self.conv1(up2(x))))
        return pixel_norm(_lrelu(self.conv2(x)))


class DBlock(nn.Module):
    """D block of side r: conv3x3 -> LReLU -> conv3x3 -> LReLU -> avgpool 2, ``[N, c_in, r, r] -> [N, c_out, r/2,
    r/2]``."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = EqualizedConv2d(c_in, c_in, 3)
        self.conv2 = EqualizedConv2d(c_in, c_out, 3)

    def forward(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(_lrelu(self.conv2(_lrelu(self.conv1(x)))), 2)


class ProGANHead(nn.Module):
    """D's last linear (gain 1) plus, when conditional, the projection term ``<embed(c), f>`` (``D.out``).

    Shapes: ``forward(f [N, F], c long [N] | None) -> [N]``.
    """

    def __init__(self, feature_dim: int, num_classes: int = 0) -> None:
        super().__init__()
        self.linear = EqualizedLinear(feature_dim, 1, gain=1.0)
        self.embed = nn.Embedding(num_classes, feature_dim) if num_classes > 0 else None
        if self.embed is not None:
            nn.init.normal_(self.embed.weight, 0.0, 1.0 / math.sqrt(feature_dim))

    def forward(self, f: Tensor, c: Tensor | None = None) -> Tensor:
        out = self.linear(f).squeeze(1)
        if self.embed is not None and c is not None:
            out = out + (self.embed(c) * f).sum(dim=1)
        return out


# ---------------------------------------------------------------------------------------------- growth state


def _check_options(resolution: int, img_channels: int, z_dim: int, width: float, num_classes: int,
                   channel_base: int, channel_max: int, mbstd_group: int) -> None:
    if resolution not in RESOLUTIONS:
        raise ValueError(f"progan resolution must be one of {', '.join(map(str, RESOLUTIONS))} (a power of two, "
                         f"grown from 4x4; the paper: up to 1024); got {resolution!r}")
    check_common_options(img_channels, z_dim, width, num_classes)
    for name, v in (("channel_base", channel_base), ("channel_max", channel_max), ("mbstd_group", mbstd_group)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an int >= 1; got {v!r}")


class _Growing:
    """Mixin: the growth buffers ``grow_resolution`` / ``grow_alpha`` and their accessors (needs ``resolution``)."""

    resolution: int

    def _init_growth(self) -> None:
        self.register_buffer("grow_resolution", torch.tensor(self.resolution, dtype=torch.long))
        self.register_buffer("grow_alpha", torch.tensor(1.0))

    @property
    def growth(self) -> tuple[int, float]:
        """The current level ``(r, alpha)``: r in 4..R (int), alpha the fade-in weight of level r in [0, 1]."""
        return int(self.grow_resolution), float(self.grow_alpha)

    @property
    def cost_state(self) -> tuple[int, bool]:
        """``(r, fading)``: what the per-sample cost depends on (read by :class:`degan.costs.FlopsMeter`)."""
        res, alpha = self.growth
        return res, alpha < 1.0

    @property
    def levels(self) -> tuple[int, ...]:
        """The resolutions this network can run at: 4, 8, ..., R."""
        return tuple(2 ** k for k in range(2, int(math.log2(self.resolution)) + 1))

    def set_growth(self, resolution: int, alpha: float = 1.0) -> None:
        """Move to level ``resolution`` with fade-in weight ``alpha`` (in place, in the buffers).

        Raises:
            ValueError: ``resolution`` not in :attr:`levels`, or ``alpha`` outside [0, 1] (a fade at 4x4, which has
                no lower level, is allowed and means nothing: alpha is stored, the 4x4 output is used as is).
        """
        if int(resolution) not in self.levels:
            raise ValueError(f"growth resolution must be one of {', '.join(map(str, self.levels))}; got {resolution!r}")
        if not 0.0 <= float(alpha) <= 1.0:
            raise ValueError(f"growth alpha must lie in [0, 1]; got {alpha!r}")
        self.grow_resolution.fill_(int(resolution))
        self.grow_alpha.fill_(float(alpha))


# ---------------------------------------------------------------------------------------------- networks


class ProGANGenerator(_Growing, GeneratorBase):
    """ProGAN generator (Karras et al., ICLR 2018, arXiv:1710.10196); see the module docstring for the layers and
    the growth state.

    Args:
        resolution: output side R: 8, 16, ..., 1024 (paper: 1024 for CelebA-HQ, 256 for LSUN, 32 for CIFAR-10).
        img_channels: 1 or 3.
        z_dim: latent size (paper: 512).
        width: channel multiplier (1.0 = the paper's Table 2).
        num_classes: 0 = unconditional; else a class embedding (size ``z_dim``) is concatenated to z.
        channel_base, channel_max: the channel schedule ``min(channel_base / r, channel_max) * width``.
        tanh_output: tanh on the output (degan's [-1, 1] contract); False = the paper's linear output.
        mbstd_group: accepted for a shared config with D; unused.

    Shapes: ``input_layer``: z float ``[N, z_dim]`` -> float ``[N, ch(4), 4, 4]``; ``synthesis``: that -> float
    ``[N, img_channels, R, R]`` (in [-1, 1] with ``tanh_output``) at every growth level.

    Raises:
        ValueError: an invalid option (e.g. a resolution not in 8..1024).
    """

    def __init__(self, *, resolution: int = 256, img_channels: int = 3, z_dim: int = 512, width: float = 1.0,
                 num_classes: int = 0, channel_base: int = 16384, channel_max: int = 512, tanh_output: bool = True,
                 mbstd_group: int = 4) -> None:
        _check_options(resolution, img_channels, z_dim, width, num_classes, channel_base, channel_max, mbstd_group)
        config = dict(resolution=resolution, img_channels=img_channels, z_dim=z_dim, width=width,
                      num_classes=num_classes, channel_base=channel_base, channel_max=channel_max,
                      tanh_output=tanh_output, mbstd_group=mbstd_group)
        super().__init__(z_dim=z_dim, resolution=resolution, img_channels=img_channels, num_classes=num_classes,
                         config=config)
        ch = lambda r: progan_channels(r, width, channel_base, channel_max)  # noqa: E731
        self.c0 = ch(4)
        self.tanh_output = bool(tanh_output)
        self.embed = nn.Embedding(num_classes, z_dim) if num_classes > 0 else None
        if self.embed is not None:
            nn.init.normal_(self.embed.weight, 0.0, 1.0)
        in_dim = z_dim * (2 if num_classes > 0 else 1)
        self.dense = EqualizedLinear(in_dim, self.c0 * 16, bias=False)
        self.bias0 = nn.Parameter(torch.zeros(self.c0))
        self.conv4 = EqualizedConv2d(self.c0, self.c0, 3)
        self._init_growth()
        self.stages = nn.ModuleDict({str(r): GBlock(ch(r // 2), ch(r)) for r in self.levels[1:]})
        self.to_rgb = nn.ModuleDict({str(r): EqualizedConv2d(ch(r), img_channels, 1, gain=1.0) for r in self.levels})

    def input_layer(self, z: Tensor, c: Tensor | None = None) -> Tensor:
        """G1 of AdvAug: float ``[N, z_dim]`` (+ long ``[N]`` labels when conditional) -> float ``[N, ch(4), 4, 4]``
        (pixel norm of z -> dense -> bias -> LReLU -> pixel norm)."""
        c = self._check_z(z, c)
        z = pixel_norm(z)
        if self.embed is not None:
            z = torch.cat([z, self.embed(c)], dim=1)
        h = self.dense(z).reshape(z.shape[0], self.c0, 4, 4) + self.bias0[None, :, None, None]
        return pixel_norm(_lrelu(h))

    def synthesis(self, h: Tensor, c: Tensor | None = None) -> Tensor:
        """G2 of AdvAug: float ``[N, ch(4), 4, 4]`` -> float ``[N, img_channels, R, R]`` at the current growth level
        (``c`` unused).

        Raises:
            ValueError: ``h`` is not ``[N, ch(4), 4, 4]``.
        """
        if h.dim() != 4 or h.shape[1:] != (self.c0, 4, 4):
            raise ValueError(f"h must be float [N, {self.c0}, 4, 4] (from input_layer); got {tuple(h.shape)}")
        res, alpha = self.growth
        x = pixel_norm(_lrelu(self.conv4(h)))
        prev = x
        for r in self.levels[1:]:
            if r > res:
                break
            prev, x = x, self.stages[str(r)](x)
        img = self.to_rgb[str(res)](x)
        if res > 4 and alpha < 1.0:
            img = torch.lerp(up2(self.to_rgb[str(res // 2)](prev)), img, alpha)
        img = _resize_nearest(img, self.resolution)
        return torch.tanh(img) if self.tanh_output else img


class ProGANDiscriminator(_Growing, DiscriminatorBase):
    """ProGAN discriminator (Karras et al., ICLR 2018, arXiv:1710.10196); see the module docstring.

    Args: as :class:`ProGANGenerator` (``z_dim`` and ``tanh_output`` accepted for a shared config and unused), plus
    ``mbstd_group``: the minibatch-stddev group size (4; ``min(4, N)`` or the largest divisor of N below it).

    Shapes: ``features``: float ``[N, img_channels, R, R]`` -> float ``[N, ch(4)]`` at the current growth level;
    ``head``: ``[N, ch(4)]`` (+ labels) -> float ``[N]`` raw scores.

    Raises:
        ValueError: an invalid option.
    """

    def __init__(self, *, resolution: int = 256, img_channels: int = 3, z_dim: int = 512, width: float = 1.0,
                 num_classes: int = 0, channel_base: int = 16384, channel_max: int = 512, tanh_output: bool = True,
                 mbstd_group: int = 4) -> None:
        _check_options(resolution, img_channels, z_dim, width, num_classes, channel_base, channel_max, mbstd_group)
        config = dict(resolution=resolution, img_channels=img_channels, z_dim=z_dim, width=width,
                      num_classes=num_classes, channel_base=channel_base, channel_max=channel_max,
                      tanh_output=tanh_output, mbstd_group=mbstd_group)
        super().__init__(resolution=resolution, img_channels=img_channels, num_classes=num_classes, config=config)
        ch = lambda r: progan_channels(r, width, channel_base, channel_max)  # noqa: E731
        self.mbstd_group = mbstd_group
        self._init_growth()
        # in the order a grown D uses its layers: from_rgb[R] first
        self.from_rgb = nn.ModuleDict({str(r): EqualizedConv2d(img_channels, ch(r), 1) for r in reversed(self.levels)})
        self.stages = nn.ModuleDict({str(r): DBlock(ch(r), ch(r // 2)) for r in reversed(self.levels[1:])})
        c4 = ch(4)
        self.conv4 = EqualizedConv2d(c4 + 1, c4, 3)
        self.conv_valid = EqualizedConv2d(c4, c4, 4, padding=0)
        self.feature_dim = c4
        self.out = ProGANHead(c4, num_classes)

    def features(self, img: Tensor, c: Tensor | None = None) -> Tensor:
        """D1 of AdvAug: float ``[N, img_channels, R, R]`` -> float ``[N, ch(4)]`` at the current growth level."""
        self._check_img(img, c)
        res, alpha = self.growth
        xr = _pool(img, res)
        h = _lrelu(self.from_rgb[str(res)](xr))
        if res > 4:
            h = self.stages[str(res)](h)
            if alpha < 1.0:
                low = _lrelu(self.from_rgb[str(res // 2)](F.avg_pool2d(xr, 2)))
                h = torch.lerp(low, h, alpha)
        for r in reversed(self.levels[1:]):
            if r < res:
                h = self.stages[str(r)](h)
        h = _lrelu(self.conv4(minibatch_stddev(h, self.mbstd_group)))
        return _lrelu(self.conv_valid(h)).flatten(1)

    def head(self, f: Tensor, c: Tensor | None = None) -> Tensor:
        """D2 of AdvAug: float ``[N, ch(4)]`` (+ labels) -> float ``[N]``."""
        return self.out(f, check_labels(c, self.num_classes, f.shape[0]))


@register_model("progan")
def progan(resolution: int = 256, img_channels: int = 3, z_dim: int = 512, width: float = 1.0, num_classes: int = 0,
           channel_base: int = 16384, channel_max: int = 512, tanh_output: bool = True, mbstd_group: int = 4
           ) -> tuple[ProGANGenerator, ProGANDiscriminator]:
    """Build the ProGAN pair (Karras et al., ICLR 2018, arXiv:1710.10196); see :mod:`degan.models.progan`.

    Args:
        resolution: 8, 16, ..., 1024 (the paper grows from 4x4 to 1024).
        img_channels: 1 or 3.
        z_dim: latent size (paper 512).
        width: channel multiplier (1.0 = the paper's Table 2).
        num_classes: 0 = unconditional.
        channel_base, channel_max: channels ``min(channel_base / r, channel_max) * width`` (16384, 512).
        tanh_output: tanh on G's output (default; the paper's output is linear).
        mbstd_group: minibatch-stddev group size of D (4).

    Returns:
        ``(G, D)``, fully grown (growth level ``(R, 1.0)``); the ``grow`` technique (:mod:`degan.train.grow`) sets
        the level during training. No layer is tagged for spectral norm.

    Raises:
        ValueError: a resolution the family cannot build (not a power of two in 8..1024) or another bad option.
    """
    kw = dict(resolution=resolution, img_channels=img_channels, z_dim=z_dim, width=width, num_classes=num_classes,
              channel_base=channel_base, channel_max=channel_max, tanh_output=tanh_output, mbstd_group=mbstd_group)
    return ProGANGenerator(**kw), ProGANDiscriminator(**kw)


# The training terms this family declares (technique names): `grow` (progressive growing with fade-in, the reals
# blended like G's output) is on for progan runs unless grow.enabled=false, and absent for every other model.
progan.objective_terms = ("grow",)
