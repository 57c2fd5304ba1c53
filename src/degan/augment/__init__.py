"""Image augmentations that act inside the GAN losses: DiffAugment now, ADA and AdvAug later.

The augment registry maps a name to a *factory* ``factory(arg: str | None) -> aug``, where ``arg`` is the text
after the first ``":"`` of a CLI spec (``None`` when there is none). Every ``aug`` is a callable
``aug(x, generator=None) -> Tensor`` on float ``[N, C, H, W]`` images in [-1, 1] with a ``.spec`` attribute
holding its canonical spec string (so a resolved config records exactly what ran).

Example:
    >>> aug = build_augment("diffaug:translation,cutout")
    >>> aug.spec
    'diffaug:translation,cutout'
"""

from __future__ import annotations

from typing import Any, Callable

from degan.augment.diffaug import (
    DEFAULT_POLICY,
    DIFFAUGMENT_OPS,
    DiffAugment,
    DiffAugmentModule,
    parse_policy,
)
from degan.registry import Registry

__all__ = [
    "AUGMENTS",
    "DEFAULT_POLICY",
    "DIFFAUGMENT_OPS",
    "DiffAugment",
    "DiffAugmentModule",
    "build_augment",
    "parse_policy",
    "register_augment",
]

AugmentFactory = Callable[[str | None], Any]
AUGMENTS: Registry[AugmentFactory] = Registry("augment")


def register_augment(name: str) -> Callable[[AugmentFactory], AugmentFactory]:
    """Decorator registering ``factory(arg: str | None) -> aug`` under ``name`` (see the module docstring)."""
    return AUGMENTS.register(name)


@register_augment("diffaug")
def _diffaug_factory(arg: str | None) -> DiffAugmentModule:
    """``"diffaug"`` -> the default policy ``color,translation,cutout``; ``"diffaug:<policy>"`` -> that policy."""
    return DiffAugmentModule(DEFAULT_POLICY if arg is None else arg)


def build_augment(spec: str | None) -> Any:
    """Build an augmentation from a CLI string.

    Args:
        spec: ``None``, ``""`` or ``"none"`` (any case) for no augmentation; otherwise ``"<name>"`` or
            ``"<name>:<argument>"`` with ``<name>`` registered in :data:`AUGMENTS`, e.g. ``"diffaug"``
            (policy ``color,translation,cutout``) or ``"diffaug:translation,cutout"``.

    Returns:
        ``None`` for no augmentation, else a callable ``aug(x, generator=None) -> Tensor`` (float
        ``[N, C, H, W]`` in, same shape out) with a canonical ``.spec`` string.

    Raises:
        ValueError: if the name is not registered (the message lists the valid names) or the argument is
            invalid (e.g. an unknown DiffAugment op).
    """
    if spec is None:
        return None
    text = spec.strip()
    if text == "" or text.lower() == "none":
        return None
    name, sep, arg = text.partition(":")
    factory = AUGMENTS.get(name.strip())
    return factory(arg.strip() if sep else None)
