"""Pruners as pure functions ``prune(net, current_mask, rate, **kw) -> Mask`` (open_lth style).

Registered in :data:`PRUNERS` (SPEC §3):

- ``imp_global``: one IMP level, ``ceil(rate * remaining)`` weights pruned by magnitude ranked over the whole network.
- ``imp_layerwise``: one IMP level, ``ceil(rate * remaining)`` pruned by magnitude within *each* layer.
- ``omp``: one-shot magnitude pruning straight to ``target_density`` (keyword; ``rate`` is ignored).
- ``random``: random pruning at the same density as IMP (``rate``, or ``target_density`` for a one-shot random
  mask), seeded with the keyword ``seed``.

Every pruner takes the network (its masked layers are ranked by the raw, un-normalised weight), the mask now in
force and the rate; it returns a new dict of bool CPU tensors and never modifies its inputs. Masks only shrink.

Source: Frankle & Carbin, *The Lottery Ticket Hypothesis*, ICLR 2019; Chen et al., *GANs Can Play Lottery Tickets
Too*, ICLR 2021 (arXiv:2106.00134), Algorithm 1; Chen et al., *Data-Efficient GAN Training Beyond (Just)
Augmentations: A Lottery Ticket Perspective*, NeurIPS 2021 (arXiv:2103.00397).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..registry import Registry
from .mask import Mask, masked_layers, raw_weight

PRUNERS: Registry = Registry("pruner")


def register_pruner(name: str):
    """Decorator registering ``fn(net, current_mask, rate, **kw) -> Mask`` under ``name``."""
    return PRUNERS.register(name)


def _check_rate(rate: float) -> None:
    if rate is None or not 0.0 < rate < 1.0:
        raise ValueError(f"pruning rate must be in (0, 1) (the fraction of the remaining weights to prune), got {rate}")


def _weights(net: nn.Module, current_mask: Mask) -> dict[str, torch.Tensor]:
    """Raw weights of the masked layers of ``net``, in module order, after checking ``current_mask`` fits them."""
    weights = {name: raw_weight(module).detach() for name, module, _ in masked_layers(net)}
    if set(weights) != set(current_mask):
        missing, extra = sorted(set(weights) - set(current_mask)), sorted(set(current_mask) - set(weights))
        raise ValueError(
            "current_mask keys do not match the masked layers of the network"
            + (f"; missing {missing[:3]}" if missing else "") + (f"; unexpected {extra[:3]}" if extra else "")
        )
    for name, w in weights.items():
        if tuple(current_mask[name].shape) != tuple(w.shape):
            raise ValueError(f"current_mask {name} has shape {tuple(current_mask[name].shape)} but the weight has "
                             f"{tuple(w.shape)}")
    return weights


def _check(net: nn.Module, current_mask: Mask, rate: float) -> dict[str, torch.Tensor]:
    _check_rate(rate)
    return _weights(net, current_mask)


def _num_to_keep(current_mask: Mask, target_density: float, method: str) -> int:
    """Weights to keep for ``target_density``: ``round(target_density * total)``, checked against the mask.

    Raises:
        ValueError: ``target_density`` outside (0, 1], above the density of ``current_mask`` (pruners only remove
            weights), or so small that no weight would be kept.
    """
    total = sum(m.numel() for m in current_mask.values())
    kept = sum(int(m.bool().sum()) for m in current_mask.values())
    if not isinstance(target_density, (int, float)) or not 0.0 < float(target_density) <= 1.0:
        raise ValueError(f"{method}: target_density must be in (0, 1] (the fraction of weights kept), "
                         f"got {target_density!r}")
    n_keep = round(float(target_density) * total)
    if n_keep > kept:
        raise ValueError(
            f"{method}: target_density {target_density} is a target density the method cannot reach: the current "
            f"mask keeps {kept} of {total} weights (density {kept / total if total else 1.0:.6f}) and pruning can "
            "only remove weights; pass a target_density <= the current density, or start from a denser mask"
        )
    if n_keep == 0:
        raise ValueError(f"{method}: target_density {target_density} keeps no weight of {total}; "
                         f"use a target_density >= {0.5 / total:.3g}")
    return n_keep


def _unchanged(current_mask: Mask) -> Mask:
    return {n: m.detach().to("cpu", copy=True).bool() for n, m in current_mask.items()}


def _prune_smallest(weights: dict[str, torch.Tensor], current_mask: Mask, num_prune: int) -> Mask:
    """Prune the ``num_prune`` smallest remaining ``|w|`` over all of ``weights`` (ties at the threshold too)."""
    if num_prune <= 0:
        return _unchanged(current_mask)
    kept_scores = torch.cat([weights[n].abs().flatten().cpu()[current_mask[n].flatten().cpu().bool()]
                             for n in weights])
    if kept_scores.numel() == 0:
        return _unchanged(current_mask)
    threshold = torch.kthvalue(kept_scores.double(), num_prune).values
    return {n: (current_mask[n].cpu().bool() & (weights[n].abs().cpu().double() > threshold)) for n in weights}


@register_pruner("imp_global")
def prune_global_magnitude(net: nn.Module, current_mask: Mask, rate: float = 0.2) -> Mask:
    """One IMP step: prune ``ceil(rate * remaining)`` of the remaining weights of ``net`` by global magnitude.

    Weights of all masked layers of the network are ranked together by ``|W|`` of the raw (un-normalised)
    weight; the kept weights are those with ``|w| > threshold``, where ``threshold`` is the magnitude of the
    ``ceil(rate * remaining)``-th smallest remaining weight, so exactly that many are pruned unless there are
    ties at the threshold (ties are pruned too). Pruned weights never come back (masks only shrink).

    Args:
        net: a network whose prunable layers carry :class:`~degan.pruning.mask.WeightMask` parametrizations.
        current_mask: the mask now in force, ``{weight_name: bool tensor}``.
        rate: fraction of the remaining weights to prune, in (0, 1) (rho = 0.2 in the papers).

    Returns:
        The new mask, a new dict of bool CPU tensors; the inputs are not modified.

    Raises:
        ValueError: rate outside (0, 1) or a mask that does not match ``net``.
    """
    weights = _check(net, current_mask, rate)
    remaining = sum(int(current_mask[n].bool().sum()) for n in weights)
    return _prune_smallest(weights, current_mask, math.ceil(rate * remaining))


@register_pruner("imp_layerwise")
def prune_layerwise_magnitude(net: nn.Module, current_mask: Mask, rate: float = 0.2) -> Mask:
    """One layer-wise IMP step: prune ``ceil(rate * remaining_l)`` of each layer's remaining weights by magnitude.

    Each masked layer ``l`` is ranked on its own by ``|W_l|`` of the raw (un-normalised) weight; the kept weights
    are those with ``|w| > threshold_l``, the magnitude of the ``ceil(rate * remaining_l)``-th smallest remaining
    weight of that layer (ties at the threshold are pruned too, as in :func:`prune_global_magnitude`). Every layer
    thus keeps density ``(1 - rate)^k`` (up to rounding) after ``k`` levels, whereas global ranking prunes layers
    of small weights harder. A layer with no remaining weight stays empty. Masks only shrink.

    Args:
        net: a network whose prunable layers carry :class:`~degan.pruning.mask.WeightMask` parametrizations.
        current_mask: the mask now in force, ``{weight_name: bool tensor}``.
        rate: fraction of each layer's remaining weights to prune, in (0, 1).

    Returns:
        The new mask, a new dict of bool CPU tensors; the inputs are not modified.

    Raises:
        ValueError: rate outside (0, 1) or a mask that does not match ``net``.
    """
    weights = _check(net, current_mask, rate)
    new: Mask = {}
    for n, w in weights.items():
        remaining = int(current_mask[n].bool().sum())
        new.update(_prune_smallest({n: w}, {n: current_mask[n]}, math.ceil(rate * remaining)))
    return new


@register_pruner("omp")
def prune_one_shot_magnitude(net: nn.Module, current_mask: Mask, rate: float | None = None, *,
                             target_density: float) -> Mask:
    """One-shot magnitude pruning (OMP): prune straight to ``target_density`` by global magnitude.

    The remaining weights of all masked layers of ``net`` are ranked together by ``|W|`` of the raw weight and the
    smallest are pruned so that ``round(target_density * total)`` weights stay kept (``total`` = all weights of the
    masked layers, pruned or not): the density hits the target within one weight unless there are ties at the
    threshold (``|w| > threshold`` is kept, so ties are pruned). Applied to a dense trained network this is the OMP
    baseline of Chen et al. 2021 (SPEC §3); applied to a pruned mask it can only remove weights.

    Args:
        net: a network whose prunable layers carry :class:`~degan.pruning.mask.WeightMask` parametrizations.
        current_mask: the mask now in force, ``{weight_name: bool tensor}`` (usually all ones).
        rate: ignored (accepted so every pruner is called as ``fn(net, mask, rate, **kw)``).
        target_density: fraction of all masked weights to keep, in (0, 1], at most the density of
            ``current_mask``; e.g. ``0.8 ** 5 = 0.32768`` for the density of IMP level 5.

    Returns:
        The new mask, a new dict of bool CPU tensors; the inputs are not modified.

    Raises:
        ValueError: ``target_density`` outside (0, 1], above the current mask's density (a target density the
            method cannot reach), keeping no weight, or a mask that does not match ``net``.
    """
    weights = _weights(net, current_mask)
    n_keep = _num_to_keep(current_mask, target_density, "omp")
    remaining = sum(int(current_mask[n].bool().sum()) for n in weights)
    return _prune_smallest(weights, current_mask, remaining - n_keep)


@register_pruner("random")
def prune_random(net: nn.Module, current_mask: Mask, rate: float | None = 0.2, *, seed: int = 0,
                 target_density: float | None = None) -> Mask:
    """Random pruning: remove remaining weights chosen uniformly at random over the whole network.

    The baseline "random pruning (same density, random scores)" of SPEC §3. Without ``target_density`` it prunes
    exactly ``ceil(rate * remaining)`` of the remaining weights, like :func:`prune_global_magnitude`, so calling
    it level by level gives density ``(1 - rate)^k`` exactly as IMP does. With ``target_density`` it goes straight
    to ``round(target_density * total)`` kept weights (a one-shot random mask; ``rate`` is then ignored). The
    choice is a ``torch.randperm`` of the remaining positions (all masked layers in module order) drawn from a
    ``torch.Generator`` seeded with ``seed``: the same seed, mask and network give the same mask; the weight
    values are not used.

    Args:
        net: a network whose prunable layers carry :class:`~degan.pruning.mask.WeightMask` parametrizations
            (only its layer names and shapes are used).
        current_mask: the mask now in force, ``{weight_name: bool tensor}``.
        rate: fraction of the remaining weights to prune, in (0, 1); ignored when ``target_density`` is given.
        seed: seed of the random choice (e.g. ``base_seed + level`` for a different draw per level).
        target_density: if given, fraction of all masked weights to keep, in (0, 1], at most the current density.

    Returns:
        The new mask, a new dict of bool CPU tensors; the inputs are not modified.

    Raises:
        ValueError: rate outside (0, 1) (without ``target_density``), an unreachable ``target_density`` (outside
            (0, 1] or above the current mask's density), or a mask that does not match ``net``.
    """
    weights = _weights(net, current_mask)
    names = list(weights)
    flat = torch.cat([current_mask[n].detach().flatten().cpu().bool() for n in names]) if names else \
        torch.zeros(0, dtype=torch.bool)
    remaining = int(flat.sum())
    if target_density is None:
        _check_rate(rate)
        num_prune = math.ceil(rate * remaining)
    else:
        num_prune = remaining - _num_to_keep(current_mask, target_density, "random")
    if num_prune <= 0 or remaining == 0:
        return _unchanged(current_mask)
    gen = torch.Generator().manual_seed(int(seed))
    kept_idx = flat.nonzero().flatten()
    pruned_idx = kept_idx[torch.randperm(remaining, generator=gen)[:num_prune]]
    flat = flat.clone()
    flat[pruned_idx] = False
    new: Mask = {}
    offset = 0
    for n in names:
        k = current_mask[n].numel()
        new[n] = flat[offset:offset + k].view(current_mask[n].shape).clone()
        offset += k
    return new
