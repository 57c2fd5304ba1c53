"""The package version, in a module of its own so that modules of the package can record it without importing
:mod:`degan` (whose ``__init__`` imports them)."""

__version__ = "0.1.0"
