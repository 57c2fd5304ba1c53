"""Weight masks for lottery tickets, applied through ``torch.nn.utils.parametrize``.

A :data:`Mask` is a dict of boolean tensors keyed by parameter name (``"block1.conv1.weight"``, the name the weight
has in a plain, un-parametrized copy of the network), as in open_lth. Masks are applied by a :class:`WeightMask`
parametrization registered on every prunable layer *before* spectral normalisation, so that the effective weight
is ``SN(W ⊙ m)`` and sigma(W_eff) = 1 (SPEC §3; the other order breaks the Lipschitz bound, and
``torch.nn.utils.prune`` raises on spectral-normed layers).

Every prunable layer carries a mask from construction on (all ones at level 0), so state dict keys do not change
between levels and a checkpoint always holds its masks. Besides masking the forward pass, :func:`enforce_masks`
zeroes the pruned entries of the raw weights after each optimizer step, so pruned weights are exactly zero in
the raw tensor, the effective weight, and the EMA copy.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..errors import CheckpointError

Mask = dict[str, torch.Tensor]
"""Boolean tensors keyed by parameter name; True = kept."""

PRUNABLE_KINDS: dict[str, tuple[type, ...]] = {
    "conv": (nn.Conv1d, nn.Conv2d, nn.Conv3d),
    "convT": (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d),
    "linear": (nn.Linear,),
}


class WeightMask(nn.Module):
    """Parametrization ``W -> W * mask`` with the mask stored as a float buffer (0/1) of the weight's shape."""

    def __init__(self, shape: torch.Size | tuple[int, ...]) -> None:
        super().__init__()
        self.register_buffer("mask", torch.ones(shape))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask


def parse_kinds(prunable: str | Iterable[str]) -> tuple[str, ...]:
    """``"conv,convT"`` -> ``("conv", "convT")``.

    Raises:
        ValueError: an unknown kind (valid: conv, convT, linear).
    """
    kinds = tuple(k.strip() for k in (prunable.split(",") if isinstance(prunable, str) else prunable) if k.strip())
    for k in kinds:
        if k not in PRUNABLE_KINDS:
            raise ValueError(f"unknown prunable layer kind {k!r}; valid kinds are: {', '.join(PRUNABLE_KINDS)}")
    return kinds


def prunable_modules(net: nn.Module, prunable: str | Iterable[str] = "conv,convT") -> Iterator[tuple[str, nn.Module]]:
    """Yield ``(weight_name, module)`` for every layer of the chosen kinds (weights only; biases never)."""
    types = tuple(t for k in parse_kinds(prunable) for t in PRUNABLE_KINDS[k])
    for name, module in net.named_modules():
        # not ``module.weight``: on a parametrized layer reading it runs the parametrizations (spectral norm's
        # power iteration in training mode changes its buffers)
        has_weight = parametrize.is_parametrized(module, "weight") or module._parameters.get("weight") is not None
        if isinstance(module, types) and has_weight:
            yield (f"{name}.weight" if name else "weight"), module


def _mask_module(module: nn.Module) -> WeightMask | None:
    if not parametrize.is_parametrized(module, "weight"):
        return None
    for p in module.parametrizations.weight:
        if isinstance(p, WeightMask):
            return p
    return None


def add_masks(net: nn.Module, prunable: str | Iterable[str] = "conv,convT") -> nn.Module:
    """Register an all-ones :class:`WeightMask` on every prunable layer of ``net`` (in place).

    Must run before spectral norm is registered (pass it as ``pre_sn_hook`` to ``degan.models.create_model``).

    Raises:
        ValueError: if a layer already has another parametrization on its weight (mask would not come first).
    """
    for name, module in prunable_modules(net, prunable):
        if parametrize.is_parametrized(module, "weight"):
            if _mask_module(module) is not None:
                continue
            raise ValueError(f"{name} is already parametrized; register masks before spectral norm")
        parametrize.register_parametrization(module, "weight", WeightMask(module.weight.shape))
    return net


def masked_layers(net: nn.Module) -> Iterator[tuple[str, nn.Module, WeightMask]]:
    """Yield ``(weight_name, module, WeightMask)`` for every masked layer, in module order."""
    for name, module in net.named_modules():
        wm = _mask_module(module)
        if wm is not None:
            yield (f"{name}.weight" if name else "weight"), module, wm


def raw_weight(module: nn.Module) -> torch.Tensor:
    """The un-normalised, un-masked trainable weight of a (possibly parametrized) layer."""
    if parametrize.is_parametrized(module, "weight"):
        return module.parametrizations.weight.original
    return module.weight


def get_mask(net: nn.Module) -> Mask:
    """The current mask of ``net`` as ``{weight_name: bool tensor}`` (CPU copies)."""
    return {name: wm.mask.detach().to("cpu", copy=True).bool() for name, _, wm in masked_layers(net)}


def set_mask(net: nn.Module, mask: Mask, zero_pruned: bool = True) -> None:
    """Load ``mask`` into the :class:`WeightMask` buffers of ``net`` and zero the pruned raw weights.

    Raises:
        CheckpointError: if the keys or shapes of ``mask`` do not match the masked layers of ``net``
            (a mask from another model or config).
    """
    layers = {name: (module, wm) for name, module, wm in masked_layers(net)}
    missing, extra = sorted(set(layers) - set(mask)), sorted(set(mask) - set(layers))
    if missing or extra:
        raise CheckpointError(
            "mask does not fit this network: "
            + (f"missing {missing[:3]}{'...' if len(missing) > 3 else ''}; " if missing else "")
            + (f"unexpected {extra[:3]}{'...' if len(extra) > 3 else ''}; " if extra else "")
            + "was it made for another model or prunable set?"
        )
    for name, (module, wm) in layers.items():
        m = mask[name]
        if tuple(m.shape) != tuple(wm.mask.shape):
            raise CheckpointError(
                f"mask {name} has shape {tuple(m.shape)} but the layer has {tuple(wm.mask.shape)}; "
                "was it made for another model width or resolution?"
            )
        wm.mask.copy_(m.to(wm.mask.device, wm.mask.dtype))
    if zero_pruned:
        enforce_masks(net)


@torch.no_grad()
def enforce_masks(net: nn.Module) -> None:
    """Zero the raw weights wherever the mask is 0 (call after every optimizer step and EMA update).

    Other weight parametrizations that define ``after_optimizer_step(raw_weight)`` (e.g. the dynamic masks of
    RG-GAN, which freeze pruned weights instead of zeroing them) get that hook called here too.
    """
    for _, module, wm in masked_layers(net):
        raw_weight(module).mul_(wm.mask)
    for module in net.modules():
        if parametrize.is_parametrized(module, "weight"):
            for p in module.parametrizations.weight:
                hook = getattr(p, "after_optimizer_step", None)
                if hook is not None:
                    hook(module.parametrizations.weight.original)


def density(mask: Mask) -> float:
    """Fraction of kept weights over all masked tensors, in [0, 1]."""
    total = sum(m.numel() for m in mask.values())
    kept = sum(int(m.sum()) for m in mask.values())
    return kept / total if total else 1.0


def layer_density(mask: Mask) -> dict[str, dict]:
    """Per layer ``{name: {"kept", "total", "density"}}``."""
    return {
        name: {"kept": int(m.sum()), "total": m.numel(), "density": float(m.float().mean()) if m.numel() else 1.0}
        for name, m in mask.items()
    }


def ones_like_mask(net: nn.Module) -> Mask:
    """An all-kept mask for every masked layer of ``net``."""
    return {name: torch.ones_like(m) for name, m in get_mask(net).items()}


def check_binary_mask(mask: Mask, where: str) -> None:
    """Check that every tensor of ``mask`` is binary: a bool tensor, or a numeric one holding only 0 and 1.

    Call it on masks read from files (checkpoints, ``mask.pt`` of a ticket level) before :func:`set_mask`, which
    would otherwise load e.g. a float 0.5 as a soft mask that scales weights instead of pruning them.

    Args:
        mask: ``{weight_name: tensor}``; bool tensors pass, numeric tensors pass when every value is 0 or 1.
        where: where the mask came from, for the message (e.g. ``"runs/x/level_03/mask.pt, G"``).

    Raises:
        CheckpointError: an entry is not a tensor, or holds a value other than 0 and 1 (NaN included); the
            message names the entry and an offending value.
    """
    for name, m in mask.items():
        if not isinstance(m, torch.Tensor):
            raise CheckpointError(f"mask {name} in {where} is a {type(m).__name__}, not a tensor; "
                                  "a mask must hold 0/1 tensors keyed by weight name")
        if m.dtype == torch.bool:
            continue
        bad = m[~((m == 0) | (m == 1))]
        if bad.numel():
            raise CheckpointError(
                f"mask {name} in {where} has non-binary values (e.g. {bad.flatten()[0].item()!r}, "
                f"{bad.numel()} of {m.numel()} entries, dtype {m.dtype}); a mask must hold 0/1 "
                "(bool True = kept); was a soft score or a weight tensor saved in its place?"
            )


def layer_keep_fraction(net: nn.Module) -> dict[str, float]:
    """Kept fraction of every masked layer of ``net``, in [0, 1], keyed by weight name (as in :func:`get_mask`).

    A layer counts as masked when a parametrization of its weight is a :class:`WeightMask` (fraction = mean of
    its 0/1 buffer) or defines ``kept_fraction() -> float | 0-d tensor`` (e.g. the dynamic masks of RG-GAN). When
    one weight carries several of them, the fractions are multiplied: exact when at most one of them prunes (the
    usual case), an estimate assuming independent masks otherwise. Layers not in the result are dense (1.0),
    including layers that carry only spectral norm.

    Cost: one reduction per mask tensor and one host sync per layer, so call it every few iterations, not every
    step.

    Raises:
        ValueError: a ``kept_fraction()`` returned a value outside [0, 1].
    """
    fractions: dict[str, float] = {}
    for name, module in net.named_modules():
        if not parametrize.is_parametrized(module, "weight"):
            continue
        frac, found = 1.0, False
        for p in module.parametrizations.weight:
            if isinstance(p, WeightMask):
                m = p.mask
                f = float(m.count_nonzero()) / m.numel() if m.numel() else 1.0
            elif callable(getattr(p, "kept_fraction", None)):
                f = float(p.kept_fraction())
                if not 0.0 <= f <= 1.0:
                    raise ValueError(f"{type(p).__name__}.kept_fraction() of layer {name or '(root)'} returned {f}; "
                                     "a kept fraction must be in [0, 1]")
            else:
                continue
            frac, found = frac * f, True
        if found:
            fractions[f"{name}.weight" if name else "weight"] = frac
    return fractions
