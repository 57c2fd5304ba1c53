"""The two unpaired domains of a CycleGAN run: images of one source, filtered by class, subset drawn once."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..data import load_dataset, select_subset
from ..errors import DataError, DeganError
from .config import CycleDataConfig, parse_classes


@dataclass
class Domain:
    """One domain's training images: uint8 ``[N, C, R, R]`` in [0, 255], their indices in the source, and a record."""

    images: Tensor
    indices: np.ndarray
    info: dict


def class_filter(labels: np.ndarray | None, classes: list[int] | None, source: str) -> np.ndarray | None:
    """Indices (int64, ascending) of the images whose label is in ``classes``; None = no filter.

    Raises:
        DataError: classes asked for but the source has no labels, or no image has those labels.
    """
    if classes is None:
        return None
    if labels is None:
        raise DataError(f"{source!r} has no labels, so classes {classes} cannot be selected; use a labelled source "
                        "(class subfolders, idx, CIFAR, npz with labels) or leave the classes out")
    idx = np.flatnonzero(np.isin(labels, classes)).astype(np.int64)
    if idx.size == 0:
        present = sorted(np.unique(labels).tolist())
        raise DataError(f"{source!r} has no image with label(s) {classes}; labels present: {present[:20]}")
    return idx


def load_domain(source: str, classes: str | None, cfg: CycleDataConfig, subset_seed: int,
                saved: dict | None = None, split: str = "train") -> Domain:
    """Load one domain, keep ``classes``, draw the subset (or reuse the ``saved`` indices from ``subset.json``).

    Returns:
        :class:`Domain` with ``images`` uint8 ``[N, C, R, R]`` and ``indices`` into the full source (int64).

    Raises:
        DataError: unreadable source, classes not found, impossible subset.
        DeganError: ``saved`` indices drawn from a different dataset (its size changed).
    """
    data = load_dataset(source, resolution=cfg.resolution, channels=cfg.channels, resize=cfg.resize, split=split,
                        background=cfg.background)
    n_total = int(data.images.shape[0])
    pool = class_filter(data.labels, parse_classes(classes), source)
    pool = np.arange(n_total, dtype=np.int64) if pool is None else pool
    if saved is not None:
        if saved.get("num_images") != n_total:
            raise DeganError(f"subset.json was drawn from {saved.get('num_images')} images of {source!r}, which now "
                             f"has {n_total}; the dataset changed. Use a new --outdir or restore the data")
        indices = np.asarray(saved["indices"], dtype=np.int64)
    elif split == "train" and cfg.subset is not None:
        indices = pool[select_subset(len(pool), cfg.subset, seed=subset_seed)]
    else:
        indices = pool
    info = {"source": str(source), "classes": parse_classes(classes), "split": split, "num_images": n_total,
            "num_in_classes": len(pool), "num_selected": len(indices),
            "format": data.info.get("format"), "resolution": cfg.resolution, "channels": cfg.channels,
            "resize": cfg.resize, "alpha": data.info["alpha"], "num_transparent": data.info["num_transparent"],
            "class_names": data.class_names}
    images = torch.from_numpy(np.ascontiguousarray(data.images[indices]))
    return Domain(images=images, indices=indices, info=info)
