"""Checkpoints: the complete training state as plain tensors + Python values, written atomically.

Files load with ``torch.load(path, weights_only=True)``; no code is pickled.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from ..errors import CheckpointError
from ..fileio import atomic_path

CKPT_PATTERN = re.compile(r"^ckpt-(\d{9})\.pt$")


def save_checkpoint(path: str | Path, payload: dict) -> Path:
    """Write ``payload`` (tensors, dicts, lists, numbers, strings) to ``path`` atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint with ``weights_only=True``.

    Raises:
        CheckpointError: missing, truncated or not a degan checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a corrupt or foreign file
        raise CheckpointError(f"checkpoint {str(path)!r} cannot be read ({type(e).__name__}: {str(e)[:200]}); "
                              "it may be truncated or not a degan checkpoint") from None
    if not isinstance(payload, dict) or "state" not in payload:
        raise CheckpointError(f"{str(path)!r} is not a degan checkpoint (no 'state' entry)")
    return payload


def checkpoint_name(cur_nimg: int) -> str:
    """File name of the periodic checkpoint at ``cur_nimg`` real images."""
    return f"ckpt-{cur_nimg:09d}.pt"


def list_checkpoints(folder: str | Path) -> list[Path]:
    """Periodic checkpoints in ``folder``, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if CKPT_PATTERN.match(p.name))


def latest_checkpoint(folder: str | Path) -> Path | None:
    """The newest periodic checkpoint in ``folder``, or None."""
    ckpts = list_checkpoints(folder)
    return ckpts[-1] if ckpts else None


def prune_old(folder: str | Path, keep: int) -> None:
    """Delete all but the ``keep`` newest periodic checkpoints."""
    for p in list_checkpoints(folder)[:-keep] if keep > 0 else []:
        p.unlink(missing_ok=True)
