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
  outputs are summed after up-sampling the running image x2. ``num_ws = 2 log2 R - 2`` per-layer styles (each
  toRGB shares its w with the next block's first conv), all equal unless style mixing is on.
- Discriminator (residual): fromRGB 1x1 at R (``D.blocks[0]``); per resolution R, R/2, ..., 8 a block
  ``(conv3x3 -> down conv3x3, skip: down conv1x1) * sqrt(1/2)``; at 4x4: minibatch standard deviation
  (group ``mbstd_group`` = 4, 1 channel) -> conv3x3 -> flatten -> FC -> LeakyReLU (the ``features``, [N, C4]) ->
  FC -> logit (the ``head``).
- Resampling (paper section 4 / Appendix B, written from the paper): the filter is ``f = [1, 3, 3, 1]``, 2-D
  ``outer(f, f) / 64``. Up-sampling conv (:func:`conv2d_up`) = stride-2 transposed convolution with the flipped,
  transposed 3x3 weight at the input resolution, then the filter with gain 4 (zero insertion quarters the DC
  gain); image up-sampling of the skip path (:func:`upsample2d`) = ``upfirdn2d`` with up 2 (zero insertion +
  filter, pad (2, 1)), as one stride-2 transposed depthwise convolution. Down-sampling conv (:func:`conv2d_down`)
  = the filter (gain 1, zero padding 2) then a stride-2 3x3 convolution; the 1x1 skip of D = blur with stride 2
  (:func:`downsample2d`) then the 1x1 convolution. All plain ``F.conv2d`` / ``F.conv_transpose2d``: no custom ops.
- Regularisation: style mixing (``mixing_prob``, paper 0.9) in G's training forwards; the path-length penalty
  (:func:`path_lengths`, :func:`path_length_penalty`; the lazy G phase is :mod:`degan.train.path_length`).
- Reduced precision (``num_fp16_res``, StyleGAN2-ADA's option): the blocks of the top ``num_fp16_res``
  resolutions of G and D (never 4x4) compute in ``reduced_dtype`` (float16 on CUDA / bfloat16 on CPU by default);
  weights stay float32 and are cast at use, G's RGB skip image and D's 4x4 epilogue stay float32, float16
  activations are clamped to +-256.
- Equalised learning rate everywhere: weights stored as N(0, 1) (N(0, 1/lr_mul^2) in the mapping) and multiplied
  by ``lr_mul / sqrt(fan_in)`` at use.

Modulation / demodulation (paper Eq. 1 and 3), for sample n, output channel o, input channel i, kernel tap k::

    w'_{n,o,i,k} = s_{n,i} * w_{o,i,k}            s = affine(w) (bias initialised to 1)
    w''_{n,o,i,k} = w'_{n,o,i,k} / sqrt(sum_{i,k} w'_{n,o,i,k}^2 + 1e-8)

computed without per-sample kernels: ``x * s`` -> convolution with the shared weight -> ``* d_{n,o}`` (the
demodulation coefficients), which equals the grouped per-sample convolution exactly (the convolution is linear)
and is 2-30x faster on CPU than ``groups = N`` (measured at the CIFAR model's sizes, 1 thread).

Choices made here (documented deviations):

- Output: ``tanh`` on the final image by default (``tanh_output=True``), so the generator honours the
  :class:`~degan.models.layers.GeneratorBase` contract (images in [-1, 1]) that the metrics, AdvAug and the
  training loop rely on; the paper's network has a linear output (clipped for display): ``tanh_output=False``.
- Channels at resolution r: ``max(4, round(min(channel_base / r, channel_max) * width))`` with
  ``channel_base = 32768``, ``channel_max = 512`` (StyleGAN2 config F, the TF code's ``fmap_base = 16384``, which
  the DiffAugment few-shot runs use: 512 channels up to 64 px, then 256 and 128 at 128 and 256 px);
  ``channel_base = 4096`` is DiffAugment's CIFAR model (``fmap_base = 2048``: 512, 512, 256, 128 at 4-32 px);
  ``width`` scales every layer so tests can run tiny.
- ``w_dim`` defaults to ``z_dim``. Style mixing draws its cut per sample (the paper mixes "a given percentage of
  images"; StyleGAN2-ADA draws one cut per batch) and applies only to ``forward`` / :meth:`StyleGAN2Generator.styles`
  (AdvAug's ``input_layer`` / ``synthesis`` split carries one w).
- Noise inputs: fresh N(0, 1) noise (from torch's global RNG, which the training state checkpoints) in training
  mode; in eval mode the fixed per-layer ``noise_const`` buffers, so ``G_ema`` maps a latent to one image
  (grids, metrics and interpolations are deterministic). Set ``G.noise_mode`` to ``"random"``, ``"const"`` or
  ``"none"`` to override (``"auto"`` is the default).
- Minibatch standard deviation with group size ``min(mbstd_group, N)``; when N is not divisible by the group
  size, the largest divisor of N that does not exceed it (StyleGAN2 requires divisibility).
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

from degan.models.registry import register_model
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
    "conv2d_down",
    "conv2d_up",
    "downsample2d",
    "fir_filter2d",
    "fir_kernel",
    "interpolate_styles",
    "minibatch_stddev",
    "modulated_conv2d",
    "path_length_penalty",
    "path_lengths",
    "stylegan2",
    "upsample2d",
]

SQRT2 = math.sqrt(2.0)
RESOLUTIONS = (32, 64, 128, 256)
NOISE_MODES = ("auto", "random", "const", "none")
REDUCED_DTYPES = ("auto", "bf16", "fp16")
#: Clamp of the activations inside float16 blocks (StyleGAN2-ADA's ``conv_clamp``): float16 overflows at 65504.
FP16_CLAMP = 256.0


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


def resolve_reduced_dtype(name: str, device: torch.device) -> torch.dtype:
    """The dtype of the reduced-precision (``num_fp16_res``) blocks on ``device``.

    ``auto`` is float16 on CUDA and bfloat16 elsewhere (CPU convolutions have no fast float16 kernels); ``bf16``
    is bfloat16 everywhere; ``fp16`` is float16 and needs CUDA.

    Raises:
        ValueError: an unknown name, or ``fp16`` on a device other than CUDA.
    """
    if name not in REDUCED_DTYPES:
        raise ValueError(f"reduced_dtype must be one of {', '.join(REDUCED_DTYPES)}; got {name!r}")
    if name == "fp16" and device.type != "cuda":
        raise ValueError(f"reduced_dtype='fp16' needs a CUDA device (got {device.type}); use 'bf16' or 'auto' on CPU")
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.bfloat16 if name == "bf16" else torch.float16


# ---------------------------------------------------------------------------------------------- helpers


def normalize_2nd_moment(x: Tensor, dim: int = 1, eps: float = 1e-8) -> Tensor:
    """``x / sqrt(mean(x^2, dim) + eps)``: unit second moment along ``dim`` (StyleGAN's pixel norm of z)."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


_FIR_1D = (1.0, 3.0, 3.0, 1.0)


def fir_kernel(gain: float = 1.0, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
               ) -> Tensor:
    """The 2-D [1, 3, 3, 1] low-pass filter of StyleGAN2: ``outer(f, f) / sum(f)^2 * gain``, float ``[4, 4]``.

    Its taps sum to ``gain`` (1 for a plain blur, 4 after x2 zero-insertion up-sampling so a constant image keeps
    its value).
    """
    f = torch.tensor(_FIR_1D, dtype=torch.float32)
    return (torch.outer(f, f) * (gain / float(f.sum()) ** 2)).to(dtype=dtype, device=device)


def fir_filter2d(x: Tensor, padding: int | tuple[int, int, int, int], gain: float = 1.0, stride: int = 1) -> Tensor:
    """Depthwise convolution of every channel with :func:`fir_kernel` (``gain``) after zero padding.

    Args:
        x: float ``[N, C, H, W]``.
        padding: zeros added on each side (int), or ``(left, right, top, bottom)``.
        gain: sum of the filter taps.
        stride: output stride (2: blur-and-subsample).

    Returns:
        float ``[N, C, (H + pad_h - 4) // stride + 1, (W + pad_w - 4) // stride + 1]`` (pad_h = top + bottom).
    """
    c = x.shape[1]
    k = fir_kernel(gain, x.dtype, x.device).expand(c, 1, 4, 4)
    if isinstance(padding, int):
        return F.conv2d(x, k, stride=stride, padding=padding, groups=c)
    return F.conv2d(F.pad(x, padding), k, stride=stride, groups=c)


def upsample2d(x: Tensor) -> Tensor:
    """x2 FIR up-sampling (StyleGAN2's ``upfirdn2d`` with up = 2 and the [1, 3, 3, 1] filter, gain 4).

    Zero insertion (``u[2i] = x[i]``) followed by the 4x4 filter with zero padding (2, 1), computed as one
    stride-2 transposed depthwise convolution (the filter is symmetric, so no flip is needed):
    ``y[j] = sum_t f[t] u[j + t - 2]`` per axis. A constant image keeps its value away from the border; the
    interior equals bilinear up-sampling (``align_corners=False``).

    Args:
        x: float ``[N, C, H, W]``.

    Returns:
        float ``[N, C, 2H, 2W]``.
    """
    c = x.shape[1]
    k = fir_kernel(4.0, x.dtype, x.device).expand(c, 1, 4, 4)
    return F.conv_transpose2d(x, k, stride=2, padding=1, groups=c)


def downsample2d(x: Tensor) -> Tensor:
    """x2 down-sampling by the [1, 3, 3, 1] (x) [1, 3, 3, 1] / 64 blur with stride 2 and zero padding 1.

    ``y[j] = sum_t f[t] x[2j + t - 1]`` per axis, i.e. the output pixel j is centred between inputs 2j and 2j + 1.
    ``[N, C, H, W] -> [N, C, H/2, W/2]`` for even H, W; a constant image keeps its value away from the border.
    """
    return fir_filter2d(x, 1, 1.0, stride=2)


def lrelu(x: Tensor) -> Tensor:
    """LeakyReLU(0.2) times sqrt(2) (StyleGAN's gain-corrected activation)."""
    return F.leaky_relu(x, 0.2) * SQRT2


def conv2d_up(x: Tensor, weight: Tensor) -> Tensor:
    """x2 up-sampling convolution of StyleGAN2: stride-2 transposed convolution, then the FIR filter (gain 4).

    Equals zero insertion (``u[2i] = x[i]``) followed by the 'full' correlation with ``weight`` and the filter,
    aligned like :func:`upsample2d` followed by a 'same' convolution:
    ``y[j] = sum_{k, t} w[k] f[t] u[j + k + t - (K - 1) / 2 - 2]`` per axis, with no border cropping between the
    two (the transposed convolution keeps all ``2H + K - 2`` outputs; the filter then pads ``2 - (K - 1) / 2`` and
    ``3 - K + (K - 1) / 2`` zeros). The transposed convolution runs at the input resolution: 1/4 of the
    multiply-adds of up-sampling first and convolving at 2H.

    Args:
        x: float ``[N, I, H, W]``.
        weight: float ``[O, I, K, K]``, K odd and <= 5 (used as by ``F.conv2d``, i.e. correlation).

    Returns:
        float ``[N, O, 2H, 2W]``.

    Raises:
        ValueError: an even kernel or one larger than 5.
    """
    k = weight.shape[-1]
    if k % 2 == 0 or k > 5 or weight.shape[-2] != k:
        raise ValueError(f"conv2d_up needs a square odd kernel of size <= 5; got {tuple(weight.shape[-2:])}")
    y = F.conv_transpose2d(x, weight.transpose(0, 1).flip(2, 3), stride=2)  # [N, O, 2H + K - 2, 2W + K - 2]
    p0 = 2 - (k - 1) // 2
    p1 = 5 - k - p0
    return fir_filter2d(y, p0 if p0 == p1 else (p0, p1, p0, p1), gain=4.0)


def conv2d_down(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """x2 down-sampling convolution of StyleGAN2: the FIR blur (gain 1), then a stride-2 convolution.

    ``y[j] = sum_{k, t} w[k] f[t] x[2j + k + t - (K + 1) / 2]`` per axis (output j centred between inputs 2j
    and 2j + 1): the blur pads ``(K + 1) / 2`` zeros on each side, the convolution has no padding. For ``K = 1``
    this is :func:`downsample2d` followed by the 1x1 convolution.

    Args:
        x: float ``[N, I, H, W]``, H and W even.
        weight: float ``[O, I, K, K]``, K odd.
        bias: float ``[O]`` or None.

    Returns:
        float ``[N, O, H/2, W/2]``.
    """
    k = weight.shape[-1]
    if k == 1:
        return F.conv2d(downsample2d(x), weight, bias)
    return F.conv2d(fir_filter2d(x, (k + 1) // 2, 1.0), weight, bias, stride=2)


def modulated_conv2d(x: Tensor, weight: Tensor, styles: Tensor, demodulate: bool = True, up: bool = False,
                     eps: float = 1e-8) -> Tensor:
    """Modulated (and optionally demodulated) convolution (Karras et al. 2020, Eq. 1-3).

    For sample n, output channel o, input channel i, tap k: ``w'_{n,o,i,k} = s_{n,i} w_{o,i,k}`` and
    ``w''_{n,o,i,k} = w'_{n,o,i,k} / sqrt(sum_{i,k} w'^2_{n,o,i,k} + eps)``. Computed without per-sample weights
    (the convolution is linear): the input is scaled by ``s`` per channel, convolved with the shared weight, and
    the output scaled by the demodulation coefficients ``d_{n,o} = (sum_i s_{n,i}^2 sum_k w_{o,i,k}^2 + eps)^-1/2``.
    This is exactly the grouped per-sample convolution of the paper; it is 2-30x faster on CPU
    (``benchmarks/train_speed.py``). In half precision (float16 / bfloat16 ``x``) with demodulation, the styles
    are first divided by their per-sample maximum (the demodulated result does not change) so ``x * s`` stays in
    range.

    Args:
        x: float ``[N, I, H, W]``.
        weight: float ``[O, I, k, k]`` (already multiplied by its equalised-lr gain), k odd.
        styles: float ``[N, I]``, per-sample scales of the input channels.
        demodulate: divide each (sample, output channel) kernel by its L2 norm (+ eps).
        up: x2 up-sampling convolution (:func:`conv2d_up`: stride-2 transposed conv + [1, 3, 3, 1] FIR).
        eps: epsilon inside the square root of the demodulation.

    Returns:
        float ``[N, O, H, W]`` (``[N, O, 2H, 2W]`` with ``up``), 'same' padding, in ``x``'s dtype.

    Raises:
        ValueError: shapes that do not fit together.
    """
    n, i, _, _ = x.shape
    o, wi, kh, kw = weight.shape
    if wi != i or styles.shape != (n, i):
        raise ValueError(f"modulated_conv2d: x {tuple(x.shape)}, weight {tuple(weight.shape)} and styles "
                         f"{tuple(styles.shape)} do not fit (need x [N, I, H, W], weight [O, I, k, k], styles [N, I])")
    if demodulate and x.dtype in (torch.float16, torch.bfloat16):
        styles = styles / styles.detach().abs().amax(dim=1, keepdim=True).clamp_min(1e-8)
    dtype = x.dtype
    w = weight.to(dtype)
    x = x * styles.to(dtype).reshape(n, i, 1, 1)
    x = conv2d_up(x, w) if up else F.conv2d(x, w, padding=(kh // 2, kw // 2))
    if demodulate:
        d = (styles.float().square() @ weight.float().square().sum(dim=(2, 3)).t() + eps).rsqrt()  # [N, O]
        x = x * d.to(dtype).reshape(n, o, 1, 1)
    return x


def minibatch_stddev(x: Tensor, group_size: int = 4, eps: float = 1e-8) -> Tensor:
    """Append one channel holding the minibatch standard deviation (Karras et al. 2018; StyleGAN2 D epilogue).

    Samples ``i, i + N/G, i + 2N/G, ...`` form a group of ``G = min(group_size, N)`` (or the largest divisor of N
    not above it); per group, the std over the group of every feature (+ eps under the root) is averaged over
    C, H, W and broadcast to an extra channel.

    Args:
        x: float ``[N, C, H, W]``.
        group_size: G (4 in StyleGAN2; the model option ``mbstd_group``).

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
        down: x2 down-sampling convolution (:func:`conv2d_down`: [1, 3, 3, 1] blur, then stride 2).
        gain: constant output multiplier (sqrt(1/2) on the two branches of a residual D block).

    Attributes:
        reduced_dtype: None (run in the input's dtype) or a :data:`REDUCED_DTYPES` name: the input is cast to that
            dtype first (D's fromRGB at its top ``num_fp16_res`` resolutions); the output keeps the compute dtype.
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
        self.reduced_dtype: str | None = None

    def forward(self, x: Tensor) -> Tensor:
        """float ``[N, in, H, W]`` -> float ``[N, out, H, W]`` (``H/2, W/2`` with ``down``)."""
        if self.reduced_dtype is not None:
            x = x.to(resolve_reduced_dtype(self.reduced_dtype, x.device))
        w = (self.weight * self.weight_gain).to(x.dtype)
        b = None if self.bias is None else self.bias.to(x.dtype)
        y = conv2d_down(x, w, b) if self.down else F.conv2d(x, w, b, padding=self.padding)
        if self.activation == "lrelu":
            y = lrelu(y)
        y = y * self.gain if self.gain != 1.0 else y
        return y.clamp(-FP16_CLAMP, FP16_CLAMP) if y.dtype == torch.float16 else y


def _to_compute_dtype(x: Tensor, reduced: str | None) -> Tensor:
    """``x`` in the dtype of a block: the reduced dtype when ``reduced`` names one, else float32 (a half-precision
    input from a reduced block before it is cast back; under autocast this round trip is exact)."""
    if reduced is not None:
        return x.to(resolve_reduced_dtype(reduced, x.device))
    return x if x.dtype == torch.float32 else x.float()


class ModulatedConv2d(nn.Conv2d):
    """The base weight ``[O, I, k, k]`` (N(0, 1), gain ``1/sqrt(I k k)`` at use) of a modulated convolution.

    ``forward(x, styles)`` runs :func:`modulated_conv2d`; no bias here (the synthesis layer adds it after noise).

    Args:
        in_channels, out_channels, kernel_size: sizes (odd kernel).
        demodulate: weight demodulation (False for toRGB).
        up: x2 up-sampling convolution (stride-2 transposed conv + [1, 3, 3, 1] FIR, :func:`conv2d_up`).
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
                                dtype=x.dtype) * self.noise_strength.to(x.dtype)
        elif noise_mode == "const":
            x = x + (self.noise_const * self.noise_strength).to(x.dtype)
        x = lrelu(x + self.bias.to(x.dtype).reshape(1, -1, 1, 1))
        return x.clamp(-FP16_CLAMP, FP16_CLAMP) if x.dtype == torch.float16 else x


class ToRGB(nn.Module):
    """affine(w) -> modulated 1x1 conv (no demodulation) -> + bias; the output is float32."""

    def __init__(self, in_channels: int, img_channels: int, w_dim: int) -> None:
        super().__init__()
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.conv = ModulatedConv2d(in_channels, img_channels, 1, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(img_channels))

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        y = self.conv(x, self.affine(w)).float() + self.bias.reshape(1, -1, 1, 1)
        return y


class SynthesisBlock(nn.Module):
    """One resolution of the skip generator: [up conv3x3,] conv3x3, toRGB; ``img = up(img) + toRGB(x)``.

    ``forward(x, img, ws, noise_mode, dtype)``: ``ws`` is one float ``[N, w_dim]`` for every layer, or float
    ``[N, num_ws, w_dim]`` with one w per layer (conv0, conv1, toRGB; ``num_ws = num_conv + 1``); ``dtype`` is
    the compute dtype of the block's features (``img`` stays float32).
    """

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
        self.num_conv = 1 if self.first else 2
        self.num_ws = self.num_conv + 1

    def forward(self, x: Tensor | None, img: Tensor | None, ws: Tensor, noise_mode: str,
                dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
        w_at = (lambda j: ws) if ws.dim() == 2 else (lambda j: ws[:, j])
        if self.first:
            x = self.const.unsqueeze(0).repeat(ws.shape[0], 1, 1, 1).to(dtype)  # repeat: an expand trips hooks
            x = self.conv1(x, w_at(0), noise_mode)
            y = self.torgb(x, w_at(1))
        else:
            x = self.conv0(x.to(dtype), w_at(0), noise_mode)
            x = self.conv1(x, w_at(1), noise_mode)
            y = self.torgb(x, w_at(2))
        return x, (y if img is None else upsample2d(img) + y)


class DiscriminatorBlock(nn.Module):
    """Residual D block: ``(conv3x3 -> down conv3x3) * sqrt(1/2) + (down conv1x1, no bias) * sqrt(1/2)``.

    The down-sampling convolutions are :func:`conv2d_down` (blur, then stride 2). ``reduced_dtype`` (None or a
    :data:`REDUCED_DTYPES` name) is the compute dtype, set by the discriminator for its top resolutions.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        g = math.sqrt(0.5)
        self.conv0 = EqualConv2d(in_channels, in_channels, 3, activation="lrelu")
        self.conv1 = EqualConv2d(in_channels, out_channels, 3, activation="lrelu", down=True, gain=g)
        self.skip = EqualConv2d(in_channels, out_channels, 1, bias=False, down=True, gain=g)
        self.reduced_dtype: str | None = None

    def forward(self, x: Tensor) -> Tensor:
        x = _to_compute_dtype(x, self.reduced_dtype)
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
                   channel_max: int, mbstd_group: int, mixing_prob: float = 0.0, num_fp16_res: int = 0,
                   reduced_dtype: str = "auto") -> None:
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
    if not isinstance(mbstd_group, int) or isinstance(mbstd_group, bool) or mbstd_group < 1:
        raise ValueError(f"mbstd_group must be an int >= 1 (paper: 4); got {mbstd_group!r}")
    if not (isinstance(mixing_prob, (int, float)) and 0.0 <= mixing_prob <= 1.0):
        raise ValueError(f"mixing_prob must be in [0, 1] (paper: 0.9; 0 = no style mixing); got {mixing_prob!r}")
    if not isinstance(num_fp16_res, int) or isinstance(num_fp16_res, bool) or num_fp16_res < 0:
        raise ValueError(f"num_fp16_res must be an int >= 0 (0 = float32 everywhere; StyleGAN2-ADA: 4); "
                         f"got {num_fp16_res!r}")
    if reduced_dtype not in REDUCED_DTYPES:
        raise ValueError(f"reduced_dtype must be one of {', '.join(REDUCED_DTYPES)}; got {reduced_dtype!r}")


def stylegan2_channels(resolution: int, width: float, channel_base: int = 32768, channel_max: int = 512) -> int:
    """Feature channels at ``resolution``: ``max(4, round(min(channel_base / resolution, channel_max) * width))``."""
    return max(4, round(min(channel_base // resolution, channel_max) * width))


def fp16_resolution(resolution: int, num_fp16_res: int) -> int:
    """The lowest resolution that runs in reduced precision: ``max(2 ** (log2 R + 1 - num_fp16_res), 8)``; above
    ``resolution`` (nothing reduced) when ``num_fp16_res == 0``. Never 4x4 (StyleGAN2-ADA's rule)."""
    return max(2 ** (int(math.log2(resolution)) + 1 - num_fp16_res), 8)


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
        mbstd_group: accepted for a shared config (used by D).
        mixing_prob: style-mixing regularisation (paper section 3.2 of StyleGAN: 0.9): in training mode each
            sample of ``forward`` / :meth:`styles` takes, with this probability, the w of a second latent
            ``z2 ~ N(0, I)`` (torch's global RNG) for the layers from a cut drawn uniformly in ``1 .. num_ws - 1``.
            0 = off (the default; the presets set it).
        num_fp16_res: run the synthesis blocks of the top ``num_fp16_res`` resolutions (never 4x4) in reduced
            precision (StyleGAN2-ADA's option; 0 = float32 everywhere). Weights stay float32 and are cast at use;
            the RGB skip image stays float32.
        reduced_dtype: the reduced dtype: ``auto`` (float16 on CUDA, bfloat16 on CPU), ``bf16`` or ``fp16``
            (CUDA only; float16 activations are clamped to +-256).

    Attributes:
        w_avg: buffer float ``[w_dim]``, moving average of ``w`` over training forwards (truncation centre).
        noise_mode: ``auto`` (random in training mode, const in eval mode), ``random``, ``const`` or ``none``.
        num_ws: the number of per-layer styles (``2 log2 R - 2``): one per synthesis conv plus the last toRGB
            (each toRGB shares its w with the next block's first conv).

    Shapes: ``input_layer``: z float ``[N, z_dim]`` -> packed h float ``[N, C4 + img_channels + ceil(w_dim/16),
    4, 4]``; ``synthesis``: h -> float ``[N, img_channels, R, R]`` (in [-1, 1] with ``tanh_output``).

    Raises:
        ValueError: on an invalid option; ``fp16`` blocks on a device other than CUDA (at the forward).
    """

    def __init__(self, *, resolution: int = 256, img_channels: int = 3, z_dim: int = 512, width: float = 1.0,
                 num_classes: int = 0, w_dim: int | None = None, mapping_layers: int = 8,
                 mapping_lr_mul: float = 0.01, channel_base: int = 32768, channel_max: int = 512,
                 tanh_output: bool = True, w_avg_beta: float = 0.995, mbstd_group: int = 4,
                 mixing_prob: float = 0.0, num_fp16_res: int = 0, reduced_dtype: str = "auto") -> None:
        _check_options(resolution, img_channels, z_dim, width, num_classes, w_dim, mapping_layers, mapping_lr_mul,
                       channel_base, channel_max, mbstd_group, mixing_prob, num_fp16_res, reduced_dtype)
        config = dict(resolution=resolution, img_channels=img_channels, z_dim=z_dim, width=width,
                      num_classes=num_classes, w_dim=w_dim, mapping_layers=mapping_layers,
                      mapping_lr_mul=mapping_lr_mul, channel_base=channel_base, channel_max=channel_max,
                      tanh_output=tanh_output, mixing_prob=mixing_prob, num_fp16_res=num_fp16_res,
                      reduced_dtype=reduced_dtype)
        super().__init__(z_dim=z_dim, resolution=resolution, img_channels=img_channels, num_classes=num_classes,
                         config=config)
        self.w_dim = int(w_dim or z_dim)
        self.tanh_output = bool(tanh_output)
        self.w_avg_beta = float(w_avg_beta)
        self.mixing_prob = float(mixing_prob)
        self.num_fp16_res, self.reduced_dtype = int(num_fp16_res), reduced_dtype
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
        self.fp16_resolution = fp16_resolution(resolution, self.num_fp16_res)
        self.num_ws = sum(b.num_conv for b in self.blocks) + 1
        self.c0 = ch(4)
        self.w_channels = -(-self.w_dim // 16)
        self.h_channels = self.c0 + img_channels + self.w_channels

    # -- mapping ------------------------------------------------------------------------------------------------------
    def mapping(self, z: Tensor, c: Tensor | None = None, truncation_psi: float = 1.0,
                update_w_avg: bool = True) -> Tensor:
        """Latents to ``w``: float ``[N, z_dim]`` (+ long ``[N]`` labels) -> float ``[N, w_dim]``.

        In training mode it updates ``w_avg`` (also under ``torch.no_grad``) unless ``update_w_avg`` is False;
        ``truncation_psi != 1`` returns ``w_avg + psi * (w - w_avg)`` (sampling only; 0 gives ``w_avg`` for every z).

        Raises:
            ValueError: malformed ``z`` or labels.
        """
        c = self._check_z(z, c)
        x = normalize_2nd_moment(z.to(torch.float32))
        if self.embed is not None:
            y = normalize_2nd_moment(self.embed(F.one_hot(c, self.num_classes).to(x.dtype)))
            x = torch.cat([x, y], dim=1)
        w = self.mapping_net(x)
        if self.training and update_w_avg:
            with torch.no_grad():
                self.w_avg.copy_(w.detach().float().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        if truncation_psi != 1.0:
            w = self.w_avg.to(w.dtype).lerp(w, truncation_psi)
        return w

    def styles(self, z: Tensor, c: Tensor | None = None, truncation_psi: float = 1.0,
               broadcast: bool = False) -> Tensor:
        """The per-layer styles of a forward, with style mixing in training mode (``mixing_prob > 0``).

        Args:
            z: float ``[N, z_dim]``; c: long ``[N]`` labels of a conditional G (the mixing latent keeps them).
            truncation_psi: truncation of both w's (1 = off).
            broadcast: always return ``[N, num_ws, w_dim]`` (the path-length penalty differentiates w.r.t. it).

        Returns:
            float ``[N, w_dim]`` (one w for every layer: no mixing happened and ``broadcast`` is False) or
            ``[N, num_ws, w_dim]``: layer ``l`` of sample ``n`` has ``w2_n`` when ``l >= cut_n``, else ``w_n``,
            with ``cut_n`` uniform in ``1 .. num_ws - 1`` with probability ``mixing_prob`` and ``num_ws`` (no
            mixing) otherwise. The second w does not update ``w_avg``.
        """
        w = self.mapping(z, c, truncation_psi)
        mix = self.training and self.mixing_prob > 0 and self.num_ws > 1
        if not mix:
            return w.unsqueeze(1).repeat(1, self.num_ws, 1) if broadcast else w
        n, dev = w.shape[0], w.device
        w2 = self.mapping(torch.randn_like(z), c, truncation_psi, update_w_avg=False)
        cut = torch.randint(1, self.num_ws, (n,), device=dev)
        cut = torch.where(torch.rand(n, device=dev) < self.mixing_prob, cut, torch.full_like(cut, self.num_ws))
        second = torch.arange(self.num_ws, device=dev).unsqueeze(0) >= cut.unsqueeze(1)  # [N, num_ws]
        return torch.where(second.unsqueeze(2), w2.unsqueeze(1), w.unsqueeze(1))

    # -- synthesis ----------------------------------------------------------------------------------------------------
    def _noise_mode(self) -> str:
        return resolve_noise_mode(self.noise_mode, self.training)

    def _pack(self, x: Tensor, img: Tensor, w: Tensor) -> Tensor:
        pad = self.w_channels * 16 - self.w_dim
        wp = F.pad(w, (0, pad)).reshape(w.shape[0], self.w_channels, 4, 4)
        return torch.cat([x.float(), img, wp.to(torch.float32)], dim=1)

    def _unpack(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if h.dim() != 4 or h.shape[1:] != (self.h_channels, 4, 4):
            raise ValueError(f"h must be float [N, {self.h_channels}, 4, 4] (from input_layer); got {tuple(h.shape)}")
        x, img, wp = torch.split(h, [self.c0, self.img_channels, self.w_channels], dim=1)
        return x, img, wp.reshape(h.shape[0], -1)[:, : self.w_dim]

    def input_layer(self, z: Tensor, c: Tensor | None = None, truncation_psi: float = 1.0) -> Tensor:
        """G1 of AdvAug: mapping + constant + the 4x4 block, packed as float ``[N, h_channels, 4, 4]``.

        One w for every layer (no style mixing on this path)."""
        w = self.mapping(z, c, truncation_psi)
        x, img = self.blocks[0](None, None, w, self._noise_mode())
        return self._pack(x, img, w)

    def synthesis(self, h: Tensor, c: Tensor | None = None) -> Tensor:
        """G2 of AdvAug: packed h (see :meth:`input_layer`) -> float ``[N, img_channels, R, R]``; ``c`` unused."""
        x, img, w = self._unpack(h)
        return self._synthesize(x, img, w, start=1)

    def synthesis_from_w(self, w: Tensor) -> Tensor:
        """The whole synthesis network from float ``[N, w_dim]`` (one w for every layer) or per-layer styles
        float ``[N, num_ws, w_dim]`` -> float ``[N, img_channels, R, R]``.

        Raises:
            ValueError: another shape.
        """
        if not ((w.dim() == 2 and w.shape[1] == self.w_dim) or (w.dim() == 3 and w.shape[1:] == (self.num_ws,
                                                                                               self.w_dim))):
            raise ValueError(f"w must be float [N, {self.w_dim}] or [N, {self.num_ws}, {self.w_dim}]; "
                             f"got {tuple(w.shape)}")
        return self._synthesize(None, None, w, start=0)

    def _synthesize(self, x: Tensor | None, img: Tensor | None, ws: Tensor, start: int) -> Tensor:
        mode = self._noise_mode()
        idx = sum(b.num_conv for b in self.blocks[:start])
        reduced = None
        for block, res in zip(self.blocks[start:], self.block_resolutions[start:]):
            dtype = torch.float32
            if res >= self.fp16_resolution:
                reduced = reduced or resolve_reduced_dtype(self.reduced_dtype, ws.device)
                dtype = reduced
            block_ws = ws if ws.dim() == 2 else ws[:, idx: idx + block.num_ws]
            x, img = block(x, img, block_ws, mode, dtype)
            idx += block.num_conv
        return torch.tanh(img) if self.tanh_output else img

    def forward(self, z: Tensor, c: Tensor | None = None, truncation_psi: float = 1.0) -> Tensor:
        """Generate images: z float ``[N, z_dim]`` (+ labels) -> float ``[N, img_channels, R, R]`` (float32).

        In training mode with ``mixing_prob > 0`` some samples mix two styles (see :meth:`styles`).

        Args:
            z: latents, N(0, I).
            c: long ``[N]`` labels; required when conditional, ignored otherwise.
            truncation_psi: truncation trick in w (1 = off, training always uses 1).

        Raises:
            ValueError: malformed ``z`` or labels.
        """
        return self.synthesis_from_w(self.styles(z, c, truncation_psi))


class StyleGAN2Discriminator(DiscriminatorBase):
    """StyleGAN2 residual discriminator with minibatch std (Karras et al. 2020, arXiv:1912.04958).

    Args: as :class:`StyleGAN2Generator` (``z_dim``, ``w_dim``, mapping options, ``mixing_prob`` and
    ``tanh_output`` accepted for a shared config and unused), plus ``mbstd_group`` (minibatch-std group size,
    paper 4; the largest divisor of N not above it is used) and ``num_fp16_res`` / ``reduced_dtype`` (fromRGB and
    the residual blocks of the top ``num_fp16_res`` resolutions in reduced precision; the 4x4 epilogue stays
    float32).

    Shapes: ``features``: float ``[N, img_channels, R, R]`` -> float ``[N, C4]`` (after the epilogue's first FC and
    LeakyReLU); ``head``: ``[N, C4]`` (+ labels) -> float ``[N]`` raw logits.

    Raises:
        ValueError: on an invalid option.
    """

    def __init__(self, *, resolution: int = 256, img_channels: int = 3, z_dim: int = 512, width: float = 1.0,
                 num_classes: int = 0, w_dim: int | None = None, mapping_layers: int = 8,
                 mapping_lr_mul: float = 0.01, channel_base: int = 32768, channel_max: int = 512,
                 tanh_output: bool = True, mbstd_group: int = 4, mixing_prob: float = 0.0, num_fp16_res: int = 0,
                 reduced_dtype: str = "auto") -> None:
        _check_options(resolution, img_channels, z_dim, width, num_classes, w_dim, mapping_layers, mapping_lr_mul,
                       channel_base, channel_max, mbstd_group, mixing_prob, num_fp16_res, reduced_dtype)
        config = dict(resolution=resolution, img_channels=img_channels, z_dim=z_dim, width=width,
                      num_classes=num_classes, mbstd_group=mbstd_group, num_fp16_res=num_fp16_res,
                      reduced_dtype=reduced_dtype)
        super().__init__(resolution=resolution, img_channels=img_channels, num_classes=num_classes, config=config)
        ch = lambda r: stylegan2_channels(r, width, channel_base, channel_max)
        self.mbstd_group = mbstd_group
        res = [2 ** k for k in range(int(math.log2(resolution)), 2, -1)]  # R, R/2, ..., 8
        # blocks[0] is fromRGB, so AdvAug's block-index split points (advaug.split_D) cut between real layers
        self.blocks = nn.Sequential(EqualConv2d(img_channels, ch(resolution), 1, activation="lrelu"),
                                    *[DiscriminatorBlock(ch(r), ch(r // 2)) for r in res])
        self.fp16_resolution = fp16_resolution(resolution, num_fp16_res)
        for block, r in zip(self.blocks, [resolution, *res]):
            block.reduced_dtype = reduced_dtype if r >= self.fp16_resolution else None
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
        """Epilogue up to the last FC: ``[N, C4, 4, 4]`` -> mbstd -> conv3x3 -> flatten -> FC -> ``[N, C4]``
        (float32 whatever the blocks' precision)."""
        x = self.conv(minibatch_stddev(x if x.dtype == torch.float32 else x.float(), self.mbstd_group))
        return self.fc(x.flatten(1))


@register_model("stylegan2")
def stylegan2(resolution: int = 256, img_channels: int = 3, z_dim: int = 512, width: float = 1.0,
              num_classes: int = 0, w_dim: int | None = None, mapping_layers: int = 8, mapping_lr_mul: float = 0.01,
              channel_base: int = 32768, channel_max: int = 512, tanh_output: bool = True, mbstd_group: int = 4,
              mixing_prob: float = 0.0, num_fp16_res: int = 0, reduced_dtype: str = "auto"
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
        mixing_prob: style-mixing probability in G's training forwards (paper 0.9; 0 = off).
        num_fp16_res: top resolutions of G and D in reduced precision (0 = off; StyleGAN2-ADA uses 4).
        reduced_dtype: ``auto`` (float16 on CUDA, bfloat16 on CPU), ``bf16`` or ``fp16`` (CUDA).

    Returns:
        ``(G, D)``; no layer is tagged for spectral norm. Use :func:`degan.models.create_model`.

    Raises:
        ValueError: a resolution outside 32..256 or not a power of two, or another option out of range.
    """
    common = dict(resolution=resolution, img_channels=img_channels, z_dim=z_dim, width=width,
                  num_classes=num_classes, w_dim=w_dim, mapping_layers=mapping_layers,
                  mapping_lr_mul=mapping_lr_mul, channel_base=channel_base, channel_max=channel_max,
                  tanh_output=tanh_output, mbstd_group=mbstd_group, mixing_prob=mixing_prob,
                  num_fp16_res=num_fp16_res, reduced_dtype=reduced_dtype)
    return StyleGAN2Generator(**common), StyleGAN2Discriminator(**common)


# ---------------------------------------------------------------------------------------------- regularisation


def path_lengths(G: StyleGAN2Generator, z: Tensor, c: Tensor | None = None,
                 generator: torch.Generator | None = None, create_graph: bool = True) -> Tensor:
    """Per-sample Jacobian norms ``||J_w^T y||_2`` of the path-length regulariser (StyleGAN2 section 3.2, Eq. 4).

    ``y`` is an image of N(0, 1) pixels divided by ``sqrt(H W)`` (so the length does not depend on the
    resolution), ``J_w`` the Jacobian of ``G`` w.r.t. the per-layer styles ``ws`` (float ``[N, num_ws, w_dim]``,
    with style mixing in training mode); the length is ``sqrt(mean_l sum_d (d (img . y) / d ws[n, l, d])^2)``.
    Runs in float32 with autocast disabled (reduced-precision blocks of G still run in their dtype).

    Args:
        G: a :class:`StyleGAN2Generator` (or any G with ``styles(z, c, broadcast=True)`` and
            ``synthesis_from_w``).
        z: float ``[N, z_dim]``; c: long ``[N]`` labels or None.
        generator: random stream of ``y`` (CPU generator; drawn on CPU and moved to ``z``'s device).
        create_graph: keep the graph so a penalty of the lengths back-propagates into G (training).

    Returns:
        float32 ``[N]`` lengths >= 0.
    """
    from degan.train.precision import fp32

    with fp32():
        ws = G.styles(z, c, broadcast=True)
        img = G.synthesis_from_w(ws)
        n, ch, h, w = img.shape
        y = torch.randn((n, ch, h, w), generator=generator).to(img.device) / math.sqrt(h * w)
        (grad,) = torch.autograd.grad((img.float() * y).sum(), ws, create_graph=create_graph)
        return grad.float().square().sum(dim=2).mean(dim=1).sqrt()


def path_length_penalty(lengths: Tensor, pl_mean: Tensor | float) -> Tensor:
    """``mean_n (||J_w^T y||_n - a)^2`` for the lengths of :func:`path_lengths` and the target length ``a``
    (the running mean of the lengths, treated as a constant). Returns a scalar float32 tensor >= 0."""
    a = pl_mean.detach() if isinstance(pl_mean, Tensor) else torch.tensor(float(pl_mean))
    return (lengths - a.to(lengths)).square().mean()


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
