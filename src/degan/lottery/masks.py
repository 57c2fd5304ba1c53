"""Masks of named networks across IMP levels: one mask file format, one pruning step, one level loop.

Every lottery task keeps its networks in a dict keyed by name: ``{"G", "D"}`` for the (G, D) families,
``{"G_AB", "G_BA", "D_A", "D_B"}`` for CycleGAN. A level's masks are ``{net: Mask}``, written to
``level_<k>/masks.safetensors`` with keys ``<net>.<param>`` (bool); level k's masks come from level k-1's trained
networks by a registered pruner (:data:`degan.pruning.PRUNERS`), each network ranked on its own (Algorithm 1 of
Chen et al., *GANs Can Play Lottery Tickets Too*, ICLR 2021, arXiv:2106.00134).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file as load_safetensors
from safetensors.torch import save_file as save_safetensors
from torch import nn

from ..errors import CheckpointError
from ..fileio import atomic_path
from ..pruning import PRUNERS, Mask, ones_like_mask
from .layout import RunLayout, StageLayout

# ---------------------------------------------------------------------------------------------------------------------
# mask files


def save_masks(path: Path, masks: Mapping[str, Mask]) -> None:
    """Write ``{net: Mask}`` as one safetensors file with keys ``<net>.<param>`` (bool), atomically."""
    flat = {f"{net}.{name}": m.contiguous().bool() for net, mask in masks.items() for name, m in mask.items()}
    with atomic_path(path) as tmp:
        save_safetensors(flat, str(tmp))


def load_masks(path: str | Path, networks: Iterable[str] = ("G", "D")) -> dict[str, Mask]:
    """Read a masks file written by :func:`save_masks` as ``{net: Mask}`` (bool tensors) for each of ``networks``.

    Args:
        path: ``masks.safetensors`` of a level.
        networks: the network names the file may hold (``("G", "D")`` for the (G, D) families,
            ``degan.cyclegan.NETS`` for CycleGAN); each gets an entry, empty when the file has none of its keys.

    Raises:
        CheckpointError: missing or unreadable file, a key not of the form ``<net>.<param>`` with ``<net>`` in
            ``networks``, or non-binary values.
    """
    path, networks = Path(path), tuple(networks)
    if not path.is_file():
        raise CheckpointError(f"mask file {str(path)!r} does not exist; is this a finished ticket level?")
    try:
        flat = load_safetensors(str(path))
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"mask file {str(path)!r} cannot be read ({e})") from None
    out: dict[str, Mask] = {n: {} for n in networks}
    for key, t in flat.items():
        net, _, name = key.partition(".")
        if net not in out or not name:
            raise CheckpointError(f"mask file {str(path)!r} has the key {key!r}; keys must be "
                                  + " or ".join(f"{n}.<param>" for n in networks))
        if t.dtype != torch.bool and not bool(((t == 0) | (t == 1)).all()):
            raise CheckpointError(f"mask {key} in {str(path)!r} has non-binary values (e.g. "
                                  f"{float(t[(t != 0) & (t != 1)].flatten()[0]):g}); a mask must hold 0/1 or bool")
        out[net][name] = t.bool()
    return out


# ---------------------------------------------------------------------------------------------------------------------
# one pruning step over named networks


def prune_networks(nets: Mapping[str, nn.Module], prev: Mapping[str, Mask], chosen: Iterable[str], *, method: str,
                   rate: float, level: int, seeds: Mapping[str, int] | None = None) -> dict[str, Mask]:
    """Masks of IMP level ``level >= 1`` for every network of ``nets``, each pruned network ranked on its own.

    ``imp_global`` / ``imp_layerwise`` / ``random`` prune ``rate`` of the remaining weights of ``prev``;
    ``omp`` prunes from all-ones masks in one shot to density ``(1 - rate) ** level`` (pass the trained dense level
    0 as ``nets``). Every method gives each pruned network density ``(1 - rate) ** level`` (up to ties).

    Args:
        nets: ``{name: network}`` with :class:`~degan.pruning.WeightMask` layers, holding the weights to rank
            (level k-1's trained weights; level 0's for ``omp``).
        prev: level k-1's masks ``{name: Mask}``; networks not in ``chosen`` keep theirs.
        chosen: names of the networks to prune.
        method: a registered pruner (:data:`degan.pruning.PRUNERS`).
        rate: fraction of the remaining weights pruned per level, in (0, 1).
        level: the level k the masks are for (>= 1).
        seeds: ``{name: seed}`` of the ``random`` pruner (default 0).

    Returns:
        ``{name: Mask}`` for every network of ``nets``, in its order.

    Raises:
        ValueError: an unknown method (the message lists the registered ones) or a mask that does not fit.
    """
    pruner = PRUNERS.get(method)
    chosen = set(chosen)
    out = {}
    for name, net in nets.items():
        if name not in chosen:
            out[name] = prev[name]
        elif method == "omp":
            out[name] = pruner(net, ones_like_mask(net), target_density=(1.0 - rate) ** level)
        elif method == "random":
            out[name] = pruner(net, prev[name], rate, seed=(seeds or {}).get(name, 0))
        else:
            out[name] = pruner(net, prev[name], rate)
    return out


# ---------------------------------------------------------------------------------------------------------------------
# the level loop


def run_levels(run: RunLayout, levels: int, masks: dict[str, Mask],
               next_masks: Callable[[int, dict[str, Mask]], dict[str, Mask]],
               train: Callable[[StageLayout, dict[str, Mask]], object]) -> dict[str, Mask]:
    """IMP levels 0..``levels``: level 0 trains under ``masks`` (dense); level k >= 1 takes its masks from
    ``level_<k>/masks.safetensors`` when a previous run wrote them (a resumed or re-run level keeps its ticket),
    else from ``next_masks(k, masks_of_level_k-1)``, then trains. ``train`` skips finished levels itself.

    Args:
        run: the run folder.
        levels: the last level (``prune.levels``).
        masks: level 0's masks ``{net: Mask}`` (all ones); their keys name the networks of the mask files.
        next_masks: ``(k, prev) -> masks of level k``.
        train: ``(stage, masks) -> anything``: trains (or skips) one level under ``masks``.

    Returns:
        The masks of the last level.
    """
    names = tuple(masks)
    for k in range(levels + 1):
        stage = run.level(k)
        if k > 0:
            masks = load_masks(stage.masks, names) if stage.masks.is_file() else next_masks(k, masks)
        train(stage, masks)
    return masks


__all__ = ["load_masks", "prune_networks", "run_levels", "save_masks"]
