"""Magnitude pruning as pure functions ``prune(net, current_mask, rate) -> Mask`` (open_lth style).

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


def _check(net: nn.Module, current_mask: Mask, rate: float) -> dict[str, torch.Tensor]:
    if not 0.0 < rate < 1.0:
        raise ValueError(f"pruning rate must be in (0, 1), got {rate}")
    weights = {name: raw_weight(module).detach() for name, module, _ in masked_layers(net)}
    if set(weights) != set(current_mask):
        raise ValueError("current_mask keys do not match the masked layers of the network")
    return weights


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
    kept_scores = torch.cat([weights[n].abs().flatten().cpu()[current_mask[n].flatten().bool()] for n in weights])
    remaining = kept_scores.numel()
    num_prune = math.ceil(rate * remaining)
    if remaining == 0 or num_prune == 0:
        return {n: m.clone().bool() for n, m in current_mask.items()}
    threshold = torch.kthvalue(kept_scores.double(), num_prune).values
    return {n: (current_mask[n].bool() & (weights[n].abs().cpu().double() > threshold)) for n in weights}
