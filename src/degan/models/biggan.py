"""BigGAN for 32, 64 and 128 px (``biggan``), the class-conditional model of the data-efficient ticket paper.

Source: Brock, Donahue, Simonyan. *Large Scale GAN Training for High Fidelity Natural Image Synthesis*. ICLR 2019,
arXiv:1809.11096, with the settings of SPEC.md section 6 (CIFAR: z 80 in 4 chunks, shared class embedding 128,
conditional BN on [embedding, z chunk], G 384 / D 192 channels, self-attention after G block 2 and D block 1,
spectral norm in G and D, projection discriminator, orthogonal init). Self-attention is the non-local block of SAGAN
(Zhang, Goodfellow, Metaxas, Odena. *Self-Attention Generative Adversarial Networks*. ICML 2019, arXiv:1805.08318);
the projection head is Miyato & Koyama, *cGANs with Projection Discriminator*, ICLR 2018, arXiv:1802.05637.

Architecture (``ch_G``, ``ch_D`` = base channels times ``width``; multiples per block as in the paper's tables):

======  ==============================================  ==============================================  ==========
px      G blocks (4x4 -> R), out channels               D blocks (R -> 4x4 or 8x8), out channels        attention
======  ==============================================  ==============================================  ==========
32      3 up blocks, 4 ch_G each (ch_G 96 -> 384)       optimized down, down, plain, plain; 4 ch_D       16 px
                                                        each (ch_D 48 -> 192)
64      4 up blocks: 16, 8, 4, 2 ch_G (ch_G 96)         optimized down + 3 down: 1, 2, 4, 8, then a      32 px
                                                        down block to 16 ch_D (ch_D 96); 4x4 at the end
128     5 up blocks: 16, 8, 4, 2, 1 ch_G (ch_G 96)      optimized down + 4 down + plain: 1, 2, 4, 8,     64 px
                                                        16, 16 ch_D (ch_D 96)
======  ==============================================  ==============================================  ==========

- G: ``z`` is split into ``n_blocks + 1`` equal chunks (hierarchical latents). Chunk 0 goes through a linear layer
  to the 4x4 map (``input_layer``, the AdvAug split point G1; it does not see the class). Each up block gets
  ``y_i = [shared(c), z_{i+1}]`` (class embedding 128 shared by all blocks; just ``z_{i+1}`` for an unconditional
  model) and applies conditional BN ``BN(x) * (1 + gain(y_i)) + bias(y_i)`` before each of its two ReLU-conv3x3
  (nearest up-sampling before the first conv; shortcut: conv1x1 of the up-sampled input). Output: BN-ReLU-conv3x3-tanh.
- D: residual down blocks (the SNGAN blocks of :mod:`degan.models.sngan`: first block without pre-activation),
  self-attention after the first block whose output has ``attn_resolution``, then ReLU, global **sum** pooling
  (``features``, the AdvAug split point D1) and the projection head ``linear(f) + <embed(c), f>`` (``head``).
- Spectral norm (tagged here, registered by :func:`degan.models.create_model` after any masks) on every conv and
  linear of G and D, the conditional-BN gain/bias projections and D's class embedding; G's shared embedding is plain.
- Init: orthogonal for every conv, linear and embedding weight, zero biases (the paper's ``ortho`` init).
- Prunable layers (SPEC sections 3-4): the convs (incl. self-attention's 1x1 convs) and linears of G and D. The
  conditional-BN gain/bias projections are :class:`CondAffine` modules (normalisation parameters, like BN's
  gamma/beta), not ``nn.Linear``, so ticket and RG-GAN masks leave them alone, as they leave the embeddings.

Choices made here (not from the paper): the 4x4 feature handed from ``input_layer`` to ``synthesis`` carries only
the image feature; the conditioning vectors ``y_i`` computed by ``input_layer`` are kept on the module until the
next ``input_layer`` call, so AdvAug perturbs exactly the 4x4xC map (SPEC section 4) and ``synthesis(h + delta, c)``
reuses the clean ``y_i``. ``G.blocks`` is therefore an ``nn.ModuleList`` (its blocks need ``y_i``): AdvAug offers only
the default G split point for BigGAN; all D split points (``D.blocks`` is a Sequential) work.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from degan.models.registry import register_model
from degan.models.layers import (
    DiscriminatorBase,
    GeneratorBase,
    ProjectionHead,
    check_common_options,
    mark_sn,
    up2,
)
from degan.models.sngan import DBlock, OptimizedDBlock

__all__ = ["BigGANGenerator", "BigGANDiscriminator", "CondAffine", "ConditionalBatchNorm2d", "SelfAttention",
           "biggan", "BIGGAN_ARCH"]

BIGGAN_ARCH: dict[int, dict[str, Any]] = {
    32: {"G_mult": [4, 4, 4, 4], "D_in": [None, 4, 4, 4], "D_out": [4, 4, 4, 4],
         "D_down": [True, True, False, False], "ch_G": 96, "ch_D": 48, "attn": 16},
    64: {"G_mult": [16, 16, 8, 4, 2], "D_in": [None, 1, 2, 4, 8], "D_out": [1, 2, 4, 8, 16],
         "D_down": [True, True, True, True, True], "ch_G": 96, "ch_D": 96, "attn": 32},
    128: {"G_mult": [16, 16, 8, 4, 2, 1], "D_in": [None, 1, 2, 4, 8, 16], "D_out": [1, 2, 4, 8, 16, 16],
          "D_down": [True, True, True, True, True, False], "ch_G": 96, "ch_D": 96, "attn": 64},
}
"""Per resolution: G channel multiples (4x4 input, then each block's output), D block in/out multiples
(``None`` = image channels), D downsampling per block, base channels at width 1 and the default attention
resolution. G goes 4 -> R in ``len(G_mult) - 1`` doublings."""

Z_CHUNK = 20
"""Latent size per chunk at the default ``z_dim`` (SPEC: CIFAR z 80 in 4 chunks; BigGAN 128 px: 120 in 6)."""


def _check_options(resolution: int, img_channels: int, z_dim: int, width: float, num_classes: int,
                   shared_dim: int, attn_resolution: int) -> None:
    if resolution not in BIGGAN_ARCH:
        raise ValueError(f"biggan resolution must be one of {sorted(BIGGAN_ARCH)}; got {resolution!r}")
    check_common_options(img_channels, z_dim, width, num_classes)
    slots = len(BIGGAN_ARCH[resolution]["G_mult"])
    if z_dim % slots:
        raise ValueError(f"biggan at {resolution} px splits z into {slots} equal chunks (first linear + "
                         f"{slots - 1} G blocks); z_dim={z_dim} is not a multiple of {slots}")
    if not isinstance(shared_dim, int) or shared_dim < 1:
        raise ValueError(f"shared_dim must be a positive int; got {shared_dim!r}")
    g_res = [4 * 2 ** (i + 1) for i in range(slots - 1)]
    d_res = _d_resolutions(resolution)
    if attn_resolution != 0 and (attn_resolution not in g_res or attn_resolution not in d_res):
        valid = sorted(set(g_res) & set(d_res))
        raise ValueError(f"attn_resolution={attn_resolution!r} is not a block output of both G and D at {resolution} "
                         f"px; choose one of {valid} or 0 (no self-attention)")


def _d_resolutions(resolution: int) -> list[int]:
    out, r = [], resolution
    for down in BIGGAN_ARCH[resolution]["D_down"]:
        r = r // 2 if down else r
        out.append(r)
    return out


def _channels(mult: int, base: int, width: float) -> int:
    return max(2, int(round(mult * base * width)))


def init_orthogonal(net: nn.Module) -> nn.Module:
    """Orthogonal init of every conv, linear, embedding and :class:`CondAffine` weight; zero biases (BigGAN)."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding, CondAffine)):
            nn.init.orthogonal_(m.weight)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
    return net


# ---------------------------------------------------------------------------------------------------------------------
# layers


class CondAffine(nn.Module):
    """``y -> y W^T + b``: the projection of a conditioning vector to BN gains or biases.

    A linear map, but deliberately not an ``nn.Linear``: it belongs to the normalisation, so the pruning code
    (which selects layers by type) does not mask it. Tagged for spectral norm (as BigGAN's SNLinear).

    Args:
        in_features: size of ``y``. out_features: channels of the normalised map.

    Shapes: float ``[N, in_features]`` -> float ``[N, out_features]``.
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        nn.init.orthogonal_(self.weight)
        mark_sn(self)

    def forward(self, y: Tensor) -> Tensor:
        return F.linear(y, self.weight, self.bias)


class ConditionalBatchNorm2d(nn.Module):
    """``BN(x) * (1 + gain(y)) + bias(y)``: BatchNorm without its own affine, scaled and shifted per sample.

    Args:
        channels: C. cond_dim: size of the conditioning vector ``y``.

    Shapes: x float ``[N, C, H, W]``, y float ``[N, cond_dim]`` -> float ``[N, C, H, W]``.
    """

    def __init__(self, channels: int, cond_dim: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False, eps=eps, momentum=momentum)
        self.gain = CondAffine(cond_dim, channels)
        self.bias = CondAffine(cond_dim, channels)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        g = 1.0 + self.gain(y)
        b = self.bias(y)
        return self.bn(x) * g[:, :, None, None] + b[:, :, None, None]


class SelfAttention(nn.Module):
    """SAGAN non-local block (Zhang et al. 2019, arXiv:1805.08318), as in BigGAN.

    ``theta = conv1x1(x)`` (C/8 channels), ``phi = maxpool2(conv1x1(x))`` (C/8), ``g = maxpool2(conv1x1(x))``
    (C/2); ``beta = softmax(theta^T phi)`` over the pooled positions; ``out = x + gamma * conv1x1(g beta^T)``
    with the scalar ``gamma`` initialised to 0 (the block starts as the identity). Every conv tagged for SN.

    Args:
        channels: C (>= 2; the key/value widths are at least 1).

    Shapes: float ``[N, C, H, W]`` (H, W even) -> float ``[N, C, H, W]``.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.ck, self.cv = max(1, channels // 8), max(1, channels // 2)
        self.theta = mark_sn(nn.Conv2d(channels, self.ck, 1, bias=False))
        self.phi = mark_sn(nn.Conv2d(channels, self.ck, 1, bias=False))
        self.g = mark_sn(nn.Conv2d(channels, self.cv, 1, bias=False))
        self.o = mark_sn(nn.Conv2d(self.cv, channels, 1, bias=False))
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        theta = self.theta(x).view(n, self.ck, h * w)
        phi = F.max_pool2d(self.phi(x), 2).view(n, self.ck, h * w // 4)
        g = F.max_pool2d(self.g(x), 2).view(n, self.cv, h * w // 4)
        beta = torch.softmax(torch.bmm(theta.transpose(1, 2), phi), dim=-1)  # [N, HW, HW/4]
        o = self.o(torch.bmm(g, beta.transpose(1, 2)).view(n, self.cv, h, w))
        return x + self.gamma * o


class GBlock(nn.Module):
    """BigGAN up block: CBN-ReLU-up-conv3x3-CBN-ReLU-conv3x3 + shortcut conv1x1(up(x)).

    Shapes: x float ``[N, C_in, H, W]``, y float ``[N, cond_dim]`` -> float ``[N, C_out, 2H, 2W]``.
    """

    def __init__(self, c_in: int, c_out: int, cond_dim: int) -> None:
        super().__init__()
        self.bn1 = ConditionalBatchNorm2d(c_in, cond_dim)
        self.conv1 = mark_sn(nn.Conv2d(c_in, c_out, 3, padding=1))
        self.bn2 = ConditionalBatchNorm2d(c_out, cond_dim)
        self.conv2 = mark_sn(nn.Conv2d(c_out, c_out, 3, padding=1))
        self.shortcut = mark_sn(nn.Conv2d(c_in, c_out, 1))

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        h = self.conv1(up2(F.relu(self.bn1(x, y))))
        h = self.conv2(F.relu(self.bn2(h, y)))
        # a 1x1 conv commutes with nearest up-sampling: same output as conv1x1(up(x)) at a quarter of the FLOPs
        return h + up2(self.shortcut(x))


# ---------------------------------------------------------------------------------------------------------------------
# networks


def _resolve(resolution: int, z_dim: int | None, attn_resolution: int | None) -> tuple[int, int]:
    if resolution not in BIGGAN_ARCH:
        raise ValueError(f"biggan resolution must be one of {sorted(BIGGAN_ARCH)}; got {resolution!r}")
    arch = BIGGAN_ARCH[resolution]
    z = Z_CHUNK * len(arch["G_mult"]) if z_dim is None else z_dim
    attn = arch["attn"] if attn_resolution is None else attn_resolution
    return z, attn


class BigGANGenerator(GeneratorBase):
    """BigGAN generator (Brock et al. 2019, arXiv:1809.11096); see the module docstring for the layout.

    Args:
        resolution: 32, 64 or 128.
        img_channels: 1 or 3.
        z_dim: latent size, a multiple of the number of chunks (``n_blocks + 1``: 4 at 32 px, 5 at 64, 6 at 128);
            None = 20 per chunk (80, 100, 120).
        width: multiplies the base channels (``ch_G`` 96 at every resolution).
        num_classes: 0 = unconditional (conditional BN on the z chunk only), else the shared class embedding.
        shared_dim: size of the shared class embedding (128).
        attn_resolution: resolution of the self-attention block; None = the default (16, 32, 64 px); 0 = none.
        ch: base channels at width 1; None = 96.

    Shapes: ``input_layer``: z float ``[N, z_dim]`` (+ long ``[N]`` labels) -> float ``[N, C0, 4, 4]`` (the
    reshaped linear output of chunk 0; also stores the blocks' conditioning for the following ``synthesis``);
    ``synthesis``: -> float ``[N, img_channels, R, R]`` in [-1, 1].

    Raises:
        ValueError: on an invalid option.
    """

    def __init__(self, *, resolution: int = 32, img_channels: int = 3, z_dim: int | None = None, width: float = 1.0,
                 num_classes: int = 0, shared_dim: int = 128, attn_resolution: int | None = None,
                 ch: int | None = None) -> None:
        z_dim, attn = _resolve(resolution, z_dim, attn_resolution)
        _check_options(resolution, img_channels, z_dim, width, num_classes, shared_dim, attn)
        config = dict(resolution=resolution, img_channels=img_channels, z_dim=z_dim, width=width,
                      num_classes=num_classes, shared_dim=shared_dim, attn_resolution=attn, ch=ch)
        super().__init__(z_dim=z_dim, resolution=resolution, img_channels=img_channels, num_classes=num_classes,
                         config=config)
        arch = BIGGAN_ARCH[resolution]
        base = arch["ch_G"] if ch is None else ch
        chans = [_channels(m, base, width) for m in arch["G_mult"]]
        self.n_chunks = len(chans)
        self.chunk = z_dim // self.n_chunks
        self.shared_dim = shared_dim if num_classes > 0 else 0
        self.shared = nn.Embedding(num_classes, shared_dim) if num_classes > 0 else None
        cond_dim = self.shared_dim + self.chunk
        self.c0 = chans[0]
        self.linear = mark_sn(nn.Linear(self.chunk, 16 * self.c0))
        blocks: list[nn.Module] = []
        r = 4
        for c_in, c_out in zip(chans[:-1], chans[1:]):
            blocks.append(GBlock(c_in, c_out, cond_dim))
            r *= 2
            if r == attn:
                blocks.append(SelfAttention(c_out))
        self.blocks = nn.ModuleList(blocks)
        self.bn = nn.BatchNorm2d(chans[-1])
        self.to_img = mark_sn(nn.Conv2d(chans[-1], img_channels, 3, padding=1))
        init_orthogonal(self)
        self._ys: list[Tensor] | None = None

    def __getstate__(self) -> dict:  # deepcopy / pickle: the per-batch conditioning is not part of the model
        state = self.__dict__.copy()
        state["_ys"] = None
        return state

    def split_z(self, z: Tensor) -> list[Tensor]:
        """float ``[N, z_dim]`` -> ``n_chunks`` float ``[N, z_dim / n_chunks]`` (chunk 0 for the linear)."""
        return list(torch.split(z, self.chunk, dim=1))

    def conditioning(self, z: Tensor, c: Tensor | None) -> list[Tensor]:
        """The per-block conditioning vectors ``y_i = [shared(c), z_{i+1}]``, float ``[N, shared_dim + chunk]``
        each (just the z chunk when unconditional)."""
        chunks = self.split_z(z)[1:]
        if self.shared is None:
            return chunks
        e = self.shared(c)
        return [torch.cat([e, zc], dim=1) for zc in chunks]

    def input_layer(self, z: Tensor, c: Tensor | None = None) -> Tensor:
        """float ``[N, z_dim]`` (+ long ``[N]`` labels when conditional) -> float ``[N, C0, 4, 4]``."""
        c = self._check_z(z, c)
        self._ys = self.conditioning(z, c)
        return self.linear(self.split_z(z)[0]).view(z.shape[0], self.c0, 4, 4)

    def synthesis(self, h: Tensor, c: Tensor | None = None) -> Tensor:
        """float ``[N, C0, 4, 4]`` -> float ``[N, img_channels, R, R]`` in [-1, 1], conditioned on the ``y_i`` of
        the last :meth:`input_layer` call (``c`` is only checked).

        Raises:
            RuntimeError: :meth:`input_layer` was not called before on a batch of the same size.
        """
        ys = self._ys
        if ys is None or ys[0].shape[0] != h.shape[0]:
            raise RuntimeError("BigGAN synthesis(h) needs the conditioning of the same batch: call input_layer(z, c) "
                               "first (or G(z, c))")
        return self._synthesize(h, ys)

    def _synthesize(self, h: Tensor, ys: list[Tensor]) -> Tensor:
        i = 0
        for block in self.blocks:
            if isinstance(block, GBlock):
                h = block(h, ys[i])
                i += 1
            else:
                h = block(h)
        return self.output(h)

    def output(self, h: Tensor) -> Tensor:
        """Last layers: BN-ReLU-conv3x3-tanh, ``[N, C, R, R]`` -> ``[N, img_channels, R, R]``."""
        return torch.tanh(self.to_img(F.relu(self.bn(h))))

    def forward(self, z: Tensor, c: Tensor | None = None) -> Tensor:
        """Generate images: float ``[N, z_dim]`` (+ long ``[N]`` labels) -> float ``[N, img_channels, R, R]`` in
        [-1, 1]; equals ``synthesis(input_layer(z, c), c)`` but leaves the conditioning stored by
        ``input_layer`` alone. Raises ValueError on a malformed ``z`` or missing labels for a conditional G."""
        c = self._check_z(z, c)
        h = self.linear(self.split_z(z)[0]).view(z.shape[0], self.c0, 4, 4)
        return self._synthesize(h, self.conditioning(z, c))


class BigGANDiscriminator(DiscriminatorBase):
    """BigGAN discriminator (Brock et al. 2019) with a projection head; see the module docstring.

    Args: as :class:`BigGANGenerator` (``z_dim`` and ``shared_dim`` accepted for a shared config and unused);
    ``ch``: base channels at width 1, None = 48 at 32 px (-> 192), 96 at 64 and 128 px.

    Shapes: ``features``: float ``[N, img_channels, R, R]`` -> float ``[N, F]`` (ReLU, global sum pooling);
    ``head``: ``[N, F]`` (+ long ``[N]`` labels) -> float ``[N]`` raw logits.

    Raises:
        ValueError: on an invalid option.
    """

    def __init__(self, *, resolution: int = 32, img_channels: int = 3, z_dim: int | None = None, width: float = 1.0,
                 num_classes: int = 0, shared_dim: int = 128, attn_resolution: int | None = None,
                 ch: int | None = None) -> None:
        z_dim, attn = _resolve(resolution, z_dim, attn_resolution)
        _check_options(resolution, img_channels, z_dim, width, num_classes, shared_dim, attn)
        config = dict(resolution=resolution, img_channels=img_channels, z_dim=z_dim, width=width,
                      num_classes=num_classes, shared_dim=shared_dim, attn_resolution=attn, ch=ch)
        super().__init__(resolution=resolution, img_channels=img_channels, num_classes=num_classes, config=config)
        arch = BIGGAN_ARCH[resolution]
        base = arch["ch_D"] if ch is None else ch
        blocks: list[nn.Module] = []
        r, attn_done = resolution, False
        for i, (m_in, m_out, down) in enumerate(zip(arch["D_in"], arch["D_out"], arch["D_down"])):
            c_out = _channels(m_out, base, width)
            if i == 0:
                blocks.append(OptimizedDBlock(img_channels, c_out))
            else:
                blocks.append(DBlock(_channels(m_in, base, width), c_out, downsample=down))
            r = r // 2 if down else r
            if r == attn and not attn_done:
                blocks.append(SelfAttention(c_out))
                attn_done = True
        self.blocks = nn.Sequential(*blocks)
        self.feature_dim = _channels(arch["D_out"][-1], base, width)
        self.out = ProjectionHead(self.feature_dim, num_classes)
        init_orthogonal(self)

    def features(self, img: Tensor, c: Tensor | None = None) -> Tensor:
        """float ``[N, img_channels, R, R]`` -> float ``[N, F]``, >= 0 (sum of ReLU activations)."""
        self._check_img(img, c)
        return self.pool(self.blocks(img))

    def pool(self, h: Tensor) -> Tensor:
        """ReLU then global sum pooling, float ``[N, F, h, w]`` -> ``[N, F]``."""
        return F.relu(h).sum(dim=(2, 3))


@register_model("biggan")
def biggan(resolution: int = 32, img_channels: int = 3, z_dim: int | None = None, width: float = 1.0,
           num_classes: int = 0, shared_dim: int = 128, attn_resolution: int | None = None,
           ch_G: int | None = None, ch_D: int | None = None) -> tuple[BigGANGenerator, BigGANDiscriminator]:
    """Build a BigGAN pair (Brock et al., ICLR 2019, arXiv:1809.11096) at 32, 64 or 128 px.

    Args:
        resolution: 32, 64 or 128.
        img_channels: 1 or 3.
        z_dim: latent size, a multiple of the chunk count (4 / 5 / 6); None = 80 / 100 / 120.
        width: channel multiplier (1.0 = the paper's widths: G 384 / D 192 at 32 px, ch 96 at 64 and 128 px;
            use e.g. 0.05-0.1 on a CPU).
        num_classes: 0 = unconditional; else class-conditional (shared embedding in G, projection in D).
        shared_dim: size of the shared class embedding (128).
        attn_resolution: where G and D have self-attention; None = 16 / 32 / 64 px; 0 = none.
        ch_G, ch_D: base channels at width 1; None = the defaults of :data:`BIGGAN_ARCH`.

    Returns:
        ``(G, D)`` with every conv, linear and conditional-BN projection of both (and D's class embedding) tagged
        for spectral norm; use :func:`degan.models.create_model`, which registers it after any masks.

    Raises:
        ValueError: resolution not in {32, 64, 128}, z_dim not divisible by the chunk count, an attention
            resolution that G and D do not both have, or another option out of range.
    """
    kw = dict(resolution=resolution, img_channels=img_channels, z_dim=z_dim, width=width, num_classes=num_classes,
              shared_dim=shared_dim, attn_resolution=attn_resolution)
    return BigGANGenerator(**kw, ch=ch_G), BigGANDiscriminator(**kw, ch=ch_D)
