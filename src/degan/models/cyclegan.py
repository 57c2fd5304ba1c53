"""CycleGAN networks: the ResNet generator and the 70x70 PatchGAN discriminator, with width / depth options.

Source: Zhu, Park, Isola, Efros. *Unpaired Image-to-Image Translation using Cycle-Consistent Adversarial
Networks*. ICCV 2017, arXiv:1703.10593, appendix 7.2 (generator after Johnson et al. 2016, discriminator the
70x70 PatchGAN of Isola et al. 2017); the image-to-image ticket setting of Chen et al., *GANs Can Play Lottery
Tickets Too*, ICLR 2021, arXiv:2106.00134.

- Generator ``c7s1-64, d128, d256, R256 x n_blocks, u128, u64, c7s1-3``: ``c7s1-k`` = reflection pad 3 +
  conv7x7 stride 1 + InstanceNorm + ReLU; ``dk`` = conv3x3 stride 2 + InstanceNorm + ReLU; ``Rk`` = residual block of
  two reflection-padded conv3x3 + InstanceNorm (ReLU after the first); ``uk`` = ConvTranspose3x3 stride 2
  (output padding 1) + InstanceNorm + ReLU; the last ``c7s1`` has no norm and ends in tanh. ``n_blocks`` = 9 at
  >= 256 px and 6 below, as in the paper.
- Discriminator ``C64-C128-C256-C512`` then a 1-channel conv: conv4x4 + InstanceNorm + LeakyReLU(0.2), stride 2
  except the last two convs (stride 1), no norm on the first; padding 1 throughout. With ``n_layers=3`` each output
  logit sees a 70x70 patch; the output is a grid of patch logits (no sigmoid: the LSGAN loss takes raw scores).
- InstanceNorm without affine parameters or running statistics, convs with biases, weights ~ N(0, 0.02) (the
  reference implementation's defaults).

Choices made here: ``width`` multiplies every channel count (``max(4, round(64 * width))`` at the top) and
``n_blocks`` / ``n_layers`` can be lowered, for CPU-sized runs; ``width=1`` with the defaults is the paper's
network. These networks do not follow the noise-to-image ``(G, D)`` interface of :mod:`degan.models` (G maps
images, not latents), so they have their own registry, :data:`TRANSLATION_MODELS`, instead of entries in
``degan.models.MODELS`` whose parametrized tests assume ``G(z, c)``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from torch import Tensor, nn

from degan.models.layers import init_normal
from degan.registry import Registry

__all__ = [
    "TRANSLATION_MODELS",
    "PatchDiscriminator",
    "ResnetGenerator",
    "create_translation_model",
    "cyclegan",
    "default_n_blocks",
    "patch_grid_size",
]

TRANSLATION_MODELS: Registry[Callable[..., tuple[nn.Module, nn.Module]]] = Registry("image-to-image model")


def _channels(width: float, base: int = 64) -> int:
    return max(4, int(round(base * width)))


def default_n_blocks(resolution: int) -> int:
    """Residual blocks of the CycleGAN generator: 9 at >= 256 px, 6 below (Zhu et al. 2017, §7.2)."""
    return 9 if resolution >= 256 else 6


def patch_grid_size(resolution: int, n_layers: int = 3) -> int:
    """Side of the PatchGAN logit grid for a ``resolution`` x ``resolution`` input.

    ``n_layers`` stride-2 conv4x4 (padding 1) halve the side (floor), then two stride-1 conv4x4 (padding 1)
    each take 1 off: 256 px -> 30, 128 -> 14, 32 -> 2 with ``n_layers=3``.
    """
    s = int(resolution)
    for _ in range(n_layers):
        s = (s + 2 - 4) // 2 + 1
    return s - 2


def _check(img_channels: int, width: float, name: str) -> None:
    if img_channels not in (1, 3) or isinstance(img_channels, bool):
        raise ValueError(f"{name}: img_channels must be 1 or 3, got {img_channels!r}")
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not width > 0:
        raise ValueError(f"{name}: width must be a number > 0, got {width!r}")


def _init(net: nn.Module) -> nn.Module:
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            init_normal(m, 0.02)
    return net


def _norm(c: int) -> nn.Module:
    return nn.InstanceNorm2d(c, affine=False, track_running_stats=False)


class ResidualBlock(nn.Module):
    """``x + IN(conv3x3(pad(ReLU(IN(conv3x3(pad(x)))))))`` with reflection padding; shape-preserving."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), _norm(channels), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), _norm(channels))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """CycleGAN ResNet generator ``c7s1-64, d128, d256, R256 x n_blocks, u128, u64, c7s1-3`` (Zhu et al. 2017).

    Args:
        img_channels: input and output channels, 1 or 3 (both domains share it).
        width: channel multiplier; channels ``c = max(4, round(64 * width))``, ``2c``, ``4c``.
        n_blocks: residual blocks (>= 0); None = :func:`default_n_blocks` of ``resolution``.
        resolution: image side in pixels, a multiple of 4 (the two stride-2 convs and two stride-2 transposed
            convs must return the input size); only used to pick ``n_blocks`` and to check inputs.

    Shapes: ``forward``: float ``[N, img_channels, H, W]`` in [-1, 1] (H, W multiples of 4) -> float
    ``[N, img_channels, H, W]`` in [-1, 1] (tanh).

    Raises:
        ValueError: bad options.
    """

    def __init__(self, *, img_channels: int = 3, width: float = 1.0, n_blocks: int | None = None,
                 resolution: int = 256) -> None:
        super().__init__()
        _check(img_channels, width, "ResnetGenerator")
        if not isinstance(resolution, int) or resolution < 4 or resolution % 4:
            raise ValueError(f"ResnetGenerator: resolution must be a multiple of 4 (>= 4), got {resolution!r}")
        n_blocks = default_n_blocks(resolution) if n_blocks is None else n_blocks
        if not isinstance(n_blocks, int) or n_blocks < 0:
            raise ValueError(f"ResnetGenerator: n_blocks must be an integer >= 0, got {n_blocks!r}")
        c = _channels(width)
        self.img_channels, self.resolution, self.n_blocks, self.width = img_channels, resolution, n_blocks, width
        self.config = dict(img_channels=img_channels, width=width, n_blocks=n_blocks, resolution=resolution)
        self.encoder = nn.Sequential(
            nn.ReflectionPad2d(3), nn.Conv2d(img_channels, c, 7), _norm(c), nn.ReLU(True),
            nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), _norm(2 * c), nn.ReLU(True),
            nn.Conv2d(2 * c, 4 * c, 3, stride=2, padding=1), _norm(4 * c), nn.ReLU(True))
        self.blocks = nn.Sequential(*[ResidualBlock(4 * c) for _ in range(n_blocks)])
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(4 * c, 2 * c, 3, stride=2, padding=1, output_padding=1), _norm(2 * c), nn.ReLU(True),
            nn.ConvTranspose2d(2 * c, c, 3, stride=2, padding=1, output_padding=1), _norm(c), nn.ReLU(True),
            nn.ReflectionPad2d(3), nn.Conv2d(c, img_channels, 7), nn.Tanh())
        _init(self)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.img_channels or x.shape[2] % 4 or x.shape[3] % 4:
            raise ValueError(f"ResnetGenerator expects float [N, {self.img_channels}, H, W] with H, W multiples of 4, "
                             f"got {tuple(x.shape)}")
        return self.decoder(self.blocks(self.encoder(x)))


class PatchDiscriminator(nn.Module):
    """PatchGAN discriminator ``C64-C128-C256-C512-1`` (70x70 patches with ``n_layers=3``; Isola et al. 2017).

    Args:
        img_channels: 1 or 3.
        width: channel multiplier; the first conv has ``max(4, round(64 * width))`` channels, doubling per layer up
            to 8x.
        n_layers: stride-2 convs after which a stride-1 conv and the 1-channel output conv follow (>= 1);
            3 = the 70x70 PatchGAN.

    Shapes: ``forward``: float ``[N, img_channels, H, W]`` -> float ``[N, 1, h, w]`` raw patch scores, with
    ``h = patch_grid_size(H, n_layers)`` (see :func:`patch_grid_size`; 30 at 256 px, 2 at 32 px).

    Raises:
        ValueError: bad options, or an input too small to leave a patch grid (``h < 1``).
    """

    def __init__(self, *, img_channels: int = 3, width: float = 1.0, n_layers: int = 3) -> None:
        super().__init__()
        _check(img_channels, width, "PatchDiscriminator")
        if not isinstance(n_layers, int) or n_layers < 1:
            raise ValueError(f"PatchDiscriminator: n_layers must be an integer >= 1, got {n_layers!r}")
        c = _channels(width)
        self.img_channels, self.n_layers, self.width = img_channels, n_layers, width
        self.config = dict(img_channels=img_channels, width=width, n_layers=n_layers)
        layers: list[nn.Module] = [nn.Conv2d(img_channels, c, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2 ** n, 8)
            stride = 2 if n < n_layers else 1
            layers += [nn.Conv2d(c * prev, c * mult, 4, stride=stride, padding=1), _norm(c * mult),
                       nn.LeakyReLU(0.2, True)]
        layers.append(nn.Conv2d(c * mult, 1, 4, stride=1, padding=1))
        self.net = nn.Sequential(*layers)
        _init(self)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.img_channels:
            raise ValueError(f"PatchDiscriminator expects float [N, {self.img_channels}, H, W], got {tuple(x.shape)}")
        if patch_grid_size(min(x.shape[2], x.shape[3]), self.n_layers) < 1:
            raise ValueError(f"PatchDiscriminator with n_layers={self.n_layers} needs larger inputs than "
                             f"{tuple(x.shape[2:])}; lower n_layers")
        return self.net(x)


@TRANSLATION_MODELS.register("cyclegan")
def cyclegan(*, resolution: int = 256, img_channels: int = 3, width: float = 1.0, n_blocks: int | None = None,
             n_layers: int = 3) -> tuple[ResnetGenerator, PatchDiscriminator]:
    """One direction of CycleGAN: ``(G, D)`` = a ResNet generator and a PatchGAN discriminator.

    A CycleGAN trainer builds two such pairs: ``(G_AB, D_B)`` and ``(G_BA, D_A)``.

    Raises:
        ValueError: bad options (see :class:`ResnetGenerator`, :class:`PatchDiscriminator`).
    """
    G = ResnetGenerator(img_channels=img_channels, width=width, n_blocks=n_blocks, resolution=resolution)
    D = PatchDiscriminator(img_channels=img_channels, width=width, n_layers=n_layers)
    return G, D


def create_translation_model(name: str, **kwargs) -> tuple[nn.Module, nn.Module]:
    """Build the image-to-image ``(G, D)`` pair registered as ``name`` (e.g. ``cyclegan``).

    Raises:
        ValueError: unknown name (lists the valid ones) or option (lists the valid options).
    """
    builder = TRANSLATION_MODELS.get(name)
    valid = list(inspect.signature(builder).parameters)
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for model {name!r}; valid options are: {', '.join(valid)}")
    return builder(**kwargs)
