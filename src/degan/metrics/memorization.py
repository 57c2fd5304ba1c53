"""Memorisation and collapse checks of generated samples against the training images.

- **Nearest training neighbour** of every generated sample, in pixel space (mean absolute / root-mean-square
  difference of the images scaled to [0, 1]) and in Inception pool3 feature space (Euclidean), as the
  nearest-neighbour figures of Zhao et al., *Differentiable Augmentation for Data-Efficient GAN Training*,
  NeurIPS 2020, arXiv:2006.10738 (Figs. 12-13): :func:`save_pairs_grid` writes the pairs *generated | nearest real*.
- **Copy check**: a sample copies the training set when its nearest training neighbour is much closer than the
  training images are to each other: distance below ``copy_ratio`` x the median distance of a training image to its
  nearest *other* training image. The reals' own nearest-neighbour distances are the yardstick because "close" only
  means something relative to how dense the data set is.
- **Diversity**: mean pairwise distance within a fixed set of samples over the same statistic of as many training
  images (1 = as diverse as the data). LPIPS (Zhang et al. 2018) is the usual perceptual choice but needs weights
  downloaded at run time; the Inception features are already here for FID. Collapse = a ratio below
  ``collapse_ratio``.

:func:`memorization_report` runs everything and returns a JSON-ready dict with plain-words warnings;
:func:`check_stage` does it for a finished run stage (``degan eval --memorization``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .inception import check_uint8_images, extract_features

__all__ = ["SPACES", "pixel_vectors", "nearest_neighbours", "mean_pairwise_distance", "memorization_report",
           "save_pairs_grid", "check_stage", "check_run_stage", "COPY_RATIO", "COPY_WARN", "COLLAPSE_RATIO"]

COPY_RATIO = 0.3
"""A sample whose nearest training distance is below this fraction of the reals' median nearest-neighbour distance
counts as a copy."""
COPY_WARN = 0.05
"""Warn when at least this fraction of the samples are copies."""
COLLAPSE_RATIO = 0.5
"""Warn when the samples' diversity is below this fraction of the reals'."""
SPACES = ("pixel_l1", "pixel_l2", "inception")
"""Distance spaces: mean |a - b| and sqrt(mean (a - b)^2) of [0, 1] pixels; Euclidean in Inception pool3 space."""


# ---------------------------------------------------------------------------------------------------------------------
# distances


def pixel_vectors(images: Tensor) -> Tensor:
    """uint8 ``[N, C, H, W]`` in [0, 255] -> float32 ``[N, C*H*W]`` in [0, 1].

    Images with alpha (C = 2 or 4, ``data.background=keep-alpha``) keep it: alpha counts as one more value.

    Raises:
        ValueError: not uint8 NCHW with 1 or 3 channels (2 or 4 with alpha).
    """
    check_uint8_images(images, alpha=True)
    return images.reshape(images.shape[0], -1).float().div(255.0)


def _pairwise(a: Tensor, b: Tensor, space: str) -> Tensor:
    """Distances ``[len(a), len(b)]`` in ``space`` (pixel spaces are per-value means, see :data:`SPACES`).

    Euclidean spaces use the matrix-product form ``|a|^2 + |b|^2 - 2 a.b`` in float64 (clamped at 0; a fast GEMM,
    relative error ~1e-12 of the squared norms); L1 runs ``torch.cdist`` in float32 (relative error ~1e-6).
    :func:`nearest_neighbours` recomputes the distance of every chosen pair exactly (:func:`_exact`).
    """
    if space == "pixel_l1":
        return torch.cdist(a.float(), b.float(), p=1.0).double() / a.shape[1]
    a, b = a.double(), b.double()
    d2 = (a * a).sum(1, keepdim=True) + (b * b).sum(1) - 2.0 * (a @ b.T)
    d = d2.clamp_(min=0.0).sqrt_()
    return d / a.shape[1] ** 0.5 if space == "pixel_l2" else d


def _exact(a: Tensor, b: Tensor, space: str) -> Tensor:
    """Row-wise distances ``[N]`` between ``a[i]`` and ``b[i]`` in float64, exact (a copy is at distance 0)."""
    diff = a.double() - b.double()
    if space == "pixel_l1":
        return diff.abs().mean(1)
    d = diff.pow(2).sum(1).sqrt()
    return d / a.shape[1] ** 0.5 if space == "pixel_l2" else d


def nearest_neighbours(queries: Tensor, reference: Tensor, space: str = "pixel_l2",
                       exclude_index: Tensor | None = None, chunk: int = 256) -> tuple[Tensor, Tensor]:
    """Nearest row of ``reference`` for every row of ``queries``.

    Blockwise: ``chunk`` queries at a time against the whole reference with the fast distances of
    :func:`_pairwise`; the distance of each chosen pair is then recomputed exactly, so a copy reports 0.
    The 1,000 x 5,085 CIFAR case takes seconds on a CPU core (``benchmarks/metrics_throughput.py --memorization``).

    Args:
        queries: float ``[Q, F]`` (pixel vectors from :func:`pixel_vectors` or features).
        reference: float ``[R, F]``.
        space: one of :data:`SPACES`.
        exclude_index: long ``[Q]``: the reference row query i must not match (the query itself, for a set's own
            nearest-neighbour distances); None = no exclusion.
        chunk: query rows per distance block (memory ``chunk x R``).

    Returns:
        ``(distance float64 [Q], index int64 [Q])``.

    Raises:
        ValueError: unknown space, shapes that do not match, an empty reference (or one row with
            ``exclude_index``), ``exclude_index`` of another length than ``queries``.
    """
    if space not in SPACES:
        raise ValueError(f"unknown space {space!r}; valid names are: {', '.join(SPACES)}")
    if queries.ndim != 2 or reference.ndim != 2 or queries.shape[1] != reference.shape[1]:
        raise ValueError(f"queries [Q, F] and reference [R, F] must share F; got {tuple(queries.shape)} and "
                         f"{tuple(reference.shape)}")
    need = 1 if exclude_index is None else 2
    if reference.shape[0] < need:
        raise ValueError(f"reference needs at least {need} rows, got {reference.shape[0]}")
    if exclude_index is not None and exclude_index.shape != (queries.shape[0],):
        raise ValueError(f"exclude_index must be long [Q={queries.shape[0]}], got {tuple(exclude_index.shape)}")
    dists, idxs = [], []
    for i in range(0, queries.shape[0], chunk):
        q = queries[i:i + chunk]
        d = _pairwise(q, reference, space)
        if exclude_index is not None:
            d[torch.arange(d.shape[0]), exclude_index[i:i + chunk]] = float("inf")
        j = d.argmin(dim=1)
        dists.append(_exact(q, reference[j], space))
        idxs.append(j)
    if not dists:
        return torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.int64)
    return torch.cat(dists), torch.cat(idxs)


def mean_pairwise_distance(x: Tensor, space: str = "inception") -> float:
    """Mean distance over all pairs i < j of the rows of ``x`` (float ``[N, F]``, N >= 2) in ``space``.

    Raises:
        ValueError: fewer than 2 rows or an unknown space.
    """
    if space not in SPACES:
        raise ValueError(f"unknown space {space!r}; valid names are: {', '.join(SPACES)}")
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"mean_pairwise_distance needs [N >= 2, F], got {tuple(x.shape)}")
    x = x.double()
    d = F.pdist(x, p=1.0 if space == "pixel_l1" else 2.0)  # exact, pairs i < j only: identical rows give 0
    if space != "inception":
        d = d / (x.shape[1] if space == "pixel_l1" else x.shape[1] ** 0.5)
    return float(d.mean())


# ---------------------------------------------------------------------------------------------------------------------
# the report


def _space_report(fake: Tensor, real: Tensor, sample: Tensor, space: str, copy_ratio: float) -> dict:
    """Nearest-neighbour and diversity statistics of one space; ``sample``: indices of the reals whose own nearest
    neighbours (among all reals) are the yardstick and whose diversity is compared."""
    d, idx = nearest_neighbours(fake, real, space)
    d_real, _ = nearest_neighbours(real[sample], real, space, exclude_index=sample)
    median_real = float(d_real.median())
    threshold = copy_ratio * median_real
    div_fake = mean_pairwise_distance(fake, space)
    div_real = mean_pairwise_distance(real[sample], space)
    return {
        "nn_distance_mean": float(d.mean()), "nn_distance_median": float(d.median()), "nn_distance_min": float(d.min()),
        "real_nn_distance_median": median_real,
        "nn_ratio": float(d.median()) / median_real if median_real > 0 else None,
        "copy_threshold": threshold,
        "copy_fraction": float((d < threshold).double().mean()) if median_real > 0 else float((d == 0).double().mean()),
        "diversity": div_fake, "diversity_real": div_real,
        "diversity_ratio": div_fake / div_real if div_real > 0 else None,
        "nearest_index": idx.tolist(), "nearest_distance": d.tolist(),
    }


def memorization_report(fakes: Tensor, reals: Tensor, extractor: nn.Module | None = None, *,
                        real_features: Tensor | None = None, copy_ratio: float = COPY_RATIO, copy_warn: float = COPY_WARN,
                        collapse_ratio: float = COLLAPSE_RATIO, batch_size: int = 64,
                        device: str | torch.device = "cpu", seed: int = 0) -> dict:
    """Nearest training neighbours, copy fraction and diversity of generated samples, with warnings.

    Args:
        fakes: generated samples, uint8 ``[N, C, H, W]`` in [0, 255], N >= 2.
        reals: the training images, uint8 ``[M, C, H, W]`` (same C, H, W), M >= 2.
        extractor: feature extractor for the ``inception`` space (uint8 images -> float ``[B, F]``, normally
            :class:`~degan.metrics.InceptionFeatures`); None = pixel spaces only.
        real_features: the reals' features by ``extractor``, float ``[M, F]`` (e.g. from the FID cache); None =
            extracted here.
        copy_ratio: a sample is a copy when its NN distance < ``copy_ratio`` x the reals' median NN distance.
        copy_warn: warn when the copy fraction reaches this in any space.
        collapse_ratio: warn when the diversity ratio (samples / reals) falls below this in the decisive space
            (``inception`` when given, else ``pixel_l2``).
        batch_size: extractor batch size.
        device: where the extractor runs.
        seed: seed of the sample of ``min(N, M)`` training images whose diversity is compared and whose nearest
            other training image sets the copy yardstick.

    Returns:
        ``{"num_fakes", "num_reals", "spaces": {space: {nn_distance_mean, nn_distance_median, nn_distance_min,
        real_nn_distance_median, nn_ratio, copy_threshold, copy_fraction, diversity, diversity_real,
        diversity_ratio, nearest_index [N], nearest_distance [N]}}, "copying": bool, "collapse": bool,
        "warnings": [str], "settings": {...}}``. Distances: see :data:`SPACES`.

    Raises:
        ValueError: images that are not uint8 NCHW, of different shapes, or fewer than 2 of either.
    """
    check_uint8_images(fakes, "fakes", alpha=True)
    check_uint8_images(reals, "reals", alpha=True)
    if fakes.shape[1:] != reals.shape[1:]:
        raise ValueError(f"fakes {tuple(fakes.shape[1:])} and reals {tuple(reals.shape[1:])} differ in C, H, W")
    if fakes.shape[0] < 2 or reals.shape[0] < 2:
        raise ValueError(f"need at least 2 fakes and 2 reals, got {fakes.shape[0]} and {reals.shape[0]}")
    gen = torch.Generator().manual_seed(seed)
    sample = torch.randperm(reals.shape[0], generator=gen)[:min(fakes.shape[0], reals.shape[0])]
    vectors = {"pixel": (pixel_vectors(fakes), pixel_vectors(reals))}
    if extractor is not None:
        if real_features is None:
            real_features = extract_features(reals, extractor, batch_size=batch_size, device=device)
        if real_features.shape[0] != reals.shape[0]:
            raise ValueError(f"real_features has {real_features.shape[0]} rows for {reals.shape[0]} reals")
        vectors["inception"] = (extract_features(fakes, extractor, batch_size=batch_size, device=device),
                                real_features.double().cpu())
    spaces = {}
    for space in SPACES:
        if space == "inception" and extractor is None:
            continue
        f, r = vectors["inception" if space == "inception" else "pixel"]
        spaces[space] = _space_report(f, r, sample, space, copy_ratio)

    warnings = []
    copy_space = max(spaces, key=lambda s: spaces[s]["copy_fraction"])
    copying = spaces[copy_space]["copy_fraction"] >= copy_warn
    if copying:
        s = spaces[copy_space]
        warnings.append(
            f"samples copy the training set: {100 * s['copy_fraction']:.0f} % of {fakes.shape[0]} samples lie "
            f"closer to a training image ({copy_space} distance < {s['copy_threshold']:.4g}) than "
            f"{copy_ratio:g} x the typical distance between two training images ({s['real_nn_distance_median']:.4g}). "
            "G is reproducing its training data; see the nearest-pair grid, and consider stronger augmentation "
            "or an earlier snapshot.")
    div_space = "inception" if "inception" in spaces else "pixel_l2"
    ratio = spaces[div_space]["diversity_ratio"]
    collapse = ratio is not None and ratio < collapse_ratio
    if collapse:
        warnings.append(
            f"mode collapse: the samples are {100 * ratio:.0f} % as diverse as the training images "
            f"(mean pairwise {div_space} distance {spaces[div_space]['diversity']:.4g} vs "
            f"{spaces[div_space]['diversity_real']:.4g}); G produces few distinct images.")
    return {"num_fakes": int(fakes.shape[0]), "num_reals": int(reals.shape[0]), "spaces": spaces,
            "copying": bool(copying), "collapse": bool(collapse), "warnings": warnings,
            "settings": {"copy_ratio": copy_ratio, "copy_warn": copy_warn, "collapse_ratio": collapse_ratio,
                         "diversity_space": div_space, "seed": seed,
                         "extractor": None if extractor is None else str(getattr(extractor, "name",
                                                                                 type(extractor).__name__))}}


def save_pairs_grid(fakes: Tensor, reals: Tensor, nearest_index: list[int] | Tensor, path: str | Path,
                    num_pairs: int = 16, order: list[int] | None = None, upscale: int = 2) -> Path:
    """PNG of pairs *generated | nearest training image*, two pairs per row (DiffAugment paper Figs. 12-13).

    Args:
        fakes: uint8 ``[N, C, H, W]``.
        reals: uint8 ``[M, C, H, W]``.
        nearest_index: for each fake, the index of its nearest real.
        path: the PNG (written atomically).
        num_pairs: pairs shown (the first ``num_pairs`` of ``order``).
        order: fake indices in display order (e.g. closest first); None = 0, 1, ...
        upscale: nearest-neighbour enlargement.

    Raises:
        ValueError: no pairs or mismatched lengths.
    """
    from ..report.grid import save_grid

    nearest = torch.as_tensor(nearest_index, dtype=torch.int64)
    if nearest.shape[0] != fakes.shape[0] or fakes.shape[0] == 0:
        raise ValueError(f"need one nearest index per fake (>= 1); got {nearest.shape[0]} for {fakes.shape[0]}")
    order = list(range(fakes.shape[0])) if order is None else list(order)
    pick = order[:max(1, num_pairs)]
    tiles = []
    for i in pick:
        tiles += [fakes[i], reals[int(nearest[i])]]
    return save_grid(torch.stack(tiles), path, nrow=4 if len(pick) > 1 else 2, upscale=upscale)


# ---------------------------------------------------------------------------------------------------------------------
# a run stage


def check_stage(stage, G: nn.Module, reals: Tensor, *, num: int = 500, seed: int = 123,
                extractor: nn.Module | None = None, real_features: Tensor | None = None,
                device: str | torch.device = "cpu", log: Callable[[str], None] = print) -> dict:
    """Memorisation check of a finished stage's G_ema: writes ``memorization.json`` and ``memorization.png``.

    Args:
        stage: the :class:`~degan.lottery.layout.StageLayout`.
        G: the stage's G_ema (``G(z)``; a conditional G gets labels ``i % num_classes``).
        reals: the training images, uint8 ``[M, C, H, W]``.
        num: samples generated (latents from ``torch.Generator().manual_seed(seed)``), >= 2.
        seed: seed of the latents.
        extractor: Inception features (None = pixel spaces only).
        real_features: the reals' features (None = extracted here).
        device: where G and the extractor run.
        log: where the summary line and warnings go.

    Returns:
        The report of :func:`memorization_report` plus ``stage``, ``num`` and ``seed`` (without the per-sample
        lists, which stay in the JSON file).

    Raises:
        ValueError: ``num < 2`` or bad images.
    """
    from ..fileio import write_json
    from ..train.loop import float_to_images

    if num < 2:
        raise ValueError(f"num must be >= 2, got {num}")
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(num, G.z_dim, generator=gen)
    k = int(getattr(G, "num_classes", 0) or 0)
    fakes = []
    with torch.no_grad():
        for i in range(0, num, 128):
            zi = z[i:i + 128].to(device)
            c = (torch.arange(i, i + zi.shape[0]) % k).to(device) if k > 0 else None
            fakes.append(float_to_images(G(zi) if c is None else G(zi, c)).cpu())
    fakes = torch.cat(fakes)
    rep = memorization_report(fakes, reals, extractor, real_features=real_features, device=device, seed=seed)
    space = "inception" if "inception" in rep["spaces"] else "pixel_l2"
    s = rep["spaces"][space]
    order = np.argsort(np.asarray(s["nearest_distance"])).tolist()  # closest pairs first: the suspects
    save_pairs_grid(fakes, reals, s["nearest_index"], stage.memorization_png, num_pairs=16, order=order)
    rep = {"stage": stage.root.name, "num": num, "seed": seed, "pairs_png": stage.memorization_png.name,
           "pairs_space": space, **rep}
    write_json(stage.memorization, rep)
    log(f"{stage.root.name}\tmemorization ({space}): nearest-neighbour ratio {s['nn_ratio'] or float('nan'):.3g} "
        f"(samples / reals), copies {100 * s['copy_fraction']:.1f} %, diversity ratio "
        f"{s['diversity_ratio'] or float('nan'):.3g} -> {stage.memorization}")
    for w in rep["warnings"]:
        log(f"{stage.root.name}\twarning: {w}")
    return {k: v for k, v in rep.items() if k != "spaces"} | {
        "spaces": {sp: {k: v for k, v in d.items() if k not in ("nearest_index", "nearest_distance")}
                   for sp, d in rep["spaces"].items()}}


def check_run_stage(exp, stage, G: nn.Module, num: int = 500, log: Callable[[str], None] = print) -> dict:
    """:func:`check_stage` for a stage of a run: the training subset as reals, Inception features from the run's
    FID reference cache (shared with ``fid_train``), pixel spaces only when no Inception weights are found.

    Args:
        exp: the :class:`~degan.lottery.runner.Experiment` of the run.
        stage: the :class:`~degan.lottery.layout.StageLayout`.
        G: the stage's G_ema on ``exp.device``.
        num: samples generated (seed ``eval.seed``).
        log: where the summary goes.
    """
    from ..data import dataset_id
    from ..errors import DeganError
    from .evaluate import RealFeatureCache, make_reference_key, subset_hash

    cfg = exp.cfg
    try:
        from ..lottery.experiment import get_extractor

        extractor = get_extractor(exp)
    except DeganError as e:
        log(f"[degan] memorization: no Inception weights ({str(e).splitlines()[0]}); pixel distances only")
        extractor, feats = None, None
    if extractor is not None:
        key = make_reference_key(dataset=dataset_id(cfg.data.source, cfg.data.background), split="train",
                                 subset=subset_hash(exp.indices),
                                 resolution=cfg.data.resolution, channels=cfg.data.channels,
                                 data_resize=cfg.data.resize, extractor=extractor)
        cache = RealFeatureCache(exp.outdir / ".cache" / "reference-features")
        feats = cache.get_or_compute(key, lambda: extract_features(exp.images, extractor, batch_size=cfg.eval.batch_size,
                                                                   device=exp.device))
    return check_stage(stage, G, exp.images, num=num, seed=cfg.eval.seed, extractor=extractor, real_features=feats,
                       device=exp.device, log=log)
