"""Improved precision/recall and density/coverage of feature sets, by k-nearest-neighbour balls.

- Precision and recall: Kynkäänniemi, Karras, Laine, Lehtinen, Aila. *Improved Precision and Recall Metric
  for Assessing Generative Models*. NeurIPS 2019, arXiv:1904.06991 (k = 3).
- Density and coverage: Naeem, Oh, Uh, Choi, Yoo. *Reliable Fidelity and Diversity Metrics for Generative
  Models*. ICML 2020, arXiv:2002.09797 (k = 5 in the paper's recommendation).

Each real sample ``x_i`` gets the ball ``B(x_i, r_i)`` with ``r_i`` the distance to its k-th nearest other
real sample (likewise for fakes when recall is computed). Membership is ``distance <= radius`` (the papers'
closed balls and the reference code of Kynkäänniemi et al.; the ``prdc`` package uses ``<``, which differs
only on exact ties).

Written here rather than taken from the ``prdc`` package (0.2): that one needs scikit-learn and holds the full
N x M distance matrices (50k x 50k float32 = 10 GB). Here distances are computed with ``torch.cdist`` in
row blocks of at most ``max_block_elems`` entries, in float64, so memory stays bounded and the results do
not depend on the block size.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["density_coverage", "knn_radii", "precision_recall"]

#: Default bound on the entries of one block of the distance matrix (2^24 float64 = 128 MiB).
MAX_BLOCK_ELEMS = 1 << 24


def _check(real: Tensor, fake: Tensor, k: int) -> tuple[Tensor, Tensor]:
    for name, x in (("real", real), ("fake", fake)):
        if not torch.is_tensor(x) or x.dim() != 2 or not x.is_floating_point():
            raise ValueError(f"{name} features must be a 2-D float tensor [N, F], got {getattr(x, 'shape', type(x))}")
        if not torch.isfinite(x).all():
            raise ValueError(f"{name} features contain NaN or inf")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature dimensions differ: real {real.shape[1]} vs fake {fake.shape[1]}")
    if not (isinstance(k, int) and k >= 1):
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    return real.detach().to(torch.float64), fake.detach().to(torch.float64)


def _rows_per_block(n_cols: int, max_block_elems: int) -> int:
    return max(1, int(max_block_elems) // max(1, n_cols))


def knn_radii(x: Tensor, k: int, *, max_block_elems: int = MAX_BLOCK_ELEMS) -> Tensor:
    """Distance from each row of ``x`` to its k-th nearest *other* row.

    Args:
        x: float ``[N, F]`` features, ``N > k``.
        k: neighbour rank (>= 1).
        max_block_elems: at most this many distances are held at once.

    Returns:
        float64 ``[N]``, >= 0 (0 only for duplicated rows).

    Raises:
        ValueError: if ``N <= k``.
    """
    n = x.shape[0]
    if n <= k:
        raise ValueError(f"need more than k={k} samples for k-NN radii, got {n}")
    x = x.to(torch.float64)
    out = torch.empty(n, dtype=torch.float64, device=x.device)
    rows = _rows_per_block(n, max_block_elems)
    for s in range(0, n, rows):
        d = torch.cdist(x[s : s + rows], x)
        idx = torch.arange(s, min(s + rows, n), device=x.device)
        d[idx - s, idx] = float("inf")  # exclude the point itself (duplicates still count as neighbours)
        out[s : s + rows] = d.kthvalue(k, dim=1).values
    return out


def _ball_hits(queries: Tensor, centres: Tensor, radii: Tensor, max_block_elems: int) -> tuple[Tensor, Tensor, Tensor]:
    """For each query: is it in any ball (bool [Q]), in how many balls (int64 [Q]); for each centre: min distance to a query."""
    n_q = queries.shape[0]
    inside_any = torch.empty(n_q, dtype=torch.bool, device=queries.device)
    count = torch.empty(n_q, dtype=torch.int64, device=queries.device)
    nearest = torch.full((centres.shape[0],), float("inf"), dtype=torch.float64, device=queries.device)
    rows = _rows_per_block(centres.shape[0], max_block_elems)
    for s in range(0, n_q, rows):
        d = torch.cdist(queries[s : s + rows], centres)
        hit = d <= radii[None, :]
        inside_any[s : s + rows] = hit.any(dim=1)
        count[s : s + rows] = hit.sum(dim=1)
        nearest = torch.minimum(nearest, d.min(dim=0).values)
    return inside_any, count, nearest


def precision_recall(real: Tensor, fake: Tensor, *, k: int = 3, max_block_elems: int = MAX_BLOCK_ELEMS
                     ) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019, arXiv:1904.06991).

    ``precision = mean_j 1[exists i: ||y_j - x_i|| <= r_k(x_i)]`` (fakes inside the real manifold) and
    ``recall = mean_i 1[exists j: ||x_i - y_j|| <= r_k(y_j)]`` (reals inside the fake manifold), with
    ``r_k`` the distance to the k-th nearest neighbour within the same set. StyleGAN computes them on VGG16
    features of 50k samples; here the features are whatever the caller gives (degan uses Inception pool3 and
    records it).

    Args:
        real: ``[N, F]`` reference features (float, finite), ``N > k``.
        fake: ``[M, F]`` generated features, ``M > k``.
        k: neighbourhood size (3 in the paper).
        max_block_elems: memory bound, distances held at once.

    Returns:
        ``(precision, recall)``, each in [0, 1].

    Raises:
        ValueError: on non-2-D, non-float or non-finite inputs, different F, ``k < 1`` or a set with ``<= k`` rows.
    """
    real, fake = _check(real, fake, k)
    precision = _ball_hits(fake, real, knn_radii(real, k, max_block_elems=max_block_elems), max_block_elems)[0]
    recall = _ball_hits(real, fake, knn_radii(fake, k, max_block_elems=max_block_elems), max_block_elems)[0]
    return float(precision.double().mean()), float(recall.double().mean())


def density_coverage(real: Tensor, fake: Tensor, *, k: int = 5, max_block_elems: int = MAX_BLOCK_ELEMS
                     ) -> tuple[float, float]:
    """Density and coverage (Naeem et al. 2020, arXiv:2002.09797), balls around the real samples only.

    ``density = 1/(k M) sum_j sum_i 1[||y_j - x_i|| <= r_k(x_i)]`` (can exceed 1; about 1 when the fakes
    follow the real distribution) and ``coverage = 1/N sum_i 1[min_j ||x_i - y_j|| <= r_k(x_i)]`` (fraction of
    real balls holding at least one fake, in [0, 1]).

    Args:
        real: ``[N, F]`` reference features (float, finite), ``N > k``.
        fake: ``[M, F]`` generated features, ``M >= 1``.
        k: neighbourhood size (5 in the paper).
        max_block_elems: memory bound, distances held at once.

    Returns:
        ``(density, coverage)``: density in ``[0, N/k]``, coverage in [0, 1].

    Raises:
        ValueError: as :func:`precision_recall`.
    """
    real, fake = _check(real, fake, k)
    radii = knn_radii(real, k, max_block_elems=max_block_elems)
    _, count, nearest = _ball_hits(fake, real, radii, max_block_elems)
    density = count.double().sum() / (k * fake.shape[0])
    coverage = (nearest <= radii).double().mean()
    return float(density), float(coverage)
