"""StyleGAN2 in pure PyTorch (``stylegan2``): mapping network, modulated convolutions, skip G, residual D.

Source: Karras, Laine, Aittala, Hellsten, Lehtinen, Aila. *Analyzing and Improving the Image Quality of StyleGAN*.
CVPR 2020, arXiv:1912.04958 (config F: weight demodulation, skip generator, residual discriminator, no progressive
growing), with the conditioning of StyleGAN2-ADA (Karras et al., *Training Generative Adversarial Networks with
Limited Data*, NeurIPS 2020, arXiv:2006.06676). Written from the papers and SPEC.md section 6; no custom CUDA ops,
so it runs on CPU at small sizes.

Architecture (``R`` = resolution, 32 to 256, a power of two):

- Mapping: ``z`` (normalised to unit second moment) [+ class embedding, also normalised] -> ``mapping_layers``
  fully connected layers (LeakyReLU 0.2 x sqrt 2) with learning-rate multiplier 0.01 -> ``w``. A moving average
  ``w_avg`` (decay 0.995 per training forward) is tracked for the truncation trick, used only when sampling with
  ``truncation_psi != 1``.
- Synthesis (skip architecture): a learned constant 4x4 input; per resolution 4, 8, ..., R two modulated 3x3
  convolutions (one at 4x4; the first of the others up-samples x2) each followed by noise ``* strength`` (learned,
  initialised 0), bias and LeakyReLU x sqrt 2, and a toRGB 1x1 modulated convolution (no demodulation); the RGB
  outputs are summed after up-sampling the running image x2.
- Discriminator (residual): fromRGB 1x1 at R (``D.blocks[0]``); per resolution R, R/2, ..., 8 a block
  ``(conv3x3 -> down -> conv3x3, skip: down -> conv1x1) * sqrt(1/2)``; at 4x4: minibatch standard deviation
  (group 4, 1 channel) -> conv3x3 -> flatten -> FC -> LeakyReLU (the ``features``, [N, C4]) -> FC -> logit
  (the ``head``).
- Equalised learning rate everywhere: weights stored as N(0, 1) (N(0, 1/lr_mul^2) in the mapping) and multiplied
  by ``lr_mul / sqrt(fan_in)`` at use.

Modulation / demodulation (paper Eq. 1 and 3), for sample n, output channel o, input channel i, kernel tap k::

    w'_{n,o,i,k} = s_{n,i} * w_{o,i,k}            s = affine(w) (bias initialised to 1)
    w''_{n,o,i,k} = w'_{n,o,i,k} / sqrt(sum_{i,k} w'_{n,o,i,k}^2 + 1e-8)

computed as one grouped convolution (``groups = N``), the standard pure-PyTorch way.

Choices made here (documented deviations):

- Output: ``tanh`` on the final image by default (``tanh_output=True``), so the generator honours the
  :class:`~degan.models.layers.GeneratorBase` contract (images in [-1, 1]) that the metrics, AdvAug and the
  training loop rely on; the paper's network has a linear output (clipped for display): ``tanh_output=False``.
- Resampling: x2 up-sampling of features and images is bilinear (``F.interpolate``, ``align_corners=False``),
  which is the [1, 3, 3, 1] FIR up-sampling filter of the paper up to the border handling (edge replicate instead
  of zero padding); x2 down-sampling is the [1, 3, 3, 1] x [1, 3, 3, 1] / 64 blur with stride 2 (``F.conv2d``,
  zero padding 1). The up-sampling conv is "up-sample, then 3x3 conv" and the down-sampling conv "blur-down, then
  3x3 conv", instead of a strided (transposed) convolution followed / preceded by the blur.
- Channels at resolution r: ``max(4, round(min(channel_base / r, channel_max) * width))`` with
  ``channel_base = 32768``, ``channel_max = 512`` (StyleGAN2 config F, the TF code's ``fmap_base = 16384``, which
  the DiffAugment few-shot runs use: 512 channels up to 64 px, then 256 and 128 at 128 and 256 px);
  ``channel_base = 4096`` is DiffAugment's CIFAR model (``fmap_base = 2048``: 512, 512, 256, 128 at 4-32 px);
  ``width`` scales every layer so tests can run tiny.
- ``w_dim`` defaults to ``z_dim``; one ``w`` drives every layer (no style-mixing regularisation), path-length
  regularisation is not implemented.
- Noise inputs: fresh N(0, 1) noise (from torch's global RNG, which the training state checkpoints) in training
  mode; in eval mode the fixed per-layer ``noise_const`` buffers, so ``G_ema`` maps a latent to one image
  (grids, metrics and interpolations are deterministic). Set ``G.noise_mode`` to ``"random"``, ``"const"`` or
  ``"none"`` to override (``"auto"`` is the default).
- Minibatch standard deviation with group size ``min(4, N)``; when N is not divisible by the group size, the
  largest divisor of N that does not exceed it (StyleGAN2 requires divisibility).
- Conditional (``num_classes > 0``), as StyleGAN2-ADA: G maps a one-hot label through an equalised FC layer to a
  ``w_dim`` embedding, normalises it and concatenates it with the normalised ``z`` before the mapping; D's head
  outputs a ``cmap_dim``-vector (``cmap_dim = feature width``) and the logit is
  ``<out(f), embed(c)> / sqrt(cmap_dim)`` (projection-style conditioning; ADA maps ``c`` through an MLP, a single
  embedding here).

AdvAug split points (SPEC section 4): ``G.input_layer(z, c)`` = mapping + constant + the 4x4 block; it returns
one tensor ``h`` float ``[N, C4 + img_channels + ceil(w_dim / 16), 4, 4]`` that packs the 4x4 features, the 4x4
RGB image of the skip path and ``w`` (zero-padded to a multiple of 16, reshaped to 4x4), so that
``G.synthesis(h, c)`` needs nothing else (a feature perturbation of ``h`` also perturbs ``w``).
``D.features`` / ``D.head`` split before the last FC layer; ``advaug.split_D = k`` cuts before ``D.blocks[k]``
(0 = the image, 1 = after fromRGB, ...). G has no block-index split points (its blocks need ``w``).

Prunable layers (SPEC sections 3-4): every layer subclasses ``nn.Conv2d`` (modulated convs incl. toRGB, D convs)
or ``nn.Linear`` (mapping, affine, D FCs) and reads ``self.weight`` at use, then scales it, so the lottery-ticket
:class:`~degan.pruning.mask.WeightMask` parametrization masks the *stored* weight and the equalised-lr gain is
applied to the masked weight (``effective = gain * (W ⊙ m)``). Note for ``prunable=linear``: the mapping's stored
weights are 100x larger (lr multiplier 0.01), so a global magnitude ranking across layers never prunes them first;
use layer-wise pruning there. No spectral norm anywhere (no layer is tagged).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from degan.models import register_model
from degan.models.layers import (
    DiscriminatorBase,
    GeneratorBase,
    check_common_options,
)

__all__ = [
    "EqualConv2d",
    "EqualLinear",
    "ModulatedConv2d",
    "StyleGAN2Discriminator",
    "StyleGAN2Generator",
    "downsample2d",
    "interpolate_styles",
    "minibatch_stddev",
    "modulated_conv2d",
    "path_length_penalty",
    "stylegan2",
    "upsample2d",
]

SQRT2 = math.sqrt(2.0)
RESOLUTIONS = (32, 64, 128, 256)
NOISE_MODES = ("auto", "random", "const", "none")


def resolve_noise_mode(mode: str, training: bool) -> str:
    """The per-pixel noise used by a forward: ``auto`` is ``random`` in training and ``const`` in eval mode; the
    others stand. Shared by StyleGAN2 and FastGAN.

    Raises:
        ValueError: ``mode`` is not one of :data:`NOISE_MODES`.
    """
    if mode not in NOISE_MODES:
        raise ValueError(f"noise_mode must be one of {', '.join(NOISE_MODES)}; got {mode!r}")
    if mode == "auto":
        return "random" if training else "const"
    return mode


# ---------------------------------------------------------------------------------------------- helpers


def normalize_2nd_moment(x: Tensor, dim: int = 1, eps: float = 1e-8) -> Tensor:
    """``x / sqrt(mean(x^2, dim) + eps)``: unit second moment along ``dim`` (StyleGAN's pixel norm of z)."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def upsample2d(x: Tensor) -> Tensor:
    """x2 bilinear up-sampling, ``[N, C, H, W] -> [N, C, 2H, 2W]`` (the [1, 3, 3, 1] FIR filter in the interior)."""
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


_BLUR_1D = torch.tensor([1.0, 3.0, 3.0, 1.0])


def downsample2d(x: Tensor) -> Tensor:
    """x2 down-sampling by the [1, 3, 3, 1] (x) [1, 3, 3, 1] / 64 blur with stride 2 and zero padding 1.

    ``[N, C, H, W] -> [N, C, H/2, W/2]`` for even H, W; a constant image keeps its value away from the border.
    """
    c = x.shape[1]
    k = torch.outer(_BLUR_1D, _BLUR_1D).to(x.dtype).to(x.device) / 64.0
    return F.conv2d(x, k.expand(c, 1, 4, 4), stride=2, padding=1, groups=c)


def lrelu(x: Tensor) -> Tensor:
    """LeakyReLU(0.2) times sqrt(2) (StyleGAN's gain-corrected activation)."""
    return F.leaky_relu(x, 0.2) * SQRT2


def modulated_conv2d(x: Tensor, weight: Tensor, styles: Tensor, demodulate: bool = True, up: bool = False,
                     eps: float = 1e-8) -> Tensor:
    """Modulated (and optionally demodulated) convolution as one grouped convolution (Karras et al. 2020, Eq. 1-3).

    Args:
        x: float ``[N, I, H, W]``.
        weight: float ``[O, I, k, k]`` (already multiplied by its equalised-lr gain), k odd.
        styles: float ``[N, I]``, per-sample scales of the input channels.
        demodulate: divide each (sample, output channel) kernel by its L2 norm (+ eps).
        up: bilinear x2 up-sampling of ``x`` before the convolution.
        eps: epsilon inside the square root of the demodulation.

    Returns:
        float ``[N, O, H, W]`` (``[N, O, 2H, 2W]`` with ``up``), 'same' padding.

    Raises:
        ValueError: shapes that do not fit together.
    """
    n, i, _, _ = x.shape
    o, wi, kh, kw = weight.shape
    if wi != i or styles.shape != (n, i):
        raise ValueError(f"modulated_conv2d: x {tuple(x.shape)}, weight {tuple(weight.shape)} and styles "
                         f"{tuple(styles.shape)} do not fit (need x [N, I, H, W], weight [O, I, k, k], styles [N, I])")
    w = weight.unsqueeze(0) * styles.reshape(n, 1, i, 1, 1)  # [N, O, I, k, k]
    if demodulate:
        w = w * (w.square().sum(dim=(2, 3, 4), keepdim=True) + eps).rsqrt()
    if up:
        x = upsample2d(x)
    h, wd = x.shape[2], x.shape[3]
    out = F.conv2d(x.reshape(1, n * i, h, wd), w.reshape(n * o, i, kh, kw), padding=(kh // 2, kw // 2), groups=n)
    return out.reshape(n, o, h, wd)


def minibatch_stddev(x: Tensor, group_size: int = 4, eps: float = 1e-8) -> Tensor:
    """Append one channel holding the minibatch standard deviation (Karras et al. 2018; StyleGAN2 D epilogue).

    Samples ``i, i + N/G, i + 2N/G, ...`` form a group of ``G = min(group_size, N)`` (or the largest divisor of N
    not above it); per group, the std over the group of every feature (+ eps under the root) is averaged over
    C, H, W and broadcast to an extra channel.

    Args:
        x: float ``[N, C, H, W]``.
        group_size: G (4 in StyleGAN2).

    Returns:
        float ``[N, C + 1, H, W]``.
    """
    n, c, h, w = x.shape
    g = min(group_size, n)
    while n % g:
        g -= 1
    y = x.reshape(g, -1, c, h, w)
    y = (y - y.mean(dim=0)).square().mean(dim=0).add(eps).sqrt()  # [N/G, C, H, W]
    y = y.mean(dim=(1, 2, 3)).reshape(-1, 1, 1, 1).repeat(g, 1, h, w)  # [N, 1, H, W]
    return torch.cat([x, y], dim=1)


# ---------------------------------------------------------------------------------------------- layers


class EqualLinear(nn.Linear):
    """Fully connected layer with equalised learning rate: ``y = x (W * lr_mul / sqrt(in))^T + b * lr_mul``.

    The stored weight is N(0, 1/lr_mul^2) (read through ``self.weight``, so a mask parametrization applies to it
    before the gain); the bias is initialised to ``bias_init / lr_mul`` so the effective bias starts at
    ``bias_init``.

    Args:
        in_features, out_features: sizes.
        bias: learn a bias.
        lr_mul: learning-rate multiplier (0.01 in the mapping network).
        bias_init: initial effective bias (1 for the style affines).
        activation: ``"lrelu"`` (LeakyReLU 0.2 x sqrt 2) or None.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, lr_mul: float = 1.0,
                 bias_init: float = 0.0, activation: str | None = None) -> None:
        super().__init__(in_features, out_features, bias=bias)
        with torch.no_grad():
            self.weight.normal_(0.0, 1.0 / lr_mul)
            if self.bias is not None:
                self.bias.fill_(bias_init / lr_mul)
        self.weight_gain = lr_mul / math.sqrt(in_features)
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        """float ``[N, in_features]`` -> float ``[N, out_features]``."""
        b = self.bias * self.lr_mul if self.bias is not None else None
        y = F.linear(x, self.weight * self.weight_gain, b)
        return lrelu(y) if self.activation == "lrelu" else y


class EqualConv2d(nn.Conv2d):
    """Convolution with equalised learning rate (weight N(0, 1) times ``1/sqrt(in * k * k)`` at use), 'same' padding.

    Args:
        in_channels, out_channels, kernel_size: as ``nn.Conv2d`` (odd kernel).
        bias: learn a bias (zero init).
        activation: ``"lrelu"`` or None.
        down: x2 blur-down-sampling (:func:`downsample2d`) before the convolution.
        gain: constant output multiplier (sqrt(1/2) on the two branches of a residual D block).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 activation: str | None = None, down: bool = False, gain: float = 1.0) -> None:
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)
        with torch.no_grad():
            self.weight.normal_(0.0, 1.0)
            if self.bias is not None:
                self.bias.zero_()
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.activation, self.down, self.gain = activation, down, gain

    def forward(self, x: Tensor) -> Tensor:
        """float ``[N, in, H, W]`` -> float ``[N, out, H, W]`` (``H/2, W/2`` with ``down``)."""
        if self.down:
            x = downsample2d(x)
        y = F.conv2d(x, self.weight * self.weight_gain, self.bias, padding=self.padding)
        if self.activation == "lrelu":
            y = lrelu(y)
        return y * self.gain if self.gain != 1.0 else y


class ModulatedConv2d(nn.Conv2d):
    """The base weight ``[O, I, k, k]`` (N(0, 1), gain ``1/sqrt(I k k)`` at use) of a modulated convolution.

    ``forward(x, styles)`` runs :func:`modulated_conv2d`; no bias here (the synthesis layer adds it after noise).

    Args:
        in_channels, out_channels, kernel_size: sizes (odd kernel).
        demodulate: weight demodulation (False for toRGB).
        up: bilinear x2 up-sampling before the convolution.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, demodulate: bool = True,
                 up: bool = False) -> None:
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
        with torch.no_grad():
            self.weight.normal_(0.0, 1.0)
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.demodulate, self.up = demodulate, up

    def forward(self, x: Tensor, styles: Tensor) -> Tensor:  # type: ignore[override]
        """``x`` float ``[N, I, H, W]``, ``styles`` float ``[N, I]`` -> float ``[N, O, H, W]`` (x2 with ``up``)."""
        return modulated_conv2d(x, self.weight * self.weight_gain, styles, self.demodulate, self.up)


class SynthesisLayer(nn.Module):
    """affine(w) -> modulated 3x3 conv (demodulated) -> + noise * strength -> + bias -> LeakyReLU x sqrt 2."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, up: bool = False) -> None:
        super().__init__()
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.conv = ModulatedConv2d(in_channels, out_channels, 3, demodulate=True, up=up)
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.resolution = resolution

    def forward(self, x: Tensor, w: Tensor, noise_mode: str) -> Tensor:
        x = self.conv(x, self.affine(w))
        if noise_mode == "random":
            x = x + torch.randn(x.shape[0], 1, self.resolution, self.resolution, device=x.device,
                                dtype=x.dtype) * self.noise_strength
        elif noise_mode == "const":
            x = x + self.noise_const.to(x.dtype) * self.noise_strength
        return lrelu(x + self.bias.reshape(1, -1, 1, 1))


class ToRGB(nn.Module):
    """affine(w) -> modulated 1x1 conv (no demodulation) -> + bias."""

    def __init__(self, in_channels: int, img_channels: int, w_dim: int) -> None:
        super().__init__()
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.conv = ModulatedConv2d(in_channels, img_channels, 1, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(img_channels))

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        return self.conv(x, self.affine(w)) + self.bias.reshape(1, -1, 1, 1)


class SynthesisBlock(nn.Module):
    """One resolution of the skip generator: [up conv3x3,] conv3x3, toRGB; ``img = up(img) + toRGB(x)``."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int) -> None:
        super().__init__()
        self.first = resolution == 4
        if self.first:
            self.const = nn.Parameter(torch.randn(out_channels, 4, 4))
            self.conv0 = None
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=True)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution)
        self.torgb = ToRGB(out_channels, img_channels, w_dim)

    def forward(self, x: Tensor | None, img: Tensor | None, w: Tensor, noise_mode: str) -> tuple[Tensor, Tensor]:
        if self.first:
            x = self.const.unsqueeze(0).repeat(w.shape[0], 1, 1, 1)  # not expand: a no-grad view trips hooks
        else:
            x = self.conv0(x, w, noise_mode)
        x = self.conv1(x, w, noise_mode)
        y = self.torgb(x, w)
        return x, (y if img is None else upsample2d(img) + y)


class DiscriminatorBlock(nn.Module):
    """Residual D block: ``(conv3x3 -> blur-down conv3x3) * sqrt(1/2) + (blur-down conv1x1, no bias) * sqrt(1/2)``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        g = math.sqrt(0.5)
        self.conv0 = EqualConv2d(in_channels, in_channels, 3, activation="lrelu")
        self.conv1 = EqualConv2d(in_channels, out_channels, 3, activation="lrelu", down=True, gain=g)
        self.skip = EqualConv2d(in_channels, out_channels, 1, bias=False, down=True, gain=g)

    def forward(self, x: Tensor) -> Tensor:
        return self.skip(x) + self.conv1(self.conv0(x))


class CondHead(nn.Module):
    """D head: final FC (F -> 1, or F -> cmap_dim with the projection ``<out(f), embed(c)> / sqrt(cmap_dim)``)."""

    def __init__(self, feature_dim: int, num_classes: int) -> None:
        super().__init__()
        self.cmap_dim = feature_dim if num_classes > 0 else 1
        self.linear = EqualLinear(feature_dim, self.cmap_dim)
        self.embed = nn.Embedding(num_classes, self.cmap_dim) if num_classes > 0 else None
        if self.embed is not None:
            nn.init.normal_(self.embed.weight)

    def forward(self, f: Tensor, c: Tensor | None = None) -> Tensor:
        """``f`` float ``[N, F]``, ``c`` long ``[N]`` or None -> float ``[N]``."""
        out = self.linear(f)
        if self.embed is None:
            return out.squeeze(1)
        return (out * self.embed(c)).sum(dim=1) / math.sqrt(self.cmap_dim)


# ---------------------------------------------------------------------------------------------- networks


def _check_options(resolution: int, img_channels: int, z_dim: int, width: float, num_classes: int,
                   w_dim: int | None, mapping_layers: int, mapping_lr_mul: float, channel_base: int,
                   channel_max: int, mbstd_group: int) -> None:
    if resolution not in RESOLUTIONS:
        raise ValueError(f"stylegan2 resolution must be a power of two from 32 to 256 "
                         f"({', '.join(map(str, RESOLUTIONS))}); got {resolution!r}")
    check_common_options(img_channels, z_dim, width, num_classes)
    if w_dim is not None and (not isinstance(w_dim, int) or w_dim < 1):
        raise ValueError(f"w_dim must be a positive int or None (= z_dim); got {w_dim!r}")
    if not isinstance(mapping_layers, int) or mapping_layers < 1:
        raise ValueError(f"mapping_layers must be an int >= 1 (paper: 8); got {mapping_layers!r}")
    if not (isinstance(mapping_lr_mul, (int, float)) and 0 < mapping_lr_mul <= 1):
        raise ValueError(f"mapping_lr_mul must be in (0, 1] (paper: 0.01); got {mapping_lr_mul!r}")
    if not isinstance(channel_base, int) or channel_base < 1 or not isinstance(channel_max, int) or channel_max < 1:
        raise ValueError(f"channel_base and channel_max must be positive ints; got {channel_base!r}, {channel_max!r}")
    if not isinstance(mbstd_group, int) or mbstd_group < 1:
        raise ValueError(f"mbstd_group must be an int >= 1 (paper: 4); got {mbstd_group!r}")


def stylegan2_channels(resolution: int, width: float, channel_base: int = 32768, channel_max: int = 512) -> int:
    """Feature channels at ``resolution``: ``max(4, round(min(channel_base / resolution, channel_max) * width))``."""
    return max(4, round(min(channel_base // resolution, channel_max) * width))


class StyleGAN2Generator(GeneratorBase):
    """StyleGAN2 skip generator with mapping network (Karras et al. 2020, arXiv:1912.04958); see the module doc.

    Args:
        resolution: output side, 32, 64, 128 or 256.
        img_channels: 1 or 3.
        z_dim: latent size (paper 512).
        width: channel multiplier of the synthesis network (1.0 = StyleGAN2 config-F channels).
        num_classes: 0 = unconditional; else a label embedding is mapped into ``w`` (StyleGAN2-ADA).
        w_dim: size of ``w`` (paper 512); None = ``z_dim``.
        mapping_layers: FC layers of the mapping network (paper 8).
        mapping_lr_mul: learning-rate multiplier of the mapping network (paper 0.01).
        channel_base, channel_max: channel schedule (see :func:`stylegan2_channels`).
        tanh_output: ``tanh`` on the image (default; the paper's output is linear).
        w_avg_beta: decay of the tracked ``w_avg`` per training forward (0.995).

    Attributes:
        w_avg: buffer float ``[w_dim]``, moving average of ``w`` over training forwards (truncation centre).
        noise_mode: ``auto`` (random in training mode, const in eval mode), ``random``, ``const`` or ``none``.

    Shapes: ``input_layer``: z float ``[N, z_dim]`` -> packed h float ``[N, C4 + img_channels + ceil(w_dim/16),
    4, 4]``; ``synthesis``: h -> float ``[N, img_channels, R, R]`` (in [-1, 1] with ``tanh_output``).

    Raises:
        ValueError: on an invalid option.
    """

    def __init__(self, *, resolution: int = 256, img_channels: int = 3, z_dim: int = 512, width: float = 1.0,
                 num_classes: int = 0, w_dim: int | None = None, mapping_layers: int = 8,
                 mapping_lr_mul: float = 0.01, channel_base: int = 32768, channel_max: int = 512,
                 tanh_output: bool = True, w_avg_beta: float = 0.995, mbstd_group: int = 4) -> None:
        _check_options(resolution, img_channels, z_dim, width, num_classes, w_dim, mapping_layers, mapping_lr_mul,
                       channel_base, channel_max, mbstd_group)
        config = dict(resolution=resolution, img_channels=img_channels, z_dim=z_dim, width=width,
                      num_classes=num_classes, w_dim=w_dim, mapping_layers=mapping_layers,
                      mapping_lr_mul=mapping_lr_mul, channel_base=channel_base, channel_max=channel_max,
                      tanh_output=tanh_output)
        super().__init__(z_dim=z_dim, resolution=resolution, img_channels=img_channels, num_classes=num_classes,
                         config=config)
        self.w_dim = int(w_dim or z_dim)
        self.tanh_output = bool(tanh_output)
        self.w_avg_beta = float(w_avg_beta)
        self.noise_mode = "auto"
        # mapping network
        self.embed = EqualLinear(num_classes, self.w_dim) if num_classes > 0 else None
        dims = [z_dim + (self.w_dim if num_classes > 0 else 0)] + [self.w_dim] * mapping_layers
        self.mapping_net = nn.Sequential(*[EqualLinear(a, b, lr_mul=mapping_lr_mul, activation="lrelu")
                                           for a, b in zip(dims[:-1], dims[1:])])
        self.register_buffer("w_avg", torch.zeros(self.w_dim))
        # synthesis network
        ch = lambda r: stylegan2_channels(r, width, channel_base, channel_max)
        self.block_resolutions = [2 ** k for k in range(2, int(math.log2(resolution)) + 1)]
        self.blocks = nn.ModuleList(
            SynthesisBlock(ch(r // 2) if r > 4 else ch(4), ch(r), self.w_dim, r, img_channels)
            for r in self.block_resolutions)
        self.c0 = ch(4)
        self.w_channels = -(-self.w_dim // 16)
        self.h_channels = self.c0 + img_channels + self.w_channels

    # -- mapping ------------------------------------------------------------------------------------------------------
    def mapping(self, z: Tensor, c: Tensor | None = None, truncation_psi: float = 1.0) -> Tensor:
        """Latents to ``w``: float ``[N, z_dim]`` (+ long ``[N]`` labels) -> float ``[N, w_dim]``.

        In training mode it updates ``w_avg`` (also under ``torch.no_grad``); ``truncation_psi != 1``
        returns ``w_avg + psi * (w - w_avg)`` (sampling only; 0 gives ``w_avg`` for every z).

        Raises:
            ValueError: malformed ``z`` or labels.
        """
        c = self._check_z(z, c)
        x = normalize_2nd_moment(z.to(torch.float32))
        if self.embed is not None:
            y = normalize_2nd_moment(self.embed(F.one_hot(c, self.num_classes).to(x.dtype)))
            x = torch.cat([x, y], dim=1)
        w = self.mapping_net(x)
        if self.training:
            with torch.no_grad():
                self.w_avg.copy_(w.detach().float().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        if truncation_psi != 1.0:
            w = self.w_avg.to(w.dtype).lerp(w, truncation_psi)
        return w

    # -- synthesis ----------------------------------------------------------------------------------------------------
    def _noise_mode(self) -> str:
        return resolve_noise_mode(self.noise_mode, self.training)

    def _pack(self, x: Tensor, img: Tensor, w: Tensor) -> Tensor:
        pad = self.w_channels * 16 - self.w_dim
        wp = F.pad(w, (0, pad)).reshape(w.shape[0], self.w_channels, 4, 4)
        return torch.cat([x, img, wp.to(x.dtype)], dim=1)

    def _unpack(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if h.dim() != 4 or h.shape[1:] != (self.h_channels, 4, 4):
            raise ValueError(f"h must be float [N, {self.h_channels}, 4, 4] (from input_layer); got {tuple(h.shape)}")
        x, img, wp = torch.split(h, [self.c0, self.img_channels, self.w_channels], dim=1)
        return x, img, wp.reshape(h.shape[0], -1)[:, : self.w_dim]

    def input_layer(self, z: Tensor, c: Tensor | None = None, truncation_psi: float = 1.0) -> Tensor:
        """G1 of AdvAug: mapping + constant + the 4x4 block, packed as float ``[N, h_channels, 4, 4]``."""
        w = self.mapping(z, c, truncation_psi)
        x, img = self.blocks[0](None, None, w, self._noise_mode())
        return self._pack(x, img, w)

    def synthesis(self, h: Tensor, c: Tensor | None = None) -> Tensor:
        """G2 of AdvAug: packed h (see :meth:`input_layer`) -> float ``[N, img_channels, R, R]``; ``c`` unused."""
        x, img, w = self._unpack(h)
        return self._synthesize(x, img, w, start=1)

    def synthesis_from_w(self, w: Tensor) -> Tensor:
        """The whole synthesis network from ``w`` float ``[N, w_dim]`` -> float ``[N, img_channels, R, R]``."""
        if w.dim() != 2 or w.shape[1] != self.w_dim:
            raise ValueError(f"w must be float [N, {self.w_dim}]; got {tuple(w.shape)}")
        return self._synthesize(None, None, w, start=0)

    def _synthesize(self, x: Tensor | None, img: Tensor | None, w: Tensor, start: int) -> Tensor:
        mode = self._noise_mode()
        for block in self.blocks[start:]:
            x, img = block(x, img, w, mode)
        return torch.tanh(img) if self.tanh_output else img

    def forward(self, z: Tensor, c: Tensor | None = None, truncation_psi: float = 1.0) -> Tensor:
        """Generate images: z float ``[N, z_dim]`` (+ labels) -> float ``[N, img_channels, R, R]``.

        Args:
            z: latents, N(0, I).
            c: long ``[N]`` labels; required when conditional, ignored otherwise.
            truncation_psi: truncation trick in w (1 = off, training always uses 1).

        Raises:
            ValueError: malformed ``z`` or labels.
        """
        return self.synthesis_from_w(self.mapping(z, c, truncation_psi))


class StyleGAN2Discriminator(DiscriminatorBase):
    """StyleGAN2 residual discriminator with minibatch std (Karras et al. 2020, arXiv:1912.04958).

    Args: as :class:`StyleGAN2Generator` (``z_dim``, ``w_dim``, mapping options and ``tanh_output`` accepted for a
    shared config and unused), plus ``mbstd_group`` (4).

    Shapes: ``features``: float ``[N, img_channels, R, R]`` -> float ``[N, C4]`` (after the epilogue's first FC and
    LeakyReLU); ``head``: ``[N, C4]`` (+ labels) -> float ``[N]`` raw logits.

    Raises:
        ValueError: on an invalid option.
    """

    def __init__(self, *, resolution: int = 256, img_channels: int = 3, z_dim: int = 512, width: float = 1.0,
                 num_classes: int = 0, w_dim: int | None = None, mapping_layers: int = 8,
                 mapping_lr_mul: float = 0.01, channel_base: int = 32768, channel_max: int = 512,
                 tanh_output: bool = True, mbstd_group: int = 4) -> None:
        _check_options(resolution, img_channels, z_dim, width, num_classes, w_dim, mapping_layers, mapping_lr_mul,
                       channel_base, channel_max, mbstd_group)
        config = dict(resolution=resolution, img_channels=img_channels, z_dim=z_dim, width=width,
                      num_classes=num_classes, mbstd_group=mbstd_group)
        super().__init__(resolution=resolution, img_channels=img_channels, num_classes=num_classes, config=config)
        ch = lambda r: stylegan2_channels(r, width, channel_base, channel_max)
        self.mbstd_group = mbstd_group
        res = [2 ** k for k in range(int(math.log2(resolution)), 2, -1)]  # R, R/2, ..., 8
        # blocks[0] is fromRGB, so AdvAug's block-index split points (advaug.split_D) cut between real layers
        self.blocks = nn.Sequential(EqualConv2d(img_channels, ch(resolution), 1, activation="lrelu"),
                                    *[DiscriminatorBlock(ch(r), ch(r // 2)) for r in res])
        c4 = ch(4)
        self.conv = EqualConv2d(c4 + 1, c4, 3, activation="lrelu")
        self.fc = EqualLinear(c4 * 16, c4, activation="lrelu")
        self.feature_dim = c4
        self.out = CondHead(c4, num_classes)

    def features(self, img: Tensor, c: Tensor | None = None) -> Tensor:
        """float ``[N, img_channels, R, R]`` -> float ``[N, C4]``."""
        self._check_img(img, c)
        return self.pool(self.blocks(img))

    def pool(self, x: Tensor) -> Tensor:
        """Epilogue up to the last FC: ``[N, C4, 4, 4]`` -> mbstd -> conv3x3 -> flatten -> FC -> ``[N, C4]``."""
        x = self.conv(minibatch_stddev(x, self.mbstd_group))
        return self.fc(x.flatten(1))


@register_model("stylegan2")
def stylegan2(resolution: int = 256, img_channels: int = 3, z_dim: int = 512, width: float = 1.0,
              num_classes: int = 0, w_dim: int | None = None, mapping_layers: int = 8, mapping_lr_mul: float = 0.01,
              channel_base: int = 32768, channel_max: int = 512, tanh_output: bool = True, mbstd_group: int = 4
              ) -> tuple[StyleGAN2Generator, StyleGAN2Discriminator]:
    """Build the StyleGAN2 pair (Karras et al., CVPR 2020, arXiv:1912.04958); pure PyTorch.

    Args:
        resolution: 32, 64, 128 or 256.
        img_channels: 1 or 3.
        z_dim: latent size (paper 512).
        width: channel multiplier (1.0 = 512 channels up to 64 px, 256/128 at 128/256 px).
        num_classes: 0 = unconditional; else StyleGAN2-ADA-style conditioning in G and a projection head in D.
        w_dim: size of w (None = z_dim).
        mapping_layers: mapping depth (paper 8).
        mapping_lr_mul: mapping learning-rate multiplier (paper 0.01).
        channel_base, channel_max: channel schedule (32768 / 512, StyleGAN2 config F).
        tanh_output: tanh on G's output (default; the paper's output is linear).
        mbstd_group: minibatch-std group size of D (paper 4).

    Returns:
        ``(G, D)``; no layer is tagged for spectral norm. Use :func:`degan.models.create_model`.

    Raises:
        ValueError: a resolution outside 32..256 or not a power of two, or another option out of range.
    """
    common = dict(resolution=resolution, img_channels=img_channels, z_dim=z_dim, width=width,
                  num_classes=num_classes, w_dim=w_dim, mapping_layers=mapping_layers,
                  mapping_lr_mul=mapping_lr_mul, channel_base=channel_base, channel_max=channel_max,
                  tanh_output=tanh_output)
    return StyleGAN2Generator(**common, mbstd_group=mbstd_group), StyleGAN2Discriminator(**common,
                                                                                         mbstd_group=mbstd_group)


def path_length_penalty(*args, **kwargs) -> Tensor:
    """Path-length regularisation of G (StyleGAN2 section 3.2): not implemented.

    The few-shot and CIFAR settings reproduced here (DiffAugment, SPEC section 6) train without it, so there is no
    option for it either.

    Raises:
        NotImplementedError: always.
    """
    raise NotImplementedError("StyleGAN2 path-length regularisation is not implemented in degan; the DiffAugment "
                              "few-shot and CIFAR settings train without it (non-saturating loss + R1 only)")


# ---------------------------------------------------------------------------------------------- sampling


@torch.no_grad()
def interpolate_styles(G: StyleGAN2Generator, z0: Tensor, z1: Tensor, steps: int, c: Tensor | None = None,
                       truncation_psi: float = 1.0) -> Tensor:
    """Images along the straight line in w between the styles of ``z0`` and ``z1`` (style-space interpolation).

    ``w_t = w0 + t (w1 - w0)`` for ``t = 0, 1/(steps-1), ..., 1``, each synthesised with one w for all layers.
    ``G`` runs in eval mode for the call (``w_avg`` is not updated; with ``noise_mode="auto"`` the constant noise
    buffers are used, so the sequence is smooth) and its previous mode is restored.

    Args:
        G: a :class:`StyleGAN2Generator`.
        z0, z1: float ``[z_dim]`` or ``[N, z_dim]`` (same shape).
        steps: number of images along the path, >= 2.
        c: long ``[N]`` labels (``[1]`` for 1-D latents) for a conditional G.
        truncation_psi: truncation applied to both end points.

    Returns:
        float ``[steps, img_channels, R, R]`` for 1-D latents, else ``[steps, N, img_channels, R, R]``; values in
        [-1, 1] with ``tanh_output``. Entry 0 equals ``G(z0)`` and entry ``steps - 1`` equals ``G(z1)`` (same mode).

    Raises:
        ValueError: ``steps < 2`` or latents of different shapes.
        TypeError: ``G`` is not a :class:`StyleGAN2Generator`.
    """
    if not isinstance(G, StyleGAN2Generator):
        raise TypeError(f"interpolate_styles needs a StyleGAN2Generator; got {type(G).__name__}")
    if int(steps) != steps or steps < 2:
        raise ValueError(f"steps must be an int >= 2; got {steps!r}")
    if z0.shape != z1.shape:
        raise ValueError(f"z0 and z1 must have the same shape; got {tuple(z0.shape)} and {tuple(z1.shape)}")
    single = z0.dim() == 1
    if single:
        z0, z1 = z0.unsqueeze(0), z1.unsqueeze(0)
    was_training = G.training
    G.eval()  # no w_avg update
    try:
        w0, w1 = G.mapping(z0, c, truncation_psi), G.mapping(z1, c, truncation_psi)
        t = torch.linspace(0.0, 1.0, int(steps), device=w0.device, dtype=w0.dtype)
        imgs = torch.stack([G.synthesis_from_w(w0.lerp(w1, float(ti))) for ti in t])
    finally:
        G.train(was_training)
    return imgs[:, 0] if single else imgs
