"""Translation quality (SPEC §8): FID / KID of G_AB(A) against B and of G_BA(B) against A."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import Tensor, nn

from ..data import dataset_id
from .config import CycleGANConfig, parse_classes, parse_metric_kinds
from .data import Domain
from .grid import translate


def load_extractor(cfg: CycleGANConfig, device: torch.device | str = "cpu") -> nn.Module:
    """The FID Inception-v3 feature extractor (uint8 ``[N, C, H, W]`` -> float ``[N, 2048]``).

    Raises:
        DeganError: the weights cannot be found (the message says how to get them).
    """
    from ..metrics import InceptionFeatures, find_inception_weights

    return InceptionFeatures(find_inception_weights(cfg.eval.inception)).to(device)


def evaluate_translation(nets: dict[str, nn.Module], domains: dict[str, Domain], cfg: CycleGANConfig,
                         extractor: nn.Module, *, cache_dir: Path | None = None, device: torch.device | str = "cpu",
                         progress: bool = False) -> list[dict]:
    """FID / KID of ``G_AB(A)`` against B and of ``G_BA(B)`` against A (Inception features, SPEC §8).

    Args:
        nets: the four networks (``G_AB``, ``G_BA`` are used).
        domains: ``{"A": Domain, "B": Domain}``: the images to translate and to compare with (the training sets, or
            the test splits for ``eval.reference="test"``), at most ``eval.num_images`` of each (the first ones).
        extractor: maps uint8 ``[N, C, H, W]`` to ``[N, F]``; has ``name``, ``sha256``, ``resize`` when it is the
            Inception extractor (recorded).
        cache_dir: reference-feature cache folder (:class:`degan.metrics.RealFeatureCache`); None = no cache.

    Returns:
        One record per (metric, direction): ``{"metric": "fid300_A2B_train", "value", "std" (KID only),
        "direction": "A2B", "protocol": {"num_translated", "num_real", "reference", "target_domain", "extractor",
        "extractor_sha256", "resize", "kid_subsets", "kid_subset_size", "kid_degree"}, "seconds"}``.

    Raises:
        ValueError: fewer than 2 images in a domain.
    """
    from ..metrics import (
        RealFeatureCache,
        extract_features,
        fid_from_features,
        format_count,
        kid_from_features,
        kid_subset_size,
        make_reference_key,
        subset_hash,
    )

    kinds = parse_metric_kinds(cfg.eval.metrics)
    if not kinds:
        return []
    e, ref = cfg.eval, cfg.eval.reference
    cache = RealFeatureCache(cache_dir) if cache_dir is not None and hasattr(extractor, "sha256") else None
    sel = {k: d.images[:e.num_images] if e.num_images else d.images for k, d in domains.items()}
    for k, x in sel.items():
        if x.shape[0] < 2:
            raise ValueError(f"domain {k} has {x.shape[0]} image(s) to evaluate; FID/KID need at least 2")
    real_feats = {}
    for k, d in domains.items():
        t0 = time.perf_counter()
        source = cfg.data.source_a if k == "A" else cfg.data.source_b
        classes = cfg.data.classes_a if k == "A" else cfg.data.classes_b

        def compute(x=sel[k]) -> Tensor:
            return extract_features(x, extractor, batch_size=e.batch_size, device=device, progress=progress)

        if cache is not None:
            did = dataset_id(source, cfg.data.background)
            key = make_reference_key(dataset=f"{did}|classes={parse_classes(classes)}", split=ref,
                                     subset=subset_hash(d.indices[:sel[k].shape[0]]), resolution=cfg.data.resolution,
                                     channels=cfg.data.channels, data_resize=cfg.data.resize, extractor=extractor)
            real_feats[k] = (cache.get_or_compute(key, compute), time.perf_counter() - t0)
        else:
            real_feats[k] = (compute(), time.perf_counter() - t0)
    records = []
    for direction, G, src, dst in (("A2B", nets["G_AB"], "A", "B"), ("B2A", nets["G_BA"], "B", "A")):
        t0 = time.perf_counter()
        fakes = translate(G, sel[src], e.batch_size, device)
        fake = extract_features(fakes, extractor, batch_size=e.batch_size, device=device, progress=progress)
        fake_s = time.perf_counter() - t0
        real, real_s = real_feats[dst]
        for kind in kinds:
            t1 = time.perf_counter()
            if kind == "fid":
                value, std = fid_from_features(real, fake), None
                kid = {"kid_subsets": None, "kid_subset_size": None, "kid_degree": None}
            else:
                value, std = kid_from_features(real, fake, subsets=e.kid_subsets, subset_size=1000, degree=3, seed=0)
                kid = {"kid_subsets": e.kid_subsets, "kid_subset_size": kid_subset_size(real.shape[0], fake.shape[0]),
                       "kid_degree": 3}
            records.append({
                "metric": f"{kind}{format_count(fake.shape[0])}_{direction}_{ref}", "value": float(value), "std": std,
                "direction": direction,
                "protocol": {"num_translated": int(fake.shape[0]), "num_real": int(real.shape[0]), "reference": ref,
                             "target_domain": dst,
                             "extractor": str(getattr(extractor, "name", type(extractor).__name__)),
                             "extractor_sha256": getattr(extractor, "sha256", None),
                             "resize": getattr(extractor, "resize", None), **kid},
                "seconds": time.perf_counter() - t1 + fake_s + real_s})
    return records
