"""A tiny generic registry: ``register(name)``, ``get(name)``, ``names(pattern)``.

Plug-ins (models, augmentations, pruners, metrics, losses, data formats) go through
registries instead of ``if``/``elif`` ladders over strings (DESIGN.md, habit 3).
"""

from __future__ import annotations

import fnmatch
import warnings
from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A named table of plug-ins of one kind.

    Args:
        kind: what the entries are, used in error messages (``"model"``, ``"pruner"``).

    Example:
        >>> losses = Registry("loss")
        >>> @losses.register("hinge")
        ... def hinge(): ...
        >>> losses.get("hinge") is hinge
        True
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator adding ``obj`` under ``name``; a duplicate name warns and replaces."""

        def deco(obj: T) -> T:
            if name in self._entries:
                warnings.warn(f"{self.kind} {name!r} registered twice; the later one wins", stacklevel=2)
            self._entries[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        """Return the entry called ``name``.

        Raises:
            ValueError: if ``name`` is not registered; the message lists the valid names.
        """
        try:
            return self._entries[name]
        except KeyError:
            valid = ", ".join(sorted(self._entries)) or "(none)"
            raise ValueError(f"unknown {self.kind} {name!r}; valid names are: {valid}") from None

    def names(self, pattern: str = "*") -> list[str]:
        """Sorted names matching a shell-style ``pattern``."""
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))
