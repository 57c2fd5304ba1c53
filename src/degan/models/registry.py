"""The table of model families: :data:`MODELS` and :func:`register_model`.

It sits below the families and below :mod:`degan.models` (which re-exports both): a family module registers itself
with ``from degan.models.registry import register_model`` and so never imports the package that imports it.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from degan.registry import Registry

ModelBuilder = Callable[..., "tuple[nn.Module, nn.Module]"]
MODELS: Registry[ModelBuilder] = Registry("model")


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator registering a builder ``fn(**kwargs) -> (G, D)`` under ``name``.

    The builder's keyword arguments (all with JSON-serialisable defaults) are the model's config.
    """
    return MODELS.register(name)
