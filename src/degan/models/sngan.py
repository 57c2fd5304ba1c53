"""SNGAN ResNet for 32 px images (``sngan32``), the CIFAR-10 model of the ticket papers.

Source: Miyato, Kataoka, Koyama, Yoshida. *Spectral Normalization for Generative Adversarial Networks*.
ICLR 2018, arXiv:1802.05957 (ResNet architecture of its appendix), as specified in SPEC.md section 6:

- G: z (128) -> Linear -> 4x4x256 -> 3 up ResBlocks (BN-ReLU-nearest up-conv3x3-BN-ReLU-conv3x3; shortcut:
  nearest up + conv1x1) -> BN-ReLU-conv3x3 -> tanh. No spectral norm in G.
- D: optimized first block (conv3x3-ReLU-conv3x3-avgpool; shortcut avgpool-conv1x1; 3 -> 128, 32 -> 16 px) +
  3 ResBlocks (ReLU-conv3x3-ReLU-conv3x3 [-avgpool]; 128 channels; conv1x1 shortcut when downsampling or
  changing channels) -> ReLU -> global **sum** pooling over 8x8 -> Linear(128 -> 1). "The first two
  downsample" (SPEC §6) counts the optimized block, as Table 4 of the SNGAN paper lists it: ResBlock down,
  ResBlock down, ResBlock, ResBlock; so only the first of the three plain ResBlocks downsamples (16 -> 8 px).
  Every D conv and linear is tagged for spectral norm.

Choices made here:

- Init: Xavier-uniform, biases zero; gain sqrt(2) for the convs on the residual branches and gain 1 for
  shortcut convs, the linears and G's last conv (the convention of common SNGAN reimplementations).
- The downsampling shortcut of the non-first D blocks is written avgpool-then-conv1x1, which equals
  conv1x1-then-avgpool exactly (both linear) at a quarter of the cost.
- ``width`` scales channels (G ``round(256 * width)``, D ``round(128 * width)``); conditional models
  (``num_classes > 0``) concatenate a class embedding to ``z`` in G and use a projection head in D
  (Miyato & Koyama, ICLR 2018, arXiv:1802.05637) — extensions, not part of the paper's unconditional model.

Parameter counts at width 1, unconditional, 3 channels: G 4,276,739; D 1,053,825 (spectral norm adds
buffers, not parameters).
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import Tensor, nn

from degan.models.registry import register_model
from degan.models.layers import (
    SQRT2,
    DiscriminatorBase,
    GeneratorBase,
    ProjectionHead,
    check_common_options,
    init_xavier_uniform,
    mark_sn,
    up2,
)

__all__ = ["SNGANGenerator32", "SNGANDiscriminator32", "sngan32", "GBlock", "DBlock", "OptimizedDBlock"]

SNGAN32_PARAMS = {"G": 4_276_739, "D": 1_053_825}


def _check_options(resolution: int, img_channels: int, z_dim: int, width: float, num_classes: int) -> None:
    if resolution != 32:
        raise ValueError(f"sngan32 supports resolution 32 only; got {resolution!r}")
    check_common_options(img_channels, z_dim, width, num_classes)


def _conv(c_in: int, c_out: int, k: int, gain: float, sn: bool = False) -> nn.Conv2d:
    conv = init_xavier_uniform(nn.Conv2d(c_in, c_out, k, padding=k // 2), gain)
    return mark_sn(conv) if sn else conv


# ---------------------------------------------------------------------------------------------- blocks


class GBlock(nn.Module):
    """Up ResBlock: BN-ReLU-up-conv3x3-BN-ReLU-conv3x3 + (up, conv1x1) shortcut. ``[N, Cin, H, W] -> [N, Cout, 2H, 2W]``."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = _conv(c_in, c_out, 3, SQRT2)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = _conv(c_out, c_out, 3, SQRT2)
        self.shortcut = _conv(c_in, c_out, 1, 1.0)

    def forward(self, x: Tensor) -> Tensor:
        h = up2(F.relu(self.bn1(x)))
        h = self.conv2(F.relu(self.bn2(self.conv1(h))))
        # a 1x1 conv commutes with nearest up-sampling: the same output at a quarter of the shortcut's FLOPs
        return h + up2(self.shortcut(x))


class OptimizedDBlock(nn.Module):
    """First D block: conv3x3-ReLU-conv3x3-avgpool + (avgpool, conv1x1) shortcut. ``[N, Cin, H, W] -> [N, Cout, H/2, W/2]``."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = _conv(c_in, c_out, 3, SQRT2, sn=True)
        self.conv2 = _conv(c_out, c_out, 3, SQRT2, sn=True)
        self.shortcut = _conv(c_in, c_out, 1, 1.0, sn=True)

    def forward(self, x: Tensor) -> Tensor:
        h = F.avg_pool2d(self.conv2(F.relu(self.conv1(x))), 2)
        return h + self.shortcut(F.avg_pool2d(x, 2))


class DBlock(nn.Module):
    """D ResBlock: ReLU-conv3x3-ReLU-conv3x3 [-avgpool] + shortcut (identity, or [avgpool,] conv1x1)."""

    def __init__(self, c_in: int, c_out: int, downsample: bool) -> None:
        super().__init__()
        self.downsample = downsample
        self.conv1 = _conv(c_in, c_out, 3, SQRT2, sn=True)
        self.conv2 = _conv(c_out, c_out, 3, SQRT2, sn=True)
        self.shortcut = _conv(c_in, c_out, 1, 1.0, sn=True) if (downsample or c_in != c_out) else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv2(F.relu(self.conv1(F.relu(x))))
        s = x
        if self.downsample:
            h, s = F.avg_pool2d(h, 2), F.avg_pool2d(s, 2)
        if self.shortcut is not None:
            s = self.shortcut(s)
        return h + s


# ---------------------------------------------------------------------------------------------- networks


class SNGANGenerator32(GeneratorBase):
    """SNGAN ResNet generator for 32 px (Miyato et al. 2018, arXiv:1802.05957). No spectral norm.

    Args:
        resolution: must be 32.
        img_channels: 1 or 3.
        z_dim: latent size (128 in the paper).
        width: channel multiplier; ``C = max(8, round(256 * width))`` channels throughout.
        num_classes: 0 = unconditional; else a class embedding (size ``z_dim``) is concatenated to ``z``.

    Shapes: ``input_layer``: float ``[N, z_dim]`` -> float ``[N, C, 4, 4]`` (the reshaped linear output, before
    any BN); ``synthesis``: -> float ``[N, img_channels, 32, 32]`` in [-1, 1].

    Raises:
        ValueError: on an invalid option (``resolution != 32``, ``img_channels`` not 1 or 3, ...).
    """

    def __init__(
        self, *, resolution: int = 32, img_channels: int = 3, z_dim: int = 128, width: float = 1.0, num_classes: int = 0
    ) -> None:
        _check_options(resolution, img_channels, z_dim, width, num_classes)
        config = dict(resolution=resolution, img_channels=img_channels, z_dim=z_dim, width=width, num_classes=num_classes)
        super().__init__(z_dim=z_dim, resolution=resolution, img_channels=img_channels, num_classes=num_classes, config=config)
        ch = max(8, int(round(256 * width)))
        self.c0 = ch
        self.embed = nn.Embedding(num_classes, z_dim) if num_classes > 0 else None
        in_dim = z_dim * (2 if num_classes > 0 else 1)
        self.fc = init_xavier_uniform(nn.Linear(in_dim, 16 * ch), 1.0)
        self.blocks = nn.Sequential(GBlock(ch, ch), GBlock(ch, ch), GBlock(ch, ch))
        self.bn = nn.BatchNorm2d(ch)
        self.to_img = _conv(ch, img_channels, 3, 1.0)
        if self.embed is not None:
            nn.init.normal_(self.embed.weight, 0.0, 1.0)

    def input_layer(self, z: Tensor, c: Tensor | None = None) -> Tensor:
        """float ``[N, z_dim]`` (+ long ``[N]`` labels when conditional) -> float ``[N, C, 4, 4]``."""
        c = self._check_z(z, c)
        if self.embed is not None:
            z = torch.cat([z, self.embed(c)], dim=1)
        return self.fc(z).view(z.shape[0], self.c0, 4, 4)

    def synthesis(self, h: Tensor, c: Tensor | None = None) -> Tensor:
        """float ``[N, C, 4, 4]`` -> float ``[N, img_channels, 32, 32]`` in [-1, 1]; ``c`` is unused here."""
        return self.output(self.blocks(h))

    def output(self, h: Tensor) -> Tensor:
        """Last layers after ``blocks``: BN-ReLU-conv3x3-tanh, ``[N, C, 32, 32]`` -> ``[N, img_channels, 32, 32]``."""
        return torch.tanh(self.to_img(F.relu(self.bn(h))))


class SNGANDiscriminator32(DiscriminatorBase):
    """SNGAN ResNet discriminator for 32 px (Miyato et al. 2018, arXiv:1802.05957); every conv/linear tagged for SN.

    Args: as :class:`SNGANGenerator32` (``z_dim`` accepted for a shared config and unused); channels
    ``C = max(8, round(128 * width))``.

    Shapes: ``features``: float ``[N, img_channels, 32, 32]`` -> float ``[N, C]`` (ReLU then global sum over
    the 8x8 map); ``head``: ``[N, C]`` -> float ``[N]`` raw logits.

    Raises:
        ValueError: on an invalid option.
    """

    def __init__(
        self, *, resolution: int = 32, img_channels: int = 3, z_dim: int = 128, width: float = 1.0, num_classes: int = 0
    ) -> None:
        _check_options(resolution, img_channels, z_dim, width, num_classes)
        config = dict(resolution=resolution, img_channels=img_channels, z_dim=z_dim, width=width, num_classes=num_classes)
        super().__init__(resolution=resolution, img_channels=img_channels, num_classes=num_classes, config=config)
        ch = max(8, int(round(128 * width)))
        self.blocks = nn.Sequential(
            OptimizedDBlock(img_channels, ch),
            DBlock(ch, ch, downsample=True),
            DBlock(ch, ch, downsample=False),
            DBlock(ch, ch, downsample=False),
        )
        self.feature_dim = ch
        self.out = ProjectionHead(ch, num_classes)

    def features(self, img: Tensor, c: Tensor | None = None) -> Tensor:
        """float ``[N, img_channels, 32, 32]`` -> float ``[N, C]``, >= 0 (sum of ReLU activations)."""
        self._check_img(img, c)
        return self.pool(self.blocks(img))

    def pool(self, h: Tensor) -> Tensor:
        """ReLU then global sum pooling, float ``[N, C, 8, 8]`` -> ``[N, C]``."""
        return F.relu(h).sum(dim=(2, 3))



@register_model("sngan32")
def sngan32(
    resolution: int = 32, img_channels: int = 3, z_dim: int = 128, width: float = 1.0, num_classes: int = 0
) -> tuple[SNGANGenerator32, SNGANDiscriminator32]:
    """Build the SNGAN CIFAR ResNet pair (Miyato et al., ICLR 2018, arXiv:1802.05957).

    Args:
        resolution: must be 32.
        img_channels: 1 or 3.
        z_dim: latent size (paper: 128).
        width: channel multiplier (1.0 = the paper's G 256 / D 128 channels).
        num_classes: 0 = unconditional (the paper's setting).

    Returns:
        ``(G, D)`` with every D conv/linear tagged for spectral norm; use :func:`degan.models.create_model`.
        At width 1 (3 channels, unconditional): G has 4,276,739 and D 1,053,825 parameters.

    Raises:
        ValueError: if ``resolution != 32`` or another option is out of range.
    """
    kwargs = dict(resolution=resolution, img_channels=img_channels, z_dim=z_dim, width=width, num_classes=num_classes)
    return SNGANGenerator32(**kwargs), SNGANDiscriminator32(**kwargs)
