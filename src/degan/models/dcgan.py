"""CPU-sized DCGAN-style pair with a width multiplier (``dcgan``), for tests, the demo and reduced-scale runs.

Sources: Radford, Metz, Chintala. *Unsupervised Representation Learning with Deep Convolutional Generative
Adversarial Networks*. ICLR 2016, arXiv:1511.06434 (BN + ReLU generator, LeakyReLU discriminator, N(0, 0.02)
init), and the SN-DCGAN discriminator of Miyato et al., *Spectral Normalization for GANs*, ICLR 2018,
arXiv:1802.05957 (spectral norm on every D layer, LeakyReLU 0.1, no BN in D).

Choices made here (documented, not from either paper):

- G upsamples with nearest-neighbour x2 + conv3x3 instead of ConvTranspose 4x4 stride 2: no checkerboard
  artefacts, and 9/16 of the multiply-adds.
- Channels at resolution ``r`` (G and D): ``base * min(8, resolution // r)``, ``base = max(8, round(32 * width))``;
  so at 32 px and width 1 the G goes 256 (4x4) -> 128 -> 64 -> 32 (32x32) -> img.
- D: conv4x4 stride 2 per halving (first one from the image) down to 4x4, then one conv3x3 at 4x4, all with
  LeakyReLU(0.1); ``features`` = global **sum** pooling over the 4x4 map (as SNGAN does) -> ``[N, F]``,
  ``F = base * min(8, resolution // 4)``; ``head`` = Linear(F, 1) (plus the projection term when conditional).
- Conditional (``num_classes > 0``): G concatenates a learned class embedding (size ``z_dim``) to ``z`` before
  the latent projection; D uses a projection head (Miyato & Koyama 2018).
"""

from __future__ import annotations


import torch
from torch import Tensor, nn

from degan.models.registry import register_model
from degan.models.layers import (
    DiscriminatorBase,
    GeneratorBase,
    ProjectionHead,
    check_common_options,
    init_normal,
    mark_sn,
    Up2,
)

__all__ = ["DCGANGenerator", "DCGANDiscriminator", "dcgan", "dcgan_base_channels"]


def dcgan_base_channels(width: float) -> int:
    """Channels at the highest resolution: ``max(8, round(32 * width))``."""
    return max(8, int(round(32 * width)))


def _check_options(resolution: int, img_channels: int, z_dim: int, width: float, num_classes: int) -> None:
    if not isinstance(resolution, int) or resolution < 16 or resolution & (resolution - 1):
        raise ValueError(f"dcgan resolution must be a power of two >= 16 (16, 32, 64, ...); got {resolution!r}")
    check_common_options(img_channels, z_dim, width, num_classes)


def _channels(base: int, resolution: int, r: int) -> int:
    return base * min(8, resolution // r)


class DCGANGenerator(GeneratorBase):
    """DCGAN-style generator: Linear -> 4x4 -> (nearest up x2, conv3x3, BN, ReLU) per doubling -> conv3x3 -> tanh.

    Radford et al. 2016 (arXiv:1511.06434), with nearest upsampling + conv3x3 instead of transposed convs.
    No spectral norm. Init: conv/linear weights N(0, 0.02), BN weight 1, biases 0.

    Args:
        resolution: output side, a power of two >= 16.
        img_channels: 1 or 3.
        z_dim: latent size.
        width: channel multiplier (see :func:`dcgan_base_channels`).
        num_classes: 0 = unconditional; else a class embedding is concatenated to ``z``.

    Shapes: ``input_layer``: z float ``[N, z_dim]`` -> ``[N, C0, 4, 4]`` (after BN + ReLU),
    ``C0 = base * min(8, resolution // 4)``; ``synthesis`` -> float ``[N, img_channels, R, R]`` in [-1, 1].

    Raises:
        ValueError: on an invalid option.
    """

    def __init__(
        self, *, resolution: int = 32, img_channels: int = 3, z_dim: int = 128, width: float = 1.0, num_classes: int = 0
    ) -> None:
        _check_options(resolution, img_channels, z_dim, width, num_classes)
        config = dict(resolution=resolution, img_channels=img_channels, z_dim=z_dim, width=width, num_classes=num_classes)
        super().__init__(z_dim=z_dim, resolution=resolution, img_channels=img_channels, num_classes=num_classes, config=config)
        base = dcgan_base_channels(width)
        self.c0 = _channels(base, resolution, 4)
        self.embed = nn.Embedding(num_classes, z_dim) if num_classes > 0 else None
        in_dim = z_dim * (2 if num_classes > 0 else 1)
        self.fc = init_normal(nn.Linear(in_dim, 16 * self.c0, bias=False))
        self.bn0 = nn.BatchNorm2d(self.c0)
        blocks = []
        r = 4
        while r < resolution:
            c_in, c_out = _channels(base, resolution, r), _channels(base, resolution, 2 * r)
            blocks += [
                Up2(),
                init_normal(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
            r *= 2
        self.blocks = nn.Sequential(*blocks)
        self.to_img = init_normal(nn.Conv2d(_channels(base, resolution, resolution), img_channels, 3, padding=1))
        if self.embed is not None:
            nn.init.normal_(self.embed.weight, 0.0, 1.0)

    def input_layer(self, z: Tensor, c: Tensor | None = None) -> Tensor:
        """float ``[N, z_dim]`` (+ long ``[N]`` labels when conditional) -> float ``[N, C0, 4, 4]``, >= 0."""
        c = self._check_z(z, c)
        if self.embed is not None:
            z = torch.cat([z, self.embed(c)], dim=1)
        h = self.fc(z).view(z.shape[0], self.c0, 4, 4)
        return torch.relu(self.bn0(h))

    def synthesis(self, h: Tensor, c: Tensor | None = None) -> Tensor:
        """float ``[N, C0, 4, 4]`` -> float ``[N, img_channels, R, R]`` in [-1, 1]; ``c`` is unused here."""
        return self.output(self.blocks(h))

    def output(self, h: Tensor) -> Tensor:
        """Last layers after ``blocks``: conv3x3 -> tanh, float ``[N, C, R, R]`` -> ``[N, img_channels, R, R]``."""
        return torch.tanh(self.to_img(h))


class DCGANDiscriminator(DiscriminatorBase):
    """SN-DCGAN-style discriminator: conv4x4 stride 2 stack with LeakyReLU(0.1) down to 4x4, conv3x3, sum pool.

    Miyato et al. 2018 (arXiv:1802.05957) / Radford et al. 2016; every conv, the final linear and (when
    conditional) the projection embedding are tagged for spectral norm. Init: N(0, 0.02) convs, biases 0.

    Args: as :class:`DCGANGenerator` (``z_dim`` is accepted for a shared config and unused).

    Shapes: ``features``: float ``[N, img_channels, R, R]`` -> float ``[N, F]`` (global sum over 4x4),
    ``F = base * min(8, resolution // 4)``; ``head``: ``[N, F]`` -> float ``[N]`` raw logits.

    Raises:
        ValueError: on an invalid option.
    """

    def __init__(
        self, *, resolution: int = 32, img_channels: int = 3, z_dim: int = 128, width: float = 1.0, num_classes: int = 0
    ) -> None:
        _check_options(resolution, img_channels, z_dim, width, num_classes)
        config = dict(resolution=resolution, img_channels=img_channels, z_dim=z_dim, width=width, num_classes=num_classes)
        super().__init__(resolution=resolution, img_channels=img_channels, num_classes=num_classes, config=config)
        base = dcgan_base_channels(width)
        layers: list[nn.Module] = []
        c_in, r = img_channels, resolution
        while r > 4:
            c_out = _channels(base, resolution, r // 2)
            layers += [mark_sn(init_normal(nn.Conv2d(c_in, c_out, 4, stride=2, padding=1))), nn.LeakyReLU(0.1)]
            c_in, r = c_out, r // 2
        self.feature_dim = _channels(base, resolution, 4)
        layers += [mark_sn(init_normal(nn.Conv2d(c_in, self.feature_dim, 3, padding=1))), nn.LeakyReLU(0.1)]
        self.blocks = nn.Sequential(*layers)
        self.out = ProjectionHead(self.feature_dim, num_classes)

    def features(self, img: Tensor, c: Tensor | None = None) -> Tensor:
        """float ``[N, img_channels, R, R]`` -> float ``[N, F]`` (sum over the final 4x4 map)."""
        self._check_img(img, c)
        return self.pool(self.blocks(img))

    def pool(self, h: Tensor) -> Tensor:
        """Global sum pooling of the last block's map, float ``[N, F, 4, 4]`` -> ``[N, F]``."""
        return h.sum(dim=(2, 3))



@register_model("dcgan")
def dcgan(
    resolution: int = 32, img_channels: int = 3, z_dim: int = 128, width: float = 1.0, num_classes: int = 0
) -> tuple[DCGANGenerator, DCGANDiscriminator]:
    """Build a CPU-sized DCGAN pair (see :class:`DCGANGenerator`, :class:`DCGANDiscriminator`).

    Args:
        resolution: image side, a power of two >= 16 (16, 32, 64, ...).
        img_channels: 1 or 3.
        z_dim: latent size.
        width: channel multiplier; ``base = max(8, round(32 * width))`` channels at full resolution.
        num_classes: 0 = unconditional.

    Returns:
        ``(G, D)`` with layers to carry spectral norm tagged (D only); use :func:`degan.models.create_model`.

    Raises:
        ValueError: if ``resolution`` is not a power of two >= 16, ``img_channels`` not in {1, 3}, or another
            option is out of range.
    """
    kwargs = dict(resolution=resolution, img_channels=img_channels, z_dim=z_dim, width=width, num_classes=num_classes)
    return DCGANGenerator(**kwargs), DCGANDiscriminator(**kwargs)
