"""Building blocks shared by the model families: spectral-norm tagging, init helpers, G/D base interfaces.

Spectral norm (Miyato, Kataoka, Koyama, Yoshida. *Spectral Normalization for Generative Adversarial
Networks*. ICLR 2018, arXiv:1802.05957) is applied in two steps so that other parametrizations (lottery-ticket
masks) can be registered *before* it (SPEC.md section 3: sigma(W_eff) = 1 only when the mask comes first):

1. model builders create plain layers and tag the ones that should carry spectral norm with :func:`mark_sn`;
2. :func:`degan.models.create_model` calls the optional ``pre_sn_hook`` on G and D, then
   :func:`apply_spectral_norm`, which registers ``torch.nn.utils.parametrizations.spectral_norm`` on every
   tagged module.
"""

from __future__ import annotations

import math
from typing import Any, Iterator

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

__all__ = [
    "SN_ATTR",
    "DiscriminatorBase",
    "GeneratorBase",
    "apply_spectral_norm",
    "check_labels",
    "has_spectral_norm",
    "is_marked_sn",
    "mark_sn",
    "sn_marked_modules",
    "init_xavier_uniform",
    "init_normal",
]

SN_ATTR = "_degan_spectral_norm"


# ---------------------------------------------------------------------------------------------- spectral norm


def mark_sn(module: nn.Module) -> nn.Module:
    """Tag ``module`` (a layer with a ``weight``) to receive spectral norm in :func:`apply_spectral_norm`.

    Returns:
        ``module`` itself, so ``mark_sn(nn.Conv2d(...))`` can be used inline.

    Raises:
        ValueError: if ``module`` has no ``weight``.
    """
    if not hasattr(module, "weight"):
        raise ValueError(f"mark_sn needs a module with a weight; got {type(module).__name__}")
    setattr(module, SN_ATTR, True)
    return module


def is_marked_sn(module: nn.Module) -> bool:
    """Whether ``module`` was tagged with :func:`mark_sn`."""
    return bool(getattr(module, SN_ATTR, False))


def sn_marked_modules(net: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """``(qualified name, module)`` for every module of ``net`` tagged with :func:`mark_sn`."""
    for name, module in net.named_modules():
        if is_marked_sn(module):
            yield name, module


def has_spectral_norm(module: nn.Module, name: str = "weight") -> bool:
    """Whether ``module.<name>`` carries a ``torch.nn.utils.parametrizations.spectral_norm`` parametrization."""
    if not parametrize.is_parametrized(module, name):
        return False
    return any(type(p).__name__ == "_SpectralNorm" for p in module.parametrizations[name])


def apply_spectral_norm(net: nn.Module, n_power_iterations: int = 1, eps: float = 1e-12) -> nn.Module:
    """Register spectral norm on every module of ``net`` tagged with :func:`mark_sn` (in place).

    Uses ``torch.nn.utils.parametrizations.spectral_norm`` (one power iteration per training-mode forward,
    as in Miyato et al. 2018). It is appended after any parametrization already on the weight (e.g. a
    lottery-ticket mask), so spectral norm is computed on the masked weight. Modules that already carry
    spectral norm are skipped, so calling this twice is harmless.

    Args:
        net: the network; modified in place.
        n_power_iterations: power iterations per forward in training mode.
        eps: numerical epsilon of the normalisation.

    Returns:
        ``net``.
    """
    for _, module in list(sn_marked_modules(net)):
        if not has_spectral_norm(module):
            torch.nn.utils.parametrizations.spectral_norm(module, n_power_iterations=n_power_iterations, eps=eps)
    return net


# ---------------------------------------------------------------------------------------------- init


def up2(x: Tensor) -> Tensor:
    """Nearest-neighbour x2 up-sampling, ``[N, C, H, W] -> [N, C, 2H, 2W]``, equal to
    ``F.interpolate(x, scale_factor=2, mode="nearest")`` but written as expand + reshape, which is ~2.7x faster on
    CPU (measured on [64, 256, 16, 16]; interpolate spends most of its time on layout copies)."""
    n, c, h, w = x.shape
    return x[:, :, :, None, :, None].expand(n, c, h, 2, w, 2).reshape(n, c, 2 * h, 2 * w)


class Up2(nn.Module):
    """Module form of :func:`up2`."""

    def forward(self, x: Tensor) -> Tensor:
        return up2(x)


def init_xavier_uniform(module: nn.Module, gain: float = 1.0) -> nn.Module:
    """Xavier-uniform weight with ``gain``, zero bias (Glorot & Bengio 2010). Returns ``module``."""
    nn.init.xavier_uniform_(module.weight, gain=gain)
    if getattr(module, "bias", None) is not None:
        nn.init.zeros_(module.bias)
    return module


def init_normal(module: nn.Module, std: float = 0.02) -> nn.Module:
    """Weight ~ N(0, std^2), zero bias (the DCGAN init of Radford et al. 2016). Returns ``module``."""
    nn.init.normal_(module.weight, 0.0, std)
    if getattr(module, "bias", None) is not None:
        nn.init.zeros_(module.bias)
    return module


SQRT2 = math.sqrt(2.0)


# ---------------------------------------------------------------------------------------------- interfaces


def check_common_options(img_channels: int, z_dim: int, width: float, num_classes: int) -> None:
    """Validate the options every model family shares.

    ``img_channels``: 1 (gray), 3 (RGB), or 2 / 4 (gray + alpha / RGBA, alpha last: ``data.background=keep-alpha``).

    Raises:
        ValueError: ``img_channels`` not in {1, 2, 3, 4}, ``z_dim`` < 1, ``width`` not a positive finite number, or
            ``num_classes`` < 0.
    """
    if isinstance(img_channels, bool) or img_channels not in (1, 2, 3, 4):
        raise ValueError(f"img_channels must be 1 (gray), 3 (RGB), 2 (gray + alpha) or 4 (RGBA); got {img_channels!r}")
    if not isinstance(z_dim, int) or z_dim < 1:
        raise ValueError(f"z_dim must be a positive int; got {z_dim!r}")
    if not (isinstance(width, (int, float)) and math.isfinite(width) and width > 0):
        raise ValueError(f"width must be a positive number; got {width!r}")
    if not isinstance(num_classes, int) or num_classes < 0:
        raise ValueError(f"num_classes must be an int >= 0 (0 = unconditional); got {num_classes!r}")


def check_labels(c: Tensor | None, num_classes: int, n: int) -> Tensor | None:
    """Validate labels ``c`` (long ``[n]``) for a conditional network; return None when ``num_classes == 0``.

    Raises:
        ValueError: if the network is conditional and ``c`` is missing or not long ``[n]``.
    """
    if num_classes == 0:
        return None
    if c is None:
        raise ValueError(f"this model is conditional (num_classes={num_classes}); pass labels c: long [N]")
    if c.dtype != torch.long or c.shape != (n,):
        raise ValueError(f"labels c must be long [N={n}]; got {tuple(c.shape)} {c.dtype}")
    return c


class GeneratorBase(nn.Module):
    """The interface every generator has (subclasses build the layers).

    Attributes:
        name: registered model name.
        config: JSON-serialisable constructor kwargs; ``create_model(name, **config)`` rebuilds the pair.
        z_dim: latent size.
        resolution: output side in pixels.
        img_channels: output channels (1 or 3).
        num_classes: number of classes; 0 = unconditional (then ``c`` is ignored).

    ``forward(z, c) = synthesis(input_layer(z, c), c)``; the split point is where feature-level
    augmentation (AdvAug, SPEC.md section 4) perturbs the generator.
    """

    name: str = ""

    def __init__(self, *, z_dim: int, resolution: int, img_channels: int, num_classes: int, config: dict[str, Any]):
        super().__init__()
        self.z_dim = int(z_dim)
        self.resolution = int(resolution)
        self.img_channels = int(img_channels)
        self.num_classes = int(num_classes)
        self.config = dict(config)

    def input_layer(self, z: Tensor, c: Tensor | None = None) -> Tensor:  # pragma: no cover - abstract
        """Latent projection: float ``[N, z_dim]`` -> float ``[N, C0, 4, 4]``."""
        raise NotImplementedError

    def synthesis(self, h: Tensor, c: Tensor | None = None) -> Tensor:  # pragma: no cover - abstract
        """Features ``[N, C0, 4, 4]`` -> images float ``[N, img_channels, R, R]`` in [-1, 1]."""
        raise NotImplementedError

    def forward(self, z: Tensor, c: Tensor | None = None) -> Tensor:
        """Generate images.

        Args:
            z: float ``[N, z_dim]`` latents (usually N(0, I)).
            c: long ``[N]`` class labels in ``[0, num_classes)``; required when conditional, ignored otherwise.

        Returns:
            float ``[N, img_channels, resolution, resolution]`` in [-1, 1] (tanh output).

        Raises:
            ValueError: if ``z`` is not ``[N, z_dim]`` or labels are missing/malformed for a conditional model.
        """
        return self.synthesis(self.input_layer(z, c), c)

    def _check_z(self, z: Tensor, c: Tensor | None) -> Tensor | None:
        if z.dim() != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must be float [N, {self.z_dim}]; got {tuple(z.shape)}")
        return check_labels(c, self.num_classes, z.shape[0])


class DiscriminatorBase(nn.Module):
    """The interface every discriminator has (subclasses build the layers).

    Attributes: ``name``, ``config``, ``resolution``, ``img_channels``, ``num_classes`` as in
    :class:`GeneratorBase`, plus ``feature_dim`` (F, the size of the pooled feature vector).

    ``forward(x, c) = head(features(x, c), c)``; the split point is where AdvAug perturbs D features.
    """

    name: str = ""

    def __init__(self, *, resolution: int, img_channels: int, num_classes: int, config: dict[str, Any]):
        super().__init__()
        self.resolution = int(resolution)
        self.img_channels = int(img_channels)
        self.num_classes = int(num_classes)
        self.config = dict(config)
        self.feature_dim = 0

    def features(self, img: Tensor, c: Tensor | None = None) -> Tensor:  # pragma: no cover - abstract
        """Images float ``[N, img_channels, R, R]`` -> pooled features float ``[N, F]``."""
        raise NotImplementedError

    def head(self, f: Tensor, c: Tensor | None = None) -> Tensor:
        """Pooled features float ``[N, F]`` (+ labels when conditional) -> raw logits float ``[N]``.

        Default: the subclass's :class:`ProjectionHead` ``self.out`` (final linear + projection term).
        """
        return self.out(f, check_labels(c, self.num_classes, f.shape[0]))

    def forward(self, img: Tensor, c: Tensor | None = None) -> Tensor:
        """Score images.

        Args:
            img: float ``[N, img_channels, resolution, resolution]``, nominally in [-1, 1].
            c: long ``[N]`` labels; required when conditional, ignored otherwise.

        Returns:
            float ``[N]`` raw scores (logits, no sigmoid); higher = more real.

        Raises:
            ValueError: if ``img`` has the wrong shape or labels are missing/malformed for a conditional model.
        """
        return self.head(self.features(img, c), c)

    def _check_img(self, img: Tensor, c: Tensor | None) -> Tensor | None:
        expected = (self.img_channels, self.resolution, self.resolution)
        if img.dim() != 4 or tuple(img.shape[1:]) != expected:
            raise ValueError(f"images must be float [N, {', '.join(map(str, expected))}]; got {tuple(img.shape)}")
        return check_labels(c, self.num_classes, img.shape[0])


class ProjectionHead(nn.Module):
    """Final linear of D plus, when conditional, the projection term ``<embed(c), f>``.

    Projection discriminator: Miyato & Koyama, *cGANs with Projection Discriminator*, ICLR 2018,
    arXiv:1802.05637. Both the linear and the embedding are tagged for spectral norm.

    Args:
        feature_dim: F.
        num_classes: 0 for a plain linear head.
    """

    def __init__(self, feature_dim: int, num_classes: int = 0) -> None:
        super().__init__()
        self.linear = mark_sn(init_xavier_uniform(nn.Linear(feature_dim, 1)))
        self.embed = mark_sn(nn.Embedding(num_classes, feature_dim)) if num_classes > 0 else None
        if self.embed is not None:
            nn.init.xavier_uniform_(self.embed.weight)

    def forward(self, f: Tensor, c: Tensor | None = None) -> Tensor:
        """``f``: float ``[N, F]``, ``c``: long ``[N]`` or None -> float ``[N]``."""
        out = self.linear(f).squeeze(1)
        if self.embed is not None and c is not None:
            out = out + (self.embed(c) * f).sum(dim=1)
        return out
