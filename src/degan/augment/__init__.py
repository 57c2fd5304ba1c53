"""Image augmentations that act inside the GAN losses: DiffAugment, ADA (and AdvAug, LeCam beside them).

The augment registry maps a name to a *factory* ``factory(arg: str | None) -> aug``, where ``arg`` is the text
after the first ``":"`` of a CLI spec (``None`` when there is none). Every ``aug`` is a callable
``aug(x, generator=None) -> Tensor`` on float ``[N, C, H, W]`` images in [-1, 1] with a ``.spec`` attribute
holding its canonical spec string (so a resolved config records exactly what ran).

Registered names: ``diffaug[:<policy>]`` (SPEC §2) and ``ada[:<pipeline>][:<key>=<value>,...]`` (Karras et al.
2020, :mod:`degan.augment.ada`; adaptive p unless ``p=`` fixes it). ADA and DiffAugment are not chained by writing
both names (``diffaug+ada`` is refused); ``ada:<pipeline>:diffaug=<ops joined by +>`` asks for DiffAugment after
ADA explicitly. LeCam is a D regulariser, not an augmentation: ``lecam.enabled`` / ``--lecam`` (the CLI also reads
a ``+lecam`` suffix of ``--augment``).

Example:
    >>> aug = build_augment("diffaug:translation,cutout")
    >>> aug.spec
    'diffaug:translation,cutout'
    >>> build_augment("ada:bgc:p=0.3").spec
    'ada:bgc:p=0.3'
"""

from __future__ import annotations

import re
from typing import Any, Callable

from degan.augment.ada import AdaAugment, ADAController, AdaSettings, make_ada
from degan.augment.diffaug import (
    DEFAULT_POLICY,
    DIFFAUGMENT_OPS,
    DiffAugment,
    DiffAugmentModule,
    parse_policy,
)
from degan.augment.lecam import LeCam, LeCamObjective
from degan.registry import Registry

__all__ = [
    "ADAController",
    "AUGMENTS",
    "DEFAULT_POLICY",
    "DIFFAUGMENT_OPS",
    "AdaAugment",
    "AdaSettings",
    "LeCam",
    "LeCamObjective",
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


@register_augment("ada")
def _ada_factory(arg: str | None) -> AdaAugment:
    """``"ada"`` -> adaptive ``bgc``; ``"ada:<pipeline>[:<options>]"`` (see :func:`degan.augment.ada.parse_ada_spec`)."""
    return make_ada(arg)


def _check_combination(text: str) -> None:
    """Refuse specs that chain augmentations by name or add LeCam, with what to write instead."""
    if re.search(r"\+\s*lecam\s*$", text, flags=re.IGNORECASE):
        raise ValueError(f"augment spec {text!r}: LeCam is a D regulariser, not an augmentation; set "
                         "lecam.enabled=true (CLI: --lecam, or a +lecam suffix of --augment) and keep the augment "
                         "spec without it")
    name = text.partition(":")[0].strip().lower()
    tokens = {t for t in re.split(r"[^a-z0-9_]+", text.lower()) if t}
    if name != "ada" and "ada" in tokens and "diffaug" in tokens:
        raise ValueError(f"augment spec {text!r} puts ADA and DiffAugment in the same D pass; that is refused by "
                         "default (ADA's adaptive p would then measure the overfitting left after DiffAugment). Use "
                         "one of them, or ask for both explicitly with 'ada:bgc:diffaug=color+translation+cutout' "
                         "(DiffAugment after ADA on every image D sees)")


def build_augment(spec: str | None) -> Any:
    """Build an augmentation from a CLI string.

    Args:
        spec: ``None``, ``""`` or ``"none"`` (any case) for no augmentation; otherwise ``"<name>"`` or
            ``"<name>:<argument>"`` with ``<name>`` registered in :data:`AUGMENTS`, e.g. ``"diffaug"``
            (policy ``color,translation,cutout``), ``"diffaug:translation,cutout"``, ``"ada"`` (adaptive p,
            pipeline ``bgc``), ``"ada:bg:p=0.3"`` (fixed p) or ``"ada:bgc:target=0.6,interval=4,kimg=500"``.

    Returns:
        ``None`` for no augmentation, else a callable ``aug(x, generator=None) -> Tensor`` (float
        ``[N, C, H, W]`` in, same shape out) with a canonical ``.spec`` string.

    Raises:
        ValueError: if the name is not registered (the message lists the valid names) or the argument is
            invalid (e.g. an unknown DiffAugment op, an unknown ADA pipeline or transform, ADA p outside [0, 1],
            target outside (0, 1)), or ADA and DiffAugment are chained by name (``diffaug+ada``), or the spec
            ends in ``+lecam`` (LeCam is configured with ``lecam.enabled``).
    """
    if spec is None:
        return None
    text = spec.strip()
    if text == "" or text.lower() == "none":
        return None
    _check_combination(text)
    name, sep, arg = text.partition(":")
    factory = AUGMENTS.get(name.strip())
    return factory(arg.strip() if sep else None)
