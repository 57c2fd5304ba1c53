"""Registry of generator/discriminator pairs: ``create_model(name, **kwargs) -> (G, D)``.

Every registered builder returns a ``(G, D)`` pair following :class:`~degan.models.layers.GeneratorBase` and
:class:`~degan.models.layers.DiscriminatorBase`: ``G(z, c) = G.synthesis(G.input_layer(z, c), c)`` and
``D(x, c) = D.head(D.features(x, c), c)``. Builders create plain layers and only *tag* the ones that carry
spectral norm; :func:`create_model` registers spectral norm last, after ``pre_sn_hook`` (lottery-ticket masks).

Registered families: ``dcgan`` (CPU-sized, width multiplier; Radford et al. 2016 / SN-DCGAN of Miyato et al.
2018), ``sngan32`` (the SNGAN CIFAR ResNet, Miyato et al., ICLR 2018, arXiv:1802.05957), ``biggan``
(class-conditional BigGAN at 32, 64, 128 px, Brock et al., ICLR 2019, arXiv:1809.11096; spectral norm in G too),
``stylegan2`` (Karras et al., CVPR 2020, arXiv:1912.04958) and ``fastgan`` (Liu et al., ICLR 2021, arXiv:2101.04775;
skip-layer excitation G, self-supervised D with decoders; spectral norm in G and D) and ``progan`` (Karras et al.,
ICLR 2018, arXiv:1710.10196; progressive growing with fade-in, driven by the ``grow`` technique).
"""

from __future__ import annotations

import inspect
from typing import Callable

from torch import nn

from degan.models.layers import apply_spectral_norm
from degan.models.registry import MODELS, ModelBuilder, register_model

__all__ = ["MODELS", "ModelBuilder", "create_model", "list_models", "register_model"]


def list_models(pattern: str = "*") -> list[str]:
    """Sorted names of the registered models matching the shell-style ``pattern``."""
    return MODELS.names(pattern)


def create_model(
    name: str,
    *,
    spectral_norm: bool = True,
    pre_sn_hook: Callable[[nn.Module], None] | None = None,
    **kwargs,
) -> tuple[nn.Module, nn.Module]:
    """Build the ``(G, D)`` pair registered as ``name``.

    Order of construction: the builder makes plain layers (those meant for spectral norm are tagged with
    :func:`~degan.models.layers.mark_sn`); then ``pre_sn_hook(G)`` and ``pre_sn_hook(D)`` run (e.g. to register
    mask parametrizations); then, if ``spectral_norm``, ``torch.nn.utils.parametrizations.spectral_norm`` is
    registered on every tagged module, so it comes *after* the hook's parametrizations and is computed on the
    masked weight (SPEC.md section 3).

    Args:
        name: a name from :func:`list_models`.
        spectral_norm: register spectral norm on the tagged layers (the discriminator's, for the families here).
        pre_sn_hook: called once on G and once on D before spectral norm is registered.
        **kwargs: the builder's options (e.g. ``resolution``, ``img_channels``, ``z_dim``, ``width``,
            ``num_classes``).

    Returns:
        ``(G, D)`` in training mode. Both have ``name`` and ``config`` set; ``config`` holds every builder
        option (defaults filled in) plus ``spectral_norm``, so ``create_model(name, **G.config)`` rebuilds an
        identically shaped pair.

    Raises:
        ValueError: if ``name`` is unknown (the message lists the valid names), an option is unknown (the
            message lists the valid options) or an option value is invalid.
    """
    builder = MODELS.get(name)
    signature = inspect.signature(builder)
    valid = [p for p in signature.parameters]
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for model {name!r}; valid options are: {', '.join(valid)}")
    bound = signature.bind(**kwargs)
    bound.apply_defaults()
    config = {**bound.arguments, "spectral_norm": bool(spectral_norm)}
    G, D = builder(**bound.arguments)
    for net in (G, D):
        net.name = name
        net.config = dict(config)
    if pre_sn_hook is not None:
        pre_sn_hook(G)
        pre_sn_hook(D)
    if spectral_norm:
        apply_spectral_norm(G)
        apply_spectral_norm(D)
    return G, D


# Model families register themselves (in degan.models.registry) when imported.
from degan.models import dcgan as _dcgan  # noqa: E402,F401
from degan.models import sngan as _sngan  # noqa: E402,F401
from degan.models import biggan as _biggan  # noqa: E402,F401
from degan.models import stylegan2 as _stylegan2  # noqa: E402,F401
from degan.models import fastgan as _fastgan  # noqa: E402,F401
from degan.models import progan as _progan  # noqa: E402,F401
