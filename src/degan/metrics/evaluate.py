"""Named evaluation protocols (``fid_train``, ``kid_test``...), the real-feature cache and :func:`evaluate`.

A protocol name says what is compared with what: ``fid_train`` compares generated images with the
training images actually used (the limited-data subset), ``fid_test`` with the held-out test split. The
reported name adds the number of generated samples, StyleGAN style: ``fid500_train``, ``kid5k_test``
(``k`` for multiples of 1000). Every record carries the full protocol (extractor and its sha256, sample
counts, reference set, resize method, KID subsets) so numbers are only compared like with like
(SPEC §8).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from degan.errors import DeganError
from degan.fileio import atomic_path, read_json, write_json
from degan.metrics.fid_kid import fid_from_features, kid_from_features, kid_subset_size
from degan.metrics.inception import check_uint8_images, extract_features
from degan.registry import Registry

__all__ = [
    "METRICS",
    "MetricProtocol",
    "RealFeatureCache",
    "evaluate",
    "format_count",
    "make_reference_key",
    "metric_name",
    "subset_hash",
]


# --------------------------------------------------------------------------------------------------
# Helpers: names and keys
# --------------------------------------------------------------------------------------------------


def format_count(n: int) -> str:
    """Sample count as StyleGAN writes it in metric names: 500 -> ``"500"``, 5000 -> ``"5k"``, 50000 -> ``"50k"``."""
    n = int(n)
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def subset_hash(indices: np.ndarray | torch.Tensor | list[int] | None) -> str:
    """Short sha256 of a subset's int64 index list (in the given order) (``"all"`` for ``None``), for cache keys."""
    if indices is None:
        return "all"
    arr = np.asarray(indices.cpu() if torch.is_tensor(indices) else indices, dtype=np.int64)
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()[:16]


def make_reference_key(
    *,
    dataset: str,
    split: str,
    subset: str,
    resolution: int,
    channels: int,
    data_resize: str | None,
    extractor: nn.Module,
) -> dict:
    """The cache key of one reference feature set.

    Args:
        dataset: dataset id (e.g. ``"cifar10"`` or a path-derived id).
        split: ``"train"`` or ``"test"``.
        subset: the subset hash (:func:`subset_hash`), ``"all"`` for the full split.
        resolution: image side length in pixels as fed to the extractor.
        channels: 1 or 3.
        data_resize: how the data loader resized images to ``resolution`` (``None`` if not resized).
        extractor: the feature extractor (reads ``name``, ``sha256``, ``resize``).

    Returns:
        A JSON-serialisable dict.
    """
    return {
        "dataset": str(dataset),
        "split": str(split),
        "subset": str(subset),
        "resolution": int(resolution),
        "channels": int(channels),
        "data_resize": data_resize,
        "extractor": str(extractor.name),
        "extractor_sha256": str(extractor.sha256),
        "resize": str(extractor.resize),
    }


# --------------------------------------------------------------------------------------------------
# Reference feature cache
# --------------------------------------------------------------------------------------------------


class RealFeatureCache:
    """A folder of reference (real-image) feature sets keyed by everything that determines them.

    Each entry is ``<hash>.pt`` (a float32 ``[N, F]`` tensor written with ``torch.save`` and read with
    ``weights_only=True``) and ``<hash>.json`` (the key), where ``<hash>`` is the sha256 of the key's
    canonical JSON (sorted keys, no spaces). Both are written atomically; a corrupt or mismatching entry
    is recomputed with a warning. The features are float32 on disk because the extractor's outputs are
    float32, so nothing is lost; they come back as float64.

    Args:
        cache_dir: the folder (created on first write).
    """

    def __init__(self, cache_dir: str | os.PathLike) -> None:
        self.cache_dir = Path(cache_dir)

    @staticmethod
    def key_hash(key: dict) -> str:
        """sha256 hex of the canonical JSON of ``key``.

        Raises:
            ValueError: if ``key`` is not a dict of JSON-serialisable values.
        """
        if not isinstance(key, dict):
            raise ValueError(f"cache key must be a dict, got {type(key).__name__}")
        try:
            text = json.dumps(key, sort_keys=True, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"cache key must be JSON-serialisable: {exc}") from exc
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def paths(self, key: dict) -> tuple[Path, Path]:
        """``(features_path, sidecar_json_path)`` of ``key``."""
        h = self.key_hash(key)
        return self.cache_dir / f"{h}.pt", self.cache_dir / f"{h}.json"

    def load(self, key: dict) -> torch.Tensor | None:
        """The cached float64 ``[N, F]`` features of ``key``, or ``None`` if absent or unusable (warns)."""
        feat_path, meta_path = self.paths(key)
        if not feat_path.exists():
            return None
        try:
            feats = torch.load(feat_path, map_location="cpu", weights_only=True)
            if not torch.is_tensor(feats) or feats.dim() != 2 or not feats.is_floating_point():
                raise ValueError(f"expected a 2-D float tensor, got {type(feats).__name__}")
            if not torch.isfinite(feats).all():
                raise ValueError("non-finite values")
            if meta_path.exists() and read_json(meta_path).get("key") != json.loads(json.dumps(key)):
                raise ValueError("sidecar key does not match")
        except Exception as exc:  # noqa: BLE001 - any failure means: recompute
            warnings.warn(f"feature cache {feat_path} is unusable ({exc}); recomputing", stacklevel=3)
            return None
        return feats.to(torch.float64)

    def save(self, key: dict, features: torch.Tensor) -> Path:
        """Write ``features`` (``[N, F]``) for ``key`` atomically; returns the features path."""
        feat_path, meta_path = self.paths(key)
        feats = features.detach().to("cpu", torch.float32).contiguous()
        with atomic_path(feat_path) as tmp:
            torch.save(feats, tmp)
        write_json(meta_path, {"key": key, "shape": list(feats.shape), "dtype": "float32", "file": feat_path.name})
        return feat_path

    def get_or_compute(self, key: dict, compute_fn: Callable[[], torch.Tensor]) -> torch.Tensor:
        """Cached features of ``key``, or ``compute_fn()`` stored under ``key``.

        Args:
            key: JSON-serialisable dict naming the feature set (see :func:`make_reference_key`).
            compute_fn: called with no arguments on a miss; returns ``[N, F]`` float features.

        Returns:
            float64 ``[N, F]`` on the CPU.

        Raises:
            ValueError: if ``key`` is not JSON-serialisable or ``compute_fn`` returns no 2-D tensor.
        """
        cached = self.load(key)
        if cached is not None:
            return cached
        feats = compute_fn()
        if not torch.is_tensor(feats) or feats.dim() != 2:
            raise ValueError(f"compute_fn must return a 2-D tensor [N, F], got {getattr(feats, 'shape', type(feats))}")
        self.save(key, feats)
        return feats.detach().to("cpu", torch.float64)


# --------------------------------------------------------------------------------------------------
# Named protocols
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricProtocol:
    """One named protocol: which statistic (``"fid"``/``"kid"``) against which reference (``"train"``/``"test"``)."""

    kind: str
    reference: str


#: Registry of named metric protocols.
METRICS: Registry[MetricProtocol] = Registry("metric")
for _kind in ("fid", "kid"):
    for _ref in ("train", "test"):
        METRICS.register(f"{_kind}_{_ref}")(MetricProtocol(_kind, _ref))


def metric_name(metric: str, num_gen: int) -> str:
    """Reported name of protocol ``metric`` with ``num_gen`` samples: ``("fid_train", 500) -> "fid500_train"``.

    Raises:
        ValueError: if ``metric`` is not registered (the message lists the valid names).
    """
    proto = METRICS.get(metric)
    return f"{proto.kind}{format_count(num_gen)}_{proto.reference}"


# --------------------------------------------------------------------------------------------------
# Orchestration
# --------------------------------------------------------------------------------------------------


def _generated_batches(sample_fn: Callable[[int], torch.Tensor], num_gen: int, batch_size: int) -> Iterator[torch.Tensor]:
    done = 0
    while done < num_gen:
        n = min(batch_size, num_gen - done)
        images = sample_fn(n)
        check_uint8_images(images, "sample_fn output")
        if images.shape[0] != n:
            raise ValueError(f"sample_fn({n}) returned {images.shape[0]} images")
        yield images
        done += n


def evaluate(
    sample_fn: Callable[[int], torch.Tensor],
    metrics: list[str],
    references: dict[str, tuple[np.ndarray | torch.Tensor, dict | None]],
    *,
    num_gen: int,
    extractor: nn.Module,
    cache: RealFeatureCache | None,
    batch_size: int = 64,
    kid_subsets: int = 100,
    seed: int = 0,
    progress: bool = False,
) -> list[dict]:
    """Compute named FID/KID protocols for a generator.

    FID: Heusel et al. 2017 (arXiv:1706.08500); KID: Bińkowski et al. 2018 (arXiv:1801.01401), see
    :mod:`degan.metrics.fid_kid`. ``num_gen`` images are generated once, in chunks of ``batch_size``, and
    their features are shared by all requested metrics; each reference's features are extracted once
    (or read from ``cache``).

    Args:
        sample_fn: ``sample_fn(n)`` returns uint8 ``[n, C, H, W]`` in [0, 255] generated images (C in {1, 3});
            seeding the generator is the caller's job.
        metrics: protocol names, e.g. ``["fid_train", "kid_train"]`` (see ``METRICS.names()``).
        references: ``"train"`` / ``"test"`` -> ``(images, key)``: uint8 ``[N, C, H, W]`` reference images
            (the subset actually trained on for ``"train"``, the held-out split for ``"test"``) and the
            cache key dict (:func:`make_reference_key`), or ``None`` to skip the cache for it.
        num_gen: number of generated images (>= 2).
        extractor: feature extractor with ``num_features``, ``name``, ``sha256`` and ``resize`` attributes
            (normally :class:`~degan.metrics.inception.InceptionFeatures`), already on its device.
        cache: reference feature cache, or ``None`` to always recompute.
        batch_size: images per generation call and per extractor pass.
        kid_subsets: number of KID subsets (subset size ``min(1000, N_real, num_gen)``, recorded).
        seed: seed of the KID subset sampling (recorded as ``kid_seed``).
        progress: print progress to stderr.

    Returns:
        One record per requested metric, in request order::

            {"metric": "fid500_train", "value": float, "std": float | None (KID only),
             "protocol": {"num_gen", "num_real", "reference", "extractor", "extractor_sha256", "resize",
                          "kid_subsets", "kid_subset_size", "kid_degree", "kid_seed"},  # kid_* None for FID
             "seconds": float}

        ``seconds`` is wall time in seconds of everything the number needed: shared work (generating and
        extracting the fakes, the reference features) is counted in full in every record using it.

    Raises:
        ValueError: on an unknown metric name (lists the valid ones), ``num_gen < 2`` or bad images.
        DeganError: if a metric needs a reference that ``references`` lacks.
    """
    if isinstance(metrics, str):
        metrics = [metrics]
    protocols = [METRICS.get(m) for m in metrics]
    if not (isinstance(num_gen, int) and num_gen >= 2):
        raise ValueError(f"num_gen must be an integer >= 2, got {num_gen!r}")
    for m, proto in zip(metrics, protocols):
        if proto.reference not in references or references[proto.reference] is None:
            raise DeganError(
                f"metric {m!r} needs the {proto.reference!r} reference images; pass "
                f"references={{{proto.reference!r}: (uint8 images [N, C, H, W], cache key dict)}}"
                + (" (the held-out test split of the dataset)" if proto.reference == "test" else
                   " (the training images actually used, i.e. the subset)")
            )
    device = next(iter(extractor.parameters()), torch.empty(0)).device

    real_feats: dict[str, tuple[torch.Tensor, float]] = {}
    for ref in dict.fromkeys(p.reference for p in protocols):
        t0 = time.perf_counter()
        images, key = references[ref]

        def compute(images=images) -> torch.Tensor:
            return extract_features(images, extractor, batch_size=batch_size, device=device, progress=progress)

        feats = cache.get_or_compute(key, compute) if (cache is not None and key is not None) else compute()
        real_feats[ref] = (feats, time.perf_counter() - t0)

    t0 = time.perf_counter()
    fake = extract_features(_generated_batches(sample_fn, num_gen, batch_size), extractor,
                            batch_size=batch_size, device=device, progress=progress)
    fake_seconds = time.perf_counter() - t0

    records = []
    for proto in protocols:
        real, real_seconds = real_feats[proto.reference]
        t0 = time.perf_counter()
        if proto.kind == "fid":
            value, std = fid_from_features(real, fake), None
            kid = {"kid_subsets": None, "kid_subset_size": None, "kid_degree": None, "kid_seed": None}
        else:
            value, std = kid_from_features(real, fake, subsets=kid_subsets, subset_size=1000, degree=3, seed=seed)
            kid = {"kid_subsets": kid_subsets, "kid_subset_size": kid_subset_size(real.shape[0], fake.shape[0]),
                   "kid_degree": 3, "kid_seed": seed}
        records.append({
            "metric": f"{proto.kind}{format_count(num_gen)}_{proto.reference}",
            "value": float(value),
            "std": std,
            "protocol": {
                "num_gen": int(fake.shape[0]),
                "num_real": int(real.shape[0]),
                "reference": proto.reference,
                "extractor": str(getattr(extractor, "name", type(extractor).__name__)),
                "extractor_sha256": getattr(extractor, "sha256", None),
                "resize": getattr(extractor, "resize", None),
                **kid,
            },
            "seconds": time.perf_counter() - t0 + real_seconds + fake_seconds,
        })
    return records

