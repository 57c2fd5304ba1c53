"""degan: data-efficient GAN training: DiffAugment, GAN lottery tickets (IMP), with FID/KID evaluation.

Public API (three layers, as in lucidrains' libraries: networks, objective, runs)::

    from degan import DiffAugment, create_model, list_models, GANObjective, Trainer, resolve, run_ticket, run_train
"""

from ._version import __version__
from .augment import DiffAugment, build_augment  # noqa: E402
from .config import RunConfig, resolve  # noqa: E402
from .losses import GANObjective  # noqa: E402
from .lottery import run_ticket, run_train  # noqa: E402
from .models import create_model, list_models  # noqa: E402
from .train import Trainer  # noqa: E402

__all__ = [
    "__version__", "DiffAugment", "build_augment", "RunConfig", "resolve", "GANObjective", "run_ticket",
    "run_train", "create_model", "list_models", "Trainer",
]
