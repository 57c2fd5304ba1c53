"""Named evaluation protocols (``fid10k_test``, ``kid_train``, ``is10k``, ``pr5k_train``...), the reference
feature cache and :func:`evaluate`.

A protocol name says what is compared with what, StyleGAN style (SPEC §8):

- ``fid``, ``kid``, ``pr`` (improved precision/recall), ``dc`` (density/coverage) against a reference:
  ``_train`` = the training images actually used (the limited-data subset), ``_test`` = the held-out split;
- ``is`` (Inception Score) needs no reference; ``_1split`` asks for StudioGAN's single split (default 10).

The number of generated samples sits between kind and reference: ``fid10k_test`` (``k`` = 1000), ``fid500_train``.
A name without a count (``fid_test``) takes ``num_gen``; records always carry the count (``fid10k_test``).
Every record carries the full protocol (extractor and weights sha256, sample counts, reference split and size,
resize method, batch size, seed, library versions) so numbers are only compared like with like.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import re
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
from degan.metrics.fid_kid import fid_from_features, kid_from_features
from degan.metrics.fid_kid import kid_subset_size as _kid_subset_size
from degan.metrics.inception import check_uint8_images, extract_features
from degan.metrics.inception_score import find_is_weights, inception_score, inception_score_unavailable_reason, load_is_head
from degan.metrics.precision_recall import density_coverage, precision_recall
from degan.registry import Registry

__all__ = [
    "CACHE_ENV_VAR",
    "METRICS",
    "PROTOCOL_VERSION",
    "MetricProtocol",
    "RealFeatureCache",
    "default_cache_dir",
    "evaluate",
    "format_count",
    "library_versions",
    "make_reference_key",
    "metric_name",
    "parse_metric",
    "resolve_cache_dir",
    "subset_hash",
]

#: Version of the protocol and cache format; part of every cache key and record, so a change never mixes.
PROTOCOL_VERSION = 2
#: Environment variable naming the cache folder.
CACHE_ENV_VAR = "DEGAN_CACHE"


def default_cache_dir() -> Path:
    """The user's cache folder for degan: ``$DEGAN_CACHE``, else ``$XDG_CACHE_HOME/degan``, else ``~/.cache/degan``."""
    if os.environ.get(CACHE_ENV_VAR):
        return Path(os.environ[CACHE_ENV_VAR]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or (Path.home() / ".cache")
    return Path(base).expanduser() / "degan"


def resolve_cache_dir(explicit: str | os.PathLike | None = None, fallback: str | os.PathLike | None = None) -> Path:
    """The cache folder to use: ``explicit`` (``--cache-dir``) > ``$DEGAN_CACHE`` > ``fallback`` > :func:`default_cache_dir`.

    Reference features live in ``<folder>/reference-features``.
    """
    if explicit is not None:
        return Path(explicit).expanduser()
    if os.environ.get(CACHE_ENV_VAR) or fallback is None:
        return default_cache_dir()
    return Path(fallback)


def library_versions() -> dict[str, str | None]:
    """Versions of the libraries a metric value depends on (``None`` where not installed)."""
    out: dict[str, str | None] = {}
    for name in ("degan", "torch", "numpy", "scipy", "torchmetrics"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    out["torch"] = torch.__version__
    out["numpy"] = np.__version__
    return out


def images_sha256(images: np.ndarray | torch.Tensor) -> str:
    """sha256 of an image array's shape, dtype and bytes (short, for cache keys)."""
    arr = images.detach().cpu().numpy() if torch.is_tensor(images) else np.asarray(images)
    h = hashlib.sha256(f"{arr.shape}|{arr.dtype}|".encode())
    h.update(np.ascontiguousarray(arr).data)
    return h.hexdigest()[:16]


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

        A cache entry that cannot be written (full disk, read-only folder) is skipped with a warning: the features
        are returned all the same.

        Raises:
            ValueError: if ``key`` is not JSON-serialisable or ``compute_fn`` returns no 2-D tensor.
        """
        cached = self.load(key)
        if cached is not None:
            return cached
        feats = compute_fn()
        if not torch.is_tensor(feats) or feats.dim() != 2:
            raise ValueError(f"compute_fn must return a 2-D tensor [N, F], got {getattr(feats, 'shape', type(feats))}")
        try:
            self.save(key, feats)
        except (OSError, RuntimeError) as exc:  # a full disk, a read-only or missing folder: the cache is optional
            reason = getattr(exc, "strerror", None) or str(exc).splitlines()[0][:200]
            warnings.warn(f"could not write the feature cache in {self.cache_dir} ({reason}); continuing without "
                          "caching (set DEGAN_CACHE or eval.cache_dir to a writable folder)", stacklevel=2)
        return feats.detach().to("cpu", torch.float64)


# --------------------------------------------------------------------------------------------------
# Named protocols
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricProtocol:
    """One protocol.

    Attributes:
        kind: ``"fid"``, ``"kid"``, ``"is"``, ``"pr"`` (precision/recall) or ``"dc"`` (density/coverage).
        reference: ``"train"`` or ``"test"``; ``None`` for ``"is"``.
        num_gen: generated samples, or ``None`` when the name carries no count (``evaluate(num_gen=...)`` fills it).
        splits: IS splits (10, or 1 for ``_1split``); ``None`` for other kinds.
    """

    kind: str
    reference: str | None
    num_gen: int | None = None
    splits: int | None = None

    def name(self, num_gen: int | None = None) -> str:
        """The reported name, e.g. ``fid10k_test``, ``is10k``, ``is10k_1split``."""
        n = self.num_gen if self.num_gen is not None else num_gen
        count = format_count(n) if n is not None else ""
        ref = f"_{self.reference}" if self.reference else ""
        split = f"_{self.splits}split" if self.kind == "is" and self.splits not in (None, 10) else ""
        return f"{self.kind}{count}{ref}{split}"


#: Registry of the base protocols (names without a sample count).
METRICS: Registry[MetricProtocol] = Registry("metric")
for _kind in ("fid", "kid", "pr", "dc"):
    for _ref in ("train", "test"):
        METRICS.register(f"{_kind}_{_ref}")(MetricProtocol(_kind, _ref))
METRICS.register("is")(MetricProtocol("is", None, splits=10))
METRICS.register("is_1split")(MetricProtocol("is", None, splits=1))

_NAME = re.compile(r"(?P<kind>[a-z]+?)(?P<count>\d+k?)?(?P<rest>(?:_[a-z0-9]+)*)")


def parse_metric(name: str) -> MetricProtocol:
    """Parse a protocol name: ``"fid10k_test"`` -> ``MetricProtocol("fid", "test", 10000)``.

    Accepted: a registered base name (``METRICS.names()``: ``fid_train``, ``kid_test``, ``is``, ``pr_train``,
    ``dc_test``...) with an optional sample count after the kind: ``<n>`` or ``<n>k`` (``fid500_train``,
    ``kid5k_train``, ``is10k``, ``is10k_1split``, ``pr50k_test``).

    Raises:
        ValueError: on anything else; the message lists the valid names and the count syntax.
    """
    m = _NAME.fullmatch(name.strip()) if isinstance(name, str) else None
    base = f"{m['kind']}{m['rest']}" if m else None
    if m is None or base not in METRICS:
        valid = ", ".join(METRICS.names())
        raise ValueError(f"unknown metric {name!r}; valid names are: {valid}; each may carry a sample count after "
                         f"the kind, e.g. fid10k_test, kid5k_train, is10k, pr50k_test")
    count = m["count"]
    num_gen = None if count is None else (int(count[:-1]) * 1000 if count.endswith("k") else int(count))
    if num_gen is not None and num_gen < 2:
        raise ValueError(f"metric {name!r}: the sample count must be >= 2")
    proto = METRICS.get(base)
    return MetricProtocol(proto.kind, proto.reference, num_gen, proto.splits)


def metric_name(metric: str, num_gen: int) -> str:
    """Reported name of protocol ``metric`` with ``num_gen`` samples: ``("fid_train", 500) -> "fid500_train"``.

    A count in ``metric`` itself wins: ``("fid10k_test", 500) -> "fid10k_test"``.

    Raises:
        ValueError: if ``metric`` is not a valid protocol name (the message lists the valid names).
    """
    return parse_metric(metric).name(num_gen)


# --------------------------------------------------------------------------------------------------
# Orchestration
# --------------------------------------------------------------------------------------------------


def auto_num_gen(num_train: int, device: str | torch.device) -> int:
    """The default number of generated images per evaluation when ``eval.num_gen`` is not set: 5000 on a GPU (the
    usual protocol size); on a CPU, where Inception runs at a few images per second, ``2 x num_train`` clamped to
    ``[1000, 2000]`` (a 459-image folder: 1000 samples, about 5 minutes on 2 cores instead of 25). The count is
    part of each metric's name (``fid1k_train``), so numbers of different sizes are never mixed up."""
    if torch.device(device).type == "cuda":
        return 5000
    return int(min(2000, max(1000, 2 * int(num_train))))


def _generated_batches(sample_fn: Callable[[int], torch.Tensor], num_gen: int, batch_size: int) -> Iterator[torch.Tensor]:
    done = 0
    while done < num_gen:
        n = min(batch_size, num_gen - done)
        images = sample_fn(n)
        check_uint8_images(images, "sample_fn output", alpha=True)
        if images.shape[0] != n:
            raise ValueError(f"sample_fn({n}) returned {images.shape[0]} images")
        yield images
        done += n


def _reference_key(images, key: dict | None) -> dict | None:
    """The caller's key plus the protocol version and (for in-memory arrays) a content hash of the images."""
    if key is None:
        return None
    extra: dict = {"protocol_version": PROTOCOL_VERSION}
    if isinstance(images, (np.ndarray, torch.Tensor)):
        extra.update(num_images=int(images.shape[0]), images_sha256=images_sha256(images))
    return {**key, **extra}


def _is_inputs(extractor: nn.Module, is_weights) -> tuple[torch.Tensor | None, str | None, str | None]:
    """``(fc weight, its sha256, None)`` if IS can be computed, else ``(None, None, reason)``."""
    if getattr(extractor, "name", None) != "inception_v3_tf_pool3":
        return None, None, (f"Inception Score needs the TF Inception-v3 pool3 extractor, not "
                            f"{getattr(extractor, 'name', type(extractor).__name__)!r}")
    reason = inception_score_unavailable_reason(is_weights)
    if reason is not None:
        return None, None, reason
    w, sha = load_is_head(find_is_weights(is_weights))
    return w, sha, None


def evaluate(
    sample_fn: Callable[[int], torch.Tensor],
    metrics: list[str],
    references: dict[str, tuple[np.ndarray | torch.Tensor, dict | None]],
    *,
    num_gen: int | None = None,
    extractor: nn.Module,
    cache: RealFeatureCache | None,
    batch_size: int = 64,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    seed: int = 0,
    is_weights: str | os.PathLike | None = None,
    pr_k: int = 3,
    dc_k: int = 5,
    progress: bool = False,
) -> list[dict]:
    """Compute named protocols (FID, KID, IS, precision/recall, density/coverage) for a generator.

    Sources: FID, Heusel et al. 2017 (arXiv:1706.08500); KID, Bińkowski et al. 2018 (arXiv:1801.01401); IS,
    Salimans et al. 2016 (arXiv:1606.03498); precision/recall, Kynkäänniemi et al. 2019 (arXiv:1904.06991);
    density/coverage, Naeem et al. 2020 (arXiv:2002.09797). All on the extractor's features (Inception pool3).

    The generated images are streamed: ``max(num_gen over the protocols)`` images are generated in chunks of
    ``batch_size`` and only their features are kept (float64 ``[N, F]``); a protocol with ``n`` samples uses
    the first ``n``. Each reference's features are extracted once, or read from ``cache`` under the caller's key
    plus :data:`PROTOCOL_VERSION` and a content hash of the images (a changed dataset, subset, resolution or
    resize never hits a stale entry).

    Args:
        sample_fn: ``sample_fn(n)`` returns uint8 ``[n, C, H, W]`` in [0, 255] generated images (C in {1, 3}, or
            2 / 4 with alpha last: then reals and fakes are both composited on black before the extractor, see
            :func:`degan.metrics.inception.composite_on_black`); seeding the generator is the caller's job.
        metrics: protocol names, e.g. ``["fid10k_test", "kid_train", "is10k"]`` (see :func:`parse_metric`).
        references: ``"train"`` / ``"test"`` -> ``(images, key)``: uint8 ``[N, C, H, W]`` reference images
            (the subset actually trained on for ``"train"``, the held-out split for ``"test"``) and the
            cache key dict (:func:`make_reference_key`), or ``None`` to skip the cache for it.
        num_gen: generated images for names without a count (>= 2); may be ``None`` if every name has one.
        extractor: feature extractor with ``num_features``, ``name``, ``sha256`` and ``resize`` attributes
            (normally :class:`~degan.metrics.inception.InceptionFeatures`), already on its device.
        cache: reference feature cache, or ``None`` to always recompute.
        batch_size: images per generation call and per extractor pass (results do not depend on it).
        kid_subsets: number of KID subsets.
        kid_subset_size: requested KID subset size; shrunk (with a warning) to ``min(it, N_real, num_gen)``.
        seed: seed of the KID subset sampling (recorded as ``seed`` and ``kid_seed``; by convention also the
            caller's latent seed).
        is_weights: torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth`` for IS (or ``None`` to read
            ``$DEGAN_INCEPTION_FULL``); without it IS records are *unavailable* (value ``None`` and a reason).
        pr_k: k of precision/recall (3 in the paper).
        dc_k: k of density/coverage (5 in the paper).
        progress: print progress to stderr.

    Returns:
        Records in request order (``pr`` and ``dc`` give two each)::

            {"metric": "fid10k_test", "value": float | None, "std": float | None (KID, IS),
             "protocol": {"name", "kind", "protocol_version", "num_gen", "num_real", "reference",
                          "reference_key", "extractor", "extractor_sha256", "resize", "batch_size", "seed",
                          "versions", ...kind-specific keys: kid_subsets, kid_subset_size, kid_degree, kid_seed,
                          is_splits, is_weights_sha256, k},
             "seconds": float}

        ``pr10k_train`` gives ``pr10k_train_precision`` and ``pr10k_train_recall``; ``dc10k_train`` gives
        ``dc10k_train_density`` and ``dc10k_train_coverage``. An IS that cannot be computed gives
        ``value: None`` and ``"unavailable": reason`` (and a warning). ``seconds`` counts shared work (fakes,
        reference features) in full in every record using it.

    Raises:
        ValueError: on an unknown metric name (lists the valid ones), a missing or too small ``num_gen``, bad
            images, or a reference / sample count too small for k-NN metrics.
        DeganError: if a metric needs a reference that ``references`` lacks, or given IS weights are wrong.
    """
    if isinstance(metrics, str):
        metrics = [metrics]
    protocols = [parse_metric(m) for m in metrics]
    if any(p.num_gen is None for p in protocols) and not (isinstance(num_gen, int) and num_gen >= 2):
        raise ValueError(f"num_gen must be an integer >= 2 (or give every metric a count, e.g. fid10k_test), "
                         f"got {num_gen!r}")
    protocols = [p if p.num_gen is not None else MetricProtocol(p.kind, p.reference, num_gen, p.splits)
                 for p in protocols]
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    for m, proto in zip(metrics, protocols):
        if proto.reference is not None and references.get(proto.reference) is None:
            raise DeganError(
                f"metric {m!r} needs the {proto.reference!r} reference images; pass "
                f"references={{{proto.reference!r}: (uint8 images [N, C, H, W], cache key dict)}}"
                + (" (the held-out test split of the dataset)" if proto.reference == "test" else
                   " (the training images actually used, i.e. the subset)")
            )
        k = {"pr": pr_k, "dc": dc_k}.get(proto.kind)
        if k is not None and proto.num_gen <= k:
            raise ValueError(f"metric {m!r} needs more than k={k} generated samples, got {proto.num_gen}")
        if proto.kind == "is" and proto.num_gen < proto.splits:
            raise ValueError(f"metric {m!r} needs at least {proto.splits} samples (one per split)")
    is_w = is_sha = is_reason = None
    if any(p.kind == "is" for p in protocols):
        is_w, is_sha, is_reason = _is_inputs(extractor, is_weights)  # before any work: wrong files fail fast
        if is_reason is not None:
            warnings.warn(f"Inception Score unavailable: {is_reason}", stacklevel=2)
    device = next(iter(extractor.parameters()), torch.empty(0)).device

    real_feats: dict[str, tuple[torch.Tensor, float, dict | None]] = {}
    for ref in dict.fromkeys(p.reference for p in protocols if p.reference is not None):
        t0 = time.perf_counter()
        images, key = references[ref]
        key = _reference_key(images, key)

        def compute(images=images) -> torch.Tensor:
            return extract_features(images, extractor, batch_size=batch_size, device=device, progress=progress,
                                    desc=f"features of the {ref} images")

        feats = cache.get_or_compute(key, compute) if (cache is not None and key is not None) else compute()
        real_feats[ref] = (feats, time.perf_counter() - t0, key)
    for m, proto in zip(metrics, protocols):
        k = {"pr": pr_k, "dc": dc_k}.get(proto.kind)
        if k is not None and real_feats[proto.reference][0].shape[0] <= k:
            raise ValueError(f"metric {m!r} needs more than k={k} {proto.reference} reference images, "
                             f"got {real_feats[proto.reference][0].shape[0]}")

    t0 = time.perf_counter()
    total = max(p.num_gen for p in protocols)
    fake_all = extract_features(_generated_batches(sample_fn, total, batch_size), extractor,
                                batch_size=batch_size, device=device, progress=progress, total=total,
                                desc="generating + features")
    fake_seconds = time.perf_counter() - t0

    common = {
        "protocol_version": PROTOCOL_VERSION,
        "extractor": str(getattr(extractor, "name", type(extractor).__name__)),
        "extractor_sha256": getattr(extractor, "sha256", None),
        "resize": getattr(extractor, "resize", None),
        "batch_size": batch_size,
        "seed": seed,
        "versions": library_versions(),
    }
    records = []
    for proto in protocols:
        t0 = time.perf_counter()
        fake = fake_all[: proto.num_gen]
        name = proto.name()
        if proto.reference is not None:
            real, real_seconds, key = real_feats[proto.reference]
            ref_info = {"reference": proto.reference, "num_real": int(real.shape[0]), "reference_key": key}
        else:
            real, real_seconds, ref_info = None, 0.0, {"reference": None, "num_real": None, "reference_key": None}
        base = {"name": name, "kind": proto.kind, "num_gen": int(fake.shape[0]), **ref_info, **common}
        kid = {"kid_subsets": None, "kid_subset_size": None, "kid_degree": None, "kid_seed": None}
        out: list[tuple[str, float | None, float | None, dict]] = []  # (metric, value, std, extra protocol keys)
        extra: dict = {}
        if proto.kind == "fid":
            out.append((name, fid_from_features(real, fake), None, kid))
        elif proto.kind == "kid":
            m = _kid_subset_size(real.shape[0], fake.shape[0], kid_subset_size)
            if m < kid_subset_size:
                warnings.warn(f"{name}: KID subset size shrunk from {kid_subset_size} to {m} (the reference has "
                              f"{real.shape[0]} images, {fake.shape[0]} generated); recorded as kid_subset_size",
                              stacklevel=2)
            value, std = kid_from_features(real, fake, subsets=kid_subsets, subset_size=m, degree=3, seed=seed)
            out.append((name, value, std, {"kid_subsets": kid_subsets, "kid_subset_size": m, "kid_degree": 3,
                                           "kid_seed": seed}))
        elif proto.kind == "is":
            info = {"is_splits": proto.splits, "is_weights_sha256": is_sha}
            if is_reason is not None:
                out.append((name, None, None, info))
                extra = {"unavailable": is_reason}
            else:
                value, std = inception_score(fake @ is_w.T, splits=proto.splits)
                out.append((name, value, std, info))
        elif proto.kind == "pr":
            p, r = precision_recall(real, fake, k=pr_k)
            out += [(f"{name}_precision", p, None, {"k": pr_k}), (f"{name}_recall", r, None, {"k": pr_k})]
        else:  # dc
            d, c = density_coverage(real, fake, k=dc_k)
            out += [(f"{name}_density", d, None, {"k": dc_k}), (f"{name}_coverage", c, None, {"k": dc_k})]
        seconds = time.perf_counter() - t0 + real_seconds + fake_seconds
        for metric, value, std, keys in out:
            records.append({"metric": metric, "value": None if value is None else float(value),
                            "std": None if std is None else float(std),
                            "protocol": {**base, **keys}, "seconds": seconds, **extra})
    return records
