"""Training: state, the one loop, callbacks, checkpoints."""

from .callbacks import ProgressBar, Snapshot, StatsLogger
from .checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint
from .loop import Callback, Trainer, float_to_images, images_to_float
from .state import TrainState, ema_update, make_generators, make_state

__all__ = [
    "ProgressBar", "Snapshot", "StatsLogger", "latest_checkpoint", "list_checkpoints", "load_checkpoint",
    "save_checkpoint", "Callback", "Trainer", "float_to_images", "images_to_float", "TrainState", "ema_update",
    "make_generators", "make_state",
]
