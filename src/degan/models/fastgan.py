"""FastGAN (``fastgan``): skip-layer excitation generator and a self-supervised discriminator with simple decoders.

Source: B. Liu, Y. Zhu, K. Song, A. Elgammal. *Towards Faster and Stabilized GAN Training for High-fidelity
Few-shot Image Synthesis*. ICLR 2021, arXiv:2101.04775 (sections 3.1-3.2, Figures 3-4), with the layer sizes of
the authors' released code (odegeasslbc/FastGAN-pytorch, ``models.py`` / ``train.py``: ``ngf = ndf = 64``,
``nz = 256``). Written from the paper, SPEC.md section 9 and those facts; no code copied.

Generator (``R`` = resolution; the paper's 256 / 512 / 1024 px, and 32, 64, 128 px for CPU runs, built by leaving
out the top blocks):

- ``input_layer``: z ``[N, z_dim]`` (+ class embedding when conditional) -> 4x4 transposed conv (``z_dim -> 2 C4``)
  -> BatchNorm -> GLU -> ``[N, C4, 4, 4]``.
- one up-block per doubling 8, 16, ..., R: nearest x2 -> conv3x3 (``C_in -> 2 C_out``) -> BN -> GLU; the blocks at
  8, 32, 128 and 512 px are *compound* (noise injection after each conv, then a second conv3x3 -> noise -> BN ->
  GLU at the new resolution), as in the released code.
- skip-layer excitation (SLE, paper Eq. 1 and Fig. 3): the map at ``r / 16`` is average-pooled to 4x4 ->
  conv4x4 (valid, -> ``C_r`` x 1 x 1) -> LeakyReLU(0.1) -> conv1x1 -> sigmoid, and multiplies the up-block output at
  ``r`` channel-wise, for ``r`` in 64, 128, 256, 512 (8->128, 16->256, 32->512 and 4->64); so a 32 px model has
  no SLE and a 64 px model one (4->64).
- conv3x3 ``C_R -> img_channels`` -> tanh.
- channels at resolution r: ``int(m_r * 64 * width)`` (at least 1) with ``m = {4: 16, 8: 8, 16: 4, 32: 2, 64: 2,
  128: 1, 256: 0.5, 512: 0.25, 1024: 0.125}``: 1024, 512, 256, 128, 128, 64, 32, 16, 8 at width 1.

Discriminator (all at width 1; ``s`` = side of a feature map):

- trunk: a stem brings the image to ``T0 = min(R, 256)`` (256/128/64/32 px: conv3x3; 512: conv4x4 stride 2;
  1024: two conv4x4 stride 2, BN after the second), then residual down-blocks ``(conv4x4/2 -> BN -> LReLU ->
  conv3x3 -> BN -> LReLU + avgpool2 -> conv1x1 -> BN -> LReLU) / 2`` down to 8x8; LeakyReLU(0.2) everywhere. SLE
  inside D from 256 -> 32, 128 -> 16, 64 -> 8 where the source map exists. Channels of a map of side s:
  ``int(d_{2s} * 64 * width)`` with ``d = {8: 16, 16: 8, 32: 4, 64: 2, 128: 1, 256: 0.5, 512: 0.25, 1024: 0.125}``
  (16 at 256, ..., 512 at 8x8).
- a second, small branch on the image down-sampled to ``S = min(128, R / 2)``: conv4x4/2 -> LReLU, then
  ``conv4x4/2 -> BN -> LReLU`` blocks down to 8x8 (256 channels).
- real/fake heads (the :class:`FastGANHead`, ``D.out``): on the 8x8 trunk map conv1x1 (-> 1024) -> BN -> LReLU ->
  conv4x4 (valid) -> 5x5 logits; on the 8x8 small-branch map conv4x4 (valid) -> 5x5 logits.
- self-supervised decoders (paper Eq. 4, Fig. 4): three simple decoders ``(nearest x2 -> conv3x3 -> BN -> GLU)`` x
  ``log2(Tr / 8)`` -> conv3x3 -> tanh reconstruct, at ``Tr = min(128, R)`` px, the whole image from the 8x8 trunk
  map (``decoder_big``), the whole image from the 8x8 small-branch map (``decoder_small``) and one random quarter of
  the image from the matching 8x8 quarter of the 16x16 trunk map (``decoder_part``). Decoder channels
  ``int(m_s * 32 * width)`` (128, 64, 64, 32 at 16, 32, 64, 128 px). They run only when asked
  (:meth:`FastGANDiscriminator.reconstruction_pairs`); the loss on them is :mod:`degan.recon` (technique ``recon``).

Spectral norm on every conv, transposed conv (and embedding) of G and D, decoders included, as the released code
(``create_model(spectral_norm=False)`` turns it off); no biases in convs; BatchNorm in both; init N(0, 0.02) for
conv weights and N(1, 0.02) for BN scales. All prunable layers are plain ``nn.Conv2d`` / ``nn.ConvTranspose2d`` that
read ``self.weight``, so lottery-ticket masks (``pre_sn_hook``) and RG-GAN's dynamic masks come before spectral norm.

Split points: ``G.input_layer`` / ``G.synthesis`` at the 4x4 GLU output (perturbing it also perturbs the SLE source
of the 64 px block); ``D.features`` returns the two 8x8 maps the real/fake heads read, concatenated and flattened,
``[N, (C8 + Cs) * 64]`` (49152 at width 1), ``D.head`` the two heads. FastGAN's blocks are linked by SLE, so the
AdvAug block-index split points (``advaug.split_G`` / ``split_D``) do not exist here (a clear error).

Deviations from the paper / released code, by choice:

- **Logits.** D's two heads give 2 x 25 patch logits per image; ``D(x)`` returns their mean, float ``[N]``, the
  interface every degan discriminator has. The hinge loss is therefore taken on the per-image mean, where the
  released code takes it per patch logit (``mean(relu(1 - patch))``; it also draws the margin from U[0.8, 1) instead
  of 1). The G loss ``-mean(D(G(z)))`` is the same either way.
- **One output image.** The released G also emits a 128 px image from the 128 px features (``to_128``) that feeds
  D's small branch for fakes; here G returns one image (the degan interface) and D's small branch always reads the
  input down-sampled by area averaging (the released code down-samples reals by nearest neighbour). So ``to_128``
  (``64 * 3`` weights at width 1) is absent.
- **tanh.** G's output goes through tanh at every resolution (the released code applies it at 1024 px only).
- **SLE activation.** LeakyReLU(0.1) as the paper's Figure 3 and SPEC.md; the released code uses Swish
  (``sle_activation="swish"``, Python API only).
- **Noise.** Fresh N(0, 1) noise (torch's RNG on the features' device) in training mode; in eval mode the fixed
  per-layer ``noise_const`` buffers, so ``G_ema`` maps a latent to one image (``G.noise_mode`` overrides:
  ``auto`` | ``random`` | ``const`` | ``none``), as :mod:`degan.models.stylegan2` does.
- **Random quarter.** drawn per image (from the augmentation generator) instead of once per batch.
- **Conditional** (``num_classes > 0``, not in the paper): G concatenates a class embedding to z; D adds a projection
  term ``<embed(c), mean_{hw}(maps)>`` to the mean logit.
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from degan.models.registry import register_model
from degan.models.layers import DiscriminatorBase, GeneratorBase, check_common_options, check_labels, mark_sn, up2
from degan.models.stylegan2 import NOISE_MODES as _NOISE_MODES
from degan.models.stylegan2 import resolve_noise_mode

__all__ = [
    "FastGANDiscriminator",
    "FastGANGenerator",
    "FastGANHead",
    "FastGANMaps",
    "RESOLUTIONS",
    "SkipLayerExcitation",
    "fastgan",
    "take_quadrant",
]

RESOLUTIONS = (32, 64, 128, 256, 512, 1024)
NOISE_MODES = _NOISE_MODES  # the same modes as StyleGAN2's noise injection
SLE_ACTIVATIONS = ("lrelu", "swish")
_G_MULT = {4: 16, 8: 8, 16: 4, 32: 2, 64: 2, 128: 1, 256: 0.5, 512: 0.25, 1024: 0.125}
_D_MULT = {8: 16, 16: 8, 32: 4, 64: 2, 128: 1, 256: 0.5, 512: 0.25, 1024: 0.125}
_COMPOUND = (8, 32, 128, 512)  # G up-blocks with two convs and noise injection
_SLE_G = (64, 128, 256, 512)  # G: SLE from r // 16 into r
_SLE_D = (32, 16, 8)  # D: SLE from 8 s into s
RECON_MAX = 128  # decoders reconstruct at min(128, R) px


# ---------------------------------------------------------------------------------------------- helpers


def _ch(mult: float, base: float) -> int:
    return max(1, int(mult * base))


def _conv(c_in: int, c_out: int, k: int, stride: int = 1, padding: int = 0) -> nn.Conv2d:
    """Bias-free conv, weight N(0, 0.02), tagged for spectral norm."""
    conv = nn.Conv2d(c_in, c_out, k, stride=stride, padding=padding, bias=False)
    nn.init.normal_(conv.weight, 0.0, 0.02)
    return mark_sn(conv)


def _bn(c: int) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(c)
    nn.init.normal_(bn.weight, 1.0, 0.02)
    nn.init.zeros_(bn.bias)
    return bn


def _lrelu(x: Tensor) -> Tensor:
    return F.leaky_relu(x, 0.2)


def _resize(x: Tensor, size: int) -> Tensor:
    """Square images to side ``size``: area averaging down (integer factor), nearest neighbour up."""
    s = x.shape[-1]
    if s == size:
        return x
    if s > size:
        return F.avg_pool2d(x, s // size)
    return F.interpolate(x, size=(size, size), mode="nearest")


def take_quadrant(x: Tensor, quadrant: Tensor) -> Tensor:
    """Per-sample quarter of a map: ``x`` float ``[N, C, H, W]`` (H, W even), ``quadrant`` long ``[N]`` in 0..3
    (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right) -> float ``[N, C, H/2, W/2]``."""
    n, c, h, w = x.shape
    q = quadrant.to(x.device)
    parts = x.reshape(n, c, 2, h // 2, 2, w // 2).permute(0, 2, 4, 1, 3, 5)  # [N, 2, 2, C, H/2, W/2]
    return parts[torch.arange(n, device=x.device), q // 2, q % 2]


def _check_options(resolution: int, img_channels: int, z_dim: int, width: float, num_classes: int,
                   sle_activation: str) -> None:
    if resolution not in RESOLUTIONS:
        raise ValueError(f"fastgan resolution must be one of {', '.join(map(str, RESOLUTIONS))} (the paper's 256, "
                         f"512, 1024 and smaller CPU sizes); got {resolution!r}")
    check_common_options(img_channels, z_dim, width, num_classes)
    if sle_activation not in SLE_ACTIVATIONS:
        raise ValueError(f"sle_activation must be one of {', '.join(SLE_ACTIVATIONS)}; got {sle_activation!r}")


# ---------------------------------------------------------------------------------------------- blocks


class SkipLayerExcitation(nn.Module):
    """SLE (paper Eq. 1): ``y = x_big * sigmoid(conv1x1(act(conv4x4(avgpool_4x4(x_small)))))``.

    Args:
        c_small: channels of the low-resolution source map.
        c_big: channels of the map that is excited.
        activation: ``lrelu`` (LeakyReLU 0.1, the paper) or ``swish`` (the released code).

    Shapes: ``forward(x_small [N, c_small, h, w], x_big [N, c_big, H, W]) -> [N, c_big, H, W]``.
    """

    def __init__(self, c_small: int, c_big: int, activation: str = "lrelu") -> None:
        super().__init__()
        self.conv4 = _conv(c_small, c_big, 4)
        self.conv1 = _conv(c_big, c_big, 1)
        self.activation = activation

    def forward(self, x_small: Tensor, x_big: Tensor) -> Tensor:
        s = self.conv4(F.adaptive_avg_pool2d(x_small, 4))
        s = F.leaky_relu(s, 0.1) if self.activation == "lrelu" else F.silu(s)
        return x_big * torch.sigmoid(self.conv1(s))


class NoiseInjection(nn.Module):
    """``x + strength * noise`` with one noise channel broadcast over C; ``strength`` is learned (init 0).

    ``mode``: ``random`` (fresh N(0, 1)), ``const`` (the fixed ``noise_const`` buffer) or ``none``.
    """

    def __init__(self, resolution: int) -> None:
        super().__init__()
        self.strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))

    def forward(self, x: Tensor, mode: str) -> Tensor:
        if mode == "random":
            noise = torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], device=x.device, dtype=x.dtype)
        elif mode == "const":
            noise = self.noise_const.to(x.dtype)
        else:
            return x
        return x + self.strength * noise


class UpBlock(nn.Module):
    """Nearest x2 -> conv3x3 (-> noise) -> BN -> GLU; compound: then conv3x3 -> noise -> BN -> GLU again.

    Shapes: ``[N, c_in, r/2, r/2] -> [N, c_out, r, r]``.
    """

    def __init__(self, c_in: int, c_out: int, resolution: int, compound: bool) -> None:
        super().__init__()
        self.conv1 = _conv(c_in, 2 * c_out, 3, padding=1)
        self.bn1 = _bn(2 * c_out)
        self.compound = compound
        if compound:
            self.noise1 = NoiseInjection(resolution)
            self.conv2 = _conv(c_out, 2 * c_out, 3, padding=1)
            self.noise2 = NoiseInjection(resolution)
            self.bn2 = _bn(2 * c_out)

    def forward(self, x: Tensor, noise_mode: str = "random") -> Tensor:
        x = self.conv1(up2(x))
        if self.compound:
            x = self.noise1(x, noise_mode)
        x = F.glu(self.bn1(x), dim=1)
        if self.compound:
            x = F.glu(self.bn2(self.noise2(self.conv2(x), noise_mode)), dim=1)
        return x


class DownBlockComp(nn.Module):
    """Residual down-block of D: ``(conv4x4/2 -> BN -> LReLU -> conv3x3 -> BN -> LReLU  +  avgpool2 -> conv1x1 -> BN
    -> LReLU) / 2``, ``[N, c_in, s, s] -> [N, c_out, s/2, s/2]``."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = _conv(c_in, c_out, 4, stride=2, padding=1)
        self.bn1 = _bn(c_out)
        self.conv2 = _conv(c_out, c_out, 3, padding=1)
        self.bn2 = _bn(c_out)
        self.skip = _conv(c_in, c_out, 1)
        self.bn_skip = _bn(c_out)

    def forward(self, x: Tensor) -> Tensor:
        main = _lrelu(self.bn2(self.conv2(_lrelu(self.bn1(self.conv1(x))))))
        skip = _lrelu(self.bn_skip(self.skip(F.avg_pool2d(x, 2))))
        return (main + skip) / 2


class DownBlock(nn.Sequential):
    """conv4x4/2 -> BN -> LReLU(0.2): ``[N, c_in, s, s] -> [N, c_out, s/2, s/2]`` (D's small branch)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(_conv(c_in, c_out, 4, stride=2, padding=1), _bn(c_out), nn.LeakyReLU(0.2))


class SimpleDecoder(nn.Module):
    """8x8 features -> (nearest x2 -> conv3x3 -> BN -> GLU) per doubling -> conv3x3 -> tanh.

    Args:
        c_in: channels of the 8x8 input.
        out_size: side of the reconstruction (16 .. 128).
        img_channels: 1 or 3.
        base: channel base (``32 * width``); channels ``int(m_s * base)`` at side s.

    Shapes: ``[N, c_in, 8, 8] -> [N, img_channels, out_size, out_size]`` in [-1, 1].
    """

    def __init__(self, c_in: int, out_size: int, img_channels: int, base: float) -> None:
        super().__init__()
        blocks, s, c = [], 8, c_in
        while s < out_size:
            s *= 2
            c_out = _ch(_G_MULT[s], base)
            blocks.append(UpBlock(c, c_out, s, compound=False))
            c = c_out
        self.blocks = nn.ModuleList(blocks)
        self.to_img = _conv(c, img_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return torch.tanh(self.to_img(x))


class FastGANMaps(NamedTuple):
    """The discriminator trunk's maps that heads and decoders read (float, side 16 / 8 / 8)."""

    feat16: Tensor  # [N, C16, 16, 16], trunk (after SLE)
    feat8: Tensor  # [N, C8, 8, 8], trunk (after SLE), read by the big real/fake head and decoder_big
    small8: Tensor  # [N, Cs, 8, 8], small branch, read by the small head and decoder_small


class FastGANHead(nn.Module):
    """D's real/fake heads on the packed 8x8 maps, plus the projection term when conditional (``D.out``).

    ``rf_big``: conv1x1 (C8 -> hidden) -> BN -> LReLU(0.2) -> conv4x4 (valid) -> 5x5 logits; ``rf_small``: conv4x4
    (valid) on the small-branch map -> 5x5 logits; the output is the mean of the 50 patch logits per image (plus
    ``<embed(c), mean_{hw}(maps)>`` when conditional).

    Shapes: ``forward(f [N, (c_big + c_small) * 64], c long [N] | None) -> [N]``.
    """

    def __init__(self, c_big: int, c_small: int, hidden: int, num_classes: int = 0) -> None:
        super().__init__()
        self.c_big, self.c_small = c_big, c_small
        self.rf_big = nn.Sequential(_conv(c_big, hidden, 1), _bn(hidden), nn.LeakyReLU(0.2), _conv(hidden, 1, 4))
        self.rf_small = _conv(c_small, 1, 4)
        self.embed = mark_sn(nn.Embedding(num_classes, c_big + c_small)) if num_classes > 0 else None
        if self.embed is not None:
            nn.init.xavier_uniform_(self.embed.weight)

    def unpack(self, f: Tensor) -> tuple[Tensor, Tensor]:
        """``[N, (c_big + c_small) * 64]`` -> (``[N, c_big, 8, 8]``, ``[N, c_small, 8, 8]``)."""
        maps = f.reshape(f.shape[0], self.c_big + self.c_small, 8, 8)
        return maps[:, : self.c_big], maps[:, self.c_big:]

    def patch_logits(self, f: Tensor) -> Tensor:
        """The 2 x 25 patch logits, float ``[N, 50]`` (trunk head first, as the released code's ``cat``)."""
        big, small = self.unpack(f)
        return torch.cat([self.rf_big(big).flatten(1), self.rf_small(small).flatten(1)], dim=1)

    def forward(self, f: Tensor, c: Tensor | None = None) -> Tensor:
        out = self.patch_logits(f).mean(dim=1)
        if self.embed is not None and c is not None:
            pooled = f.reshape(f.shape[0], self.c_big + self.c_small, 64).mean(dim=2)
            out = out + (self.embed(c) * pooled).sum(dim=1)
        return out


# ---------------------------------------------------------------------------------------------- networks


class FastGANGenerator(GeneratorBase):
    """FastGAN generator with skip-layer excitation (Liu et al., ICLR 2021, arXiv:2101.04775); see the module
    docstring for the layers.

    Args:
        resolution: output side: 32, 64, 128, 256, 512 or 1024 (paper: 256, 512, 1024).
        img_channels: 1 or 3.
        z_dim: latent size (released code: 256).
        width: channel multiplier (1.0 = ``ngf = 64``, the released code).
        num_classes: 0 = unconditional (the paper); else a class embedding (size ``z_dim``) is concatenated to z.
        sle_activation: ``lrelu`` (paper) or ``swish`` (released code) inside SLE.

    Attributes:
        noise_mode: ``auto`` (random in training mode, const in eval mode), ``random``, ``const`` or ``none``.

    Shapes: ``input_layer``: z float ``[N, z_dim]`` -> float ``[N, C4, 4, 4]`` (``C4 = int(1024 * width)``);
    ``synthesis``: that -> float ``[N, img_channels, R, R]`` in [-1, 1].

    Raises:
        ValueError: on an invalid option.
    """

    def __init__(self, *, resolution: int = 256, img_channels: int = 3, z_dim: int = 256, width: float = 1.0,
                 num_classes: int = 0, sle_activation: str = "lrelu") -> None:
        _check_options(resolution, img_channels, z_dim, width, num_classes, sle_activation)
        config = dict(resolution=resolution, img_channels=img_channels, z_dim=z_dim, width=width,
                      num_classes=num_classes, sle_activation=sle_activation)
        super().__init__(z_dim=z_dim, resolution=resolution, img_channels=img_channels, num_classes=num_classes,
                         config=config)
        ngf = 64 * width
        ch = lambda r: _ch(_G_MULT[r], ngf)  # noqa: E731
        self.noise_mode = "auto"
        self.c0 = ch(4)
        self.embed = nn.Embedding(num_classes, z_dim) if num_classes > 0 else None
        if self.embed is not None:
            nn.init.normal_(self.embed.weight, 0.0, 1.0)
        in_dim = z_dim * (2 if num_classes > 0 else 1)
        self.init = mark_sn(nn.ConvTranspose2d(in_dim, 2 * self.c0, 4, bias=False))
        nn.init.normal_(self.init.weight, 0.0, 0.02)
        self.bn0 = _bn(2 * self.c0)
        self.block_resolutions = [2 ** k for k in range(3, int(math.log2(resolution)) + 1)]
        self.blocks = nn.ModuleList(UpBlock(ch(r // 2), ch(r), r, compound=r in _COMPOUND)
                                    for r in self.block_resolutions)
        self.sle = nn.ModuleDict({str(r): SkipLayerExcitation(ch(r // 16), ch(r), sle_activation)
                                  for r in _SLE_G if r <= resolution})
        self.sources = {r // 16 for r in _SLE_G if r <= resolution}
        self.to_img = _conv(ch(resolution), img_channels, 3, padding=1)

    def _noise_mode(self) -> str:
        return resolve_noise_mode(self.noise_mode, self.training)

    def input_layer(self, z: Tensor, c: Tensor | None = None) -> Tensor:
        """G1 of AdvAug: float ``[N, z_dim]`` (+ long ``[N]`` labels when conditional) -> float ``[N, C4, 4, 4]``."""
        c = self._check_z(z, c)
        if self.embed is not None:
            z = torch.cat([z, self.embed(c)], dim=1)
        return F.glu(self.bn0(self.init(z[:, :, None, None])), dim=1)

    def synthesis(self, h: Tensor, c: Tensor | None = None) -> Tensor:
        """G2 of AdvAug: float ``[N, C4, 4, 4]`` -> float ``[N, img_channels, R, R]`` in [-1, 1]; ``c`` unused.

        Raises:
            ValueError: ``h`` is not ``[N, C4, 4, 4]``.
        """
        if h.dim() != 4 or h.shape[1:] != (self.c0, 4, 4):
            raise ValueError(f"h must be float [N, {self.c0}, 4, 4] (from input_layer); got {tuple(h.shape)}")
        mode = self._noise_mode()
        sources = {4: h}
        x = h
        for r, block in zip(self.block_resolutions, self.blocks):
            x = block(x, mode)
            if str(r) in self.sle:
                x = self.sle[str(r)](sources[r // 16], x)
            if r in self.sources:
                sources[r] = x
        return torch.tanh(self.to_img(x))


class FastGANDiscriminator(DiscriminatorBase):
    """FastGAN discriminator: residual trunk with SLE, a small branch, patch heads and three simple decoders
    (Liu et al., ICLR 2021, arXiv:2101.04775); see the module docstring for the layers.

    Args: as :class:`FastGANGenerator` (``z_dim`` is accepted for a shared config and unused).

    Shapes: ``features``: float ``[N, img_channels, R, R]`` -> float ``[N, F]``, the two 8x8 maps the heads read,
    concatenated along channels and flattened, ``F = (C8 + Cs) * 64``; ``head``: ``[N, F]`` (+ labels) -> float
    ``[N]`` raw logits (mean of the 50 patch logits). :meth:`reconstruction_pairs` gives the decoders' outputs and
    their targets.

    Raises:
        ValueError: on an invalid option.
    """

    def __init__(self, *, resolution: int = 256, img_channels: int = 3, z_dim: int = 256, width: float = 1.0,
                 num_classes: int = 0, sle_activation: str = "lrelu") -> None:
        _check_options(resolution, img_channels, z_dim, width, num_classes, sle_activation)
        config = dict(resolution=resolution, img_channels=img_channels, z_dim=z_dim, width=width,
                      num_classes=num_classes, sle_activation=sle_activation)
        super().__init__(resolution=resolution, img_channels=img_channels, num_classes=num_classes, config=config)
        ndf = 64 * width
        ch = lambda s: _ch(_D_MULT[2 * s], ndf)  # noqa: E731  (trunk map of side s)
        ch_small = lambda s: _ch(_D_MULT[4 * s], ndf)  # noqa: E731  (small-branch map of side s)
        self.trunk_size = t0 = min(resolution, 256)
        self.small_size = min(RECON_MAX, resolution // 2)
        self.recon_size = min(RECON_MAX, resolution)
        # stem: the image -> [N, ch(t0), t0, t0]
        if resolution <= 256:
            stem = [_conv(img_channels, ch(t0), 3, padding=1), nn.LeakyReLU(0.2)]
        elif resolution == 512:
            stem = [_conv(img_channels, ch(256), 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        else:
            stem = [_conv(img_channels, ch(512), 4, stride=2, padding=1), nn.LeakyReLU(0.2),
                    _conv(ch(512), ch(256), 4, stride=2, padding=1), _bn(ch(256)), nn.LeakyReLU(0.2)]
        self.stem = nn.Sequential(*stem)
        sides = [t0 // 2 ** k for k in range(int(math.log2(t0 // 8)) + 1)]  # t0, ..., 8
        self.down = nn.ModuleList(DownBlockComp(ch(s), ch(s // 2)) for s in sides[:-1])
        self.sle = nn.ModuleDict({str(s): SkipLayerExcitation(ch(8 * s), ch(s), sle_activation)
                                  for s in _SLE_D if 8 * s <= t0})
        small = [_conv(img_channels, ch_small(self.small_size // 2), 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        s = self.small_size // 2
        while s > 8:
            small.append(DownBlock(ch_small(s), ch_small(s // 2)))
            s //= 2
        self.small = nn.Sequential(*small)
        c8, cs = ch(8), ch_small(8)
        self.feature_dim = (c8 + cs) * 64
        self.out = FastGANHead(c8, cs, _ch(16, ndf), num_classes)
        dec_base = 32 * width
        self.decoder_big = SimpleDecoder(c8, self.recon_size, img_channels, dec_base)
        self.decoder_part = SimpleDecoder(ch(16), self.recon_size, img_channels, dec_base)
        self.decoder_small = SimpleDecoder(cs, self.recon_size, img_channels, dec_base)
        self._records: list | None = None

    # -- trunk, features, head ------------------------------------------------------------------------------------
    def trunk(self, img: Tensor) -> FastGANMaps:
        """The maps the heads and decoders read: float ``[N, img_channels, R, R]`` -> :class:`FastGANMaps`."""
        x = self.stem(img)
        maps, s = {self.trunk_size: x}, self.trunk_size
        for block in self.down:
            x = block(x)
            s //= 2
            if str(s) in self.sle:
                x = self.sle[str(s)](maps[8 * s], x)
            maps[s] = x
        small = self.small(_resize(img, self.small_size))
        return FastGANMaps(maps[16], maps[8], small)

    def pack(self, maps: FastGANMaps) -> Tensor:
        """``[N, C8 + Cs, 8, 8]`` flattened to float ``[N, F]``: the input of :class:`FastGANHead`."""
        return torch.cat([maps.feat8, maps.small8], dim=1).flatten(1)

    def features(self, img: Tensor, c: Tensor | None = None) -> Tensor:
        """D1 of AdvAug: float ``[N, img_channels, R, R]`` -> float ``[N, F]`` (see :meth:`pack`).

        Inside :meth:`record_maps` the trunk maps of every call are kept, so the reconstruction term can reuse the
        forward pass that scored the reals instead of running the trunk again.
        """
        self._check_img(img, c)
        maps = self.trunk(img)
        if self._records is not None:
            self._records.append((img, maps))
        return self.pack(maps)

    def head(self, f: Tensor, c: Tensor | None = None) -> Tensor:
        """D2 of AdvAug: float ``[N, F]`` (+ labels) -> float ``[N]`` (mean patch logit + projection term)."""
        return self.out(f, check_labels(c, self.num_classes, f.shape[0]))

    # -- self-supervision -----------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def record_maps(self) -> Iterator[list]:
        """Within the block, :meth:`features` appends ``(img, maps)`` of every call to the yielded list (which is
        dropped on exit, so nothing outlives the step)."""
        previous, self._records = self._records, []
        try:
            yield self._records
        finally:
            self._records = previous

    def reconstruction_pairs(self, real: Tensor, quadrant: Tensor, maps: FastGANMaps | None = None
                             ) -> list[tuple[str, Tensor, Tensor]]:
        """The decoders' reconstructions of ``real`` and their targets (paper Eq. 4), at ``Tr = min(128, R)`` px.

        Args:
            real: float ``[N, img_channels, R, R]``, the (augmented) reals D scored.
            quadrant: long ``[N]`` in 0..3, the quarter each image's ``decoder_part`` reconstructs (0 top-left,
                1 top-right, 2 bottom-left, 3 bottom-right).
            maps: the trunk maps of ``real`` when already computed (:meth:`record_maps`); None runs the trunk.

        Returns:
            ``[("all", rec, target), ("small", rec, target), ("part", rec, target)]``, each float
            ``[N, img_channels, Tr, Tr]``; reconstructions in [-1, 1] with gradient to D, targets the reals
            resized by area averaging (the quarter: cropped at full resolution, then resized).
        """
        if maps is None:
            maps = self.trunk(real)
        t = self.recon_size
        whole = _resize(real, t)
        return [("all", self.decoder_big(maps.feat8), whole),
                ("small", self.decoder_small(maps.small8), whole),
                ("part", self.decoder_part(take_quadrant(maps.feat16, quadrant)),
                 _resize(take_quadrant(real, quadrant), t))]


@register_model("fastgan")
def fastgan(resolution: int = 256, img_channels: int = 3, z_dim: int = 256, width: float = 1.0,
            num_classes: int = 0, sle_activation: str = "lrelu") -> tuple[FastGANGenerator, FastGANDiscriminator]:
    """Build the FastGAN pair (Liu et al., ICLR 2021, arXiv:2101.04775); see :mod:`degan.models.fastgan`.

    Args:
        resolution: 32, 64, 128, 256, 512 or 1024 (the paper: 256, 512, 1024; smaller sizes leave out top blocks).
        img_channels: 1 or 3.
        z_dim: latent size (released code: 256).
        width: channel multiplier (1.0 = the released code's ``ngf = ndf = 64``).
        num_classes: 0 = unconditional (the paper).
        sle_activation: ``lrelu`` (paper, default) or ``swish`` (released code).

    Returns:
        ``(G, D)`` with every conv, transposed conv and embedding of both tagged for spectral norm; use
        :func:`degan.models.create_model`.

    Raises:
        ValueError: a resolution not in 32..1024 (powers of two), or another option out of range.
    """
    kw = dict(resolution=resolution, img_channels=img_channels, z_dim=z_dim, width=width, num_classes=num_classes,
              sle_activation=sle_activation)
    return FastGANGenerator(**kw), FastGANDiscriminator(**kw)


# The objective terms this family's training adds (technique names): the technique factories read it from the
# registered builder, so `recon` is on for fastgan runs (recon.weight > 0) and absent for every other model.
fastgan.objective_terms = ("recon",)
