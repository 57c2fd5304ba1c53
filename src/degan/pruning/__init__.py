"""Pruning: weight masks (parametrizations registered before spectral norm) and registered pruners."""

from .magnitude import (
    PRUNERS,
    prune_global_magnitude,
    prune_layerwise_magnitude,
    prune_one_shot_magnitude,
    prune_random,
    register_pruner,
)
from .mask import (
    Mask,
    WeightMask,
    add_masks,
    check_binary_mask,
    density,
    enforce_masks,
    get_mask,
    layer_density,
    layer_keep_fraction,
    masked_layers,
    ones_like_mask,
    prunable_modules,
    raw_weight,
    set_mask,
)

__all__ = [
    "Mask", "WeightMask", "add_masks", "density", "enforce_masks", "get_mask", "layer_density", "masked_layers",
    "ones_like_mask", "prunable_modules", "raw_weight", "set_mask", "PRUNERS", "register_pruner",
    "prune_global_magnitude", "prune_layerwise_magnitude", "prune_one_shot_magnitude", "prune_random",
    "check_binary_mask", "layer_keep_fraction",
]
