"""Checkpoints: the complete training state as plain tensors + Python values, written atomically.

Files load with ``torch.load(path, weights_only=True)``; no code is pickled.
"""

from __future__ import annotations

import pickle
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


def load_weights(path: str | Path, map_location: str | torch.device = "cpu", *, what: str = "checkpoint",
                 todo: str = "delete it (resuming then continues from the checkpoint before it) or start over in "
                             "another --outdir") -> dict:
    """Load a degan ``.pt`` file (checkpoint, ``init.pt``, ``rewind.pt``) with ``weights_only=True``: tensors and
    plain Python values only, so a file whose unpickling would run code is refused, never executed.

    Args:
        path: the file.
        map_location: as for :func:`torch.load`.
        what: what the file is, for the message.
        todo: what the user can do about a bad file, for the message.

    Raises:
        CheckpointError: missing, truncated or corrupt, holding Python objects other than tensors and plain values,
            or not a dict.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {str(path)!r} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "Weights only load failed" not in str(e):  # a corrupt pickle stream
            raise CheckpointError(f"{what} {str(path)!r} cannot be read (UnpicklingError: {str(e).strip()[:160]}); "
                                  f"it may be truncated or not written by degan: {todo}") from None
        # weights_only refused a global: the pickle would call or build something other than tensors
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        name = f" ({found.group(1)})" if found else ""
        raise CheckpointError(f"{what} {str(path)!r} holds Python objects other than tensors{name}; loading it could "
                              f"run code, so it is refused. It cannot be read as a degan file: {todo}") from None
    except Exception as e:  # noqa: BLE001 - any other unpickling failure means a corrupt or foreign file
        first = re.split(r"(?<=\.)\s", (str(e).strip().splitlines() or [""])[0])[0][:160]  # its first sentence
        raise CheckpointError(f"{what} {str(path)!r} cannot be read ({type(e).__name__}: {first}); it may be "
                              f"truncated or not written by degan: {todo}") from None
    if not isinstance(payload, dict):
        raise CheckpointError(f"{what} {str(path)!r} holds a {type(payload).__name__}, not a degan dict: {todo}")
    return payload


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a training checkpoint with ``weights_only=True`` (:func:`load_weights`).

    Raises:
        CheckpointError: missing, truncated, holding code, or not a degan checkpoint.
    """
    payload = load_weights(path, map_location)
    if "state" not in payload:
        raise CheckpointError(f"{str(path)!r} is not a degan checkpoint (no 'state' entry); delete it or start over "
                              "in another --outdir")
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
