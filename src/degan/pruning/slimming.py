"""Channel pruning by network slimming: L1 proximal steps on normalisation scales, distillation, compact rebuild.

Sources:

- Z. Liu, J. Li, Z. Shen, G. Huang, S. Yan, C. Zhang. *Learning Efficient Convolutional Networks through Network
  Slimming*. ICCV 2017, arXiv:1708.06519: an L1 penalty on the BatchNorm scales gamma selects channels; channels
  whose gamma is (near) zero are removed and the slimmer network is retrained.
- T. Chen, Y. Cheng, Z. Gan, J. Liu, Z. Wang. *GANs Can Play Lottery Tickets Too*. ICLR 2021, arXiv:2106.00134,
  §3 and Algorithm 2 (SPEC.md §3): the GAN is trained from theta_0 with ``L_GAN + L_dist`` while gamma takes
  the proximal step ``gamma <- sign(gamma) * max(|gamma| - rho * eta, 0)`` after every update; the channels
  with gamma = 0 are removed, the slimmer network is rebuilt with the *sliced* theta_0 and retrained. The
  sparsity of such a channel ticket is ``1 - FLOPs(compact G) / FLOPs(dense G)``.
- H. Wang, S. Gui, H. Yang, J. Liu, Z. Wang. *GAN Slimming: All-in-One GAN Compression by a Unified Optimization
  Framework*. ECCV 2020, arXiv:2008.11062: the distillation term to the dense generator that GAN-LTH adopts.

Which gammas select channels (decided with Torch-Pruning's dependency graph, :func:`bn_scales`): a normalisation
layer (BatchNorm / affine InstanceNorm) qualifies when every layer that *consumes* its channels in the pruning
group reads them only through that normalisation (directly or through one-input element-wise ops such as ReLU
or nearest upsampling), and the group does not reach the network output. Then zeroing the channel's gamma *and*
beta makes the channel exactly zero downstream, so removing it (and the coupled output channels of the convs
that produce it) computes the same function; :func:`compact_generator` is exact with respect to
:func:`zero_channels`. Consequences for the registered models:

- ``dcgan``: every BatchNorm (``bn0`` after the latent projection, the one of each up block) qualifies.
- ``sngan32``: ``blocks.<i>.bn2`` (the inner channels of each residual block) and the final ``bn`` before
  ``to_img`` qualify. ``blocks.<i>.bn1`` do not: their input (the residual stream) also feeds the block's 1x1
  shortcut, so gamma = 0 does not silence the channel (the same reason network slimming leaves the residual
  stream of ResNets alone).

Note on beta: with gamma = 0 a BatchNorm channel still outputs its shift beta (a constant map). Network slimming
ignores that contribution when it removes the channel, and so does this module (the compact network equals the
one with gamma *and* beta of removed channels zeroed); the ticket is retrained from the sliced theta_0 anyway.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Iterable, Mapping

import torch
import torch_pruning as tp
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..losses import GANObjective, ObjectiveWrapper
from ..train.loop import Callback, Trainer
from .mask import Mask

__all__ = [
    "NORM_TYPES",
    "GeneratorDistillation",
    "SlimmingProximal",
    "bn_scales",
    "build_compact_generator",
    "compact_generator",
    "count_params",
    "flops_ratio",
    "generator_flops",
    "proximal_l1",
    "select_channels",
    "slice_mask",
    "strip_parametrizations",
    "zero_channels",
]

NORM_TYPES: tuple[type, ...] = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)
"""Normalisation layers whose per-channel affine scale can select channels (when ``affine=True``)."""

# Torch-Pruning node types that are not layers with weights: they pass channels through.
_PASS_THROUGH = {tp.ops.OPTYPE.ELEMENTWISE, tp.ops.OPTYPE.RESHAPE, tp.ops.OPTYPE.CONCAT, tp.ops.OPTYPE.SPLIT,
                 tp.ops.OPTYPE.UNBIND, tp.ops.OPTYPE.EXPAND, tp.ops.OPTYPE.SLICE}


# ---------------------------------------------------------------------------------------------------------------------
# helpers: parametrizations, tracing


def _has_spectral_norm(module: nn.Module) -> bool:
    if not parametrize.is_parametrized(module):
        return False
    return any(type(p).__name__ == "_SpectralNorm" for plist in module.parametrizations.values() for p in plist)


def strip_parametrizations(net: nn.Module, *, allow_spectral_norm: bool = False) -> nn.Module:
    """Fold every parametrization of ``net`` into a plain parameter, in place (``W <- W * mask`` for masks).

    Like ``torch.nn.utils.parametrize.remove_parametrizations(..., leave_parametrized=True)``: the plain tensor is
    the effective one the network computes with (in its current train/eval mode) and the mask buffers disappear.
    Not that function itself: it deletes the property from the *class* ``Parametrized<Layer>``, which a
    ``copy.deepcopy`` shares with the original network, and so would break the network the copy came from.

    Args:
        net: the network; modified in place.
        allow_spectral_norm: also fold spectral norm (``W / sigma`` with the stored power-iteration vectors).
            Right for exporting an inference network; wrong before slicing channels for training (sigma of the
            sliced weight differs), so it is refused by default.

    Returns:
        ``net``.

    Raises:
        ValueError: a layer carries spectral norm and ``allow_spectral_norm`` is False.
    """
    for name, module in list(net.named_modules()):
        if not parametrize.is_parametrized(module):
            continue
        if _has_spectral_norm(module) and not allow_spectral_norm:
            raise ValueError(f"{name or 'the network'} carries spectral norm; channel slicing of spectral-normed "
                             "layers is not supported (the generators of dcgan and sngan32 have none)")
        _fold(module)
    return net


def _fold(module: nn.Module) -> None:
    """Replace the parametrized tensors of ``module`` by plain parameters holding their current values."""
    plist = module.parametrizations
    with torch.no_grad():
        values = {name: (getattr(module, name).detach().clone(), plist[name].original.requires_grad)
                  for name in plist}
    del module._modules["parametrizations"]
    module.__class__ = module.__class__.__bases__[0]  # the class the layer had before parametrization
    for name, (value, requires_grad) in values.items():
        module.register_parameter(name, nn.Parameter(value, requires_grad=requires_grad))


def _example_inputs(G: nn.Module, n: int = 2) -> tuple[Tensor, Tensor | None]:
    device = next(G.parameters()).device
    z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(0)).to(device)
    c = torch.zeros(n, dtype=torch.long, device=device) if getattr(G, "num_classes", 0) > 0 else None
    return z, c


def _dependency_graph(net: nn.Module) -> tp.DependencyGraph:
    """Trace ``net`` (a plain generator) with Torch-Pruning; restores its train/eval mode and grad flags."""
    was_training = net.training
    flags = [p.requires_grad for p in net.parameters()]
    try:
        net.requires_grad_(True)
        with torch.enable_grad():
            # tp traces in eval mode: BatchNorm running statistics are not touched.
            dg = tp.DependencyGraph().build_dependency(
                net, example_inputs=_example_inputs(net), forward_fn=lambda m, inp: m(*inp), verbose=False)
    finally:
        for p, f in zip(net.parameters(), flags):
            p.requires_grad_(f)
        net.train(was_training)
    return dg


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, NORM_TYPES) and getattr(module, "weight", None) is not None


def _norm_prune_fn(dg: tp.DependencyGraph, module: nn.Module):
    return dg.get_pruner_of_module(module).prune_out_channels


def _fed_only_by(node, source) -> bool:
    """Whether every input path of ``node`` leads back to ``source`` through one-input pass-through ops."""
    if not node.inputs:
        return False
    for inp in node.inputs:
        if inp is source:
            continue
        if inp.type in _PASS_THROUGH and len(inp.inputs) == 1:
            if not _fed_only_by(inp, source):
                return False
            continue
        return False
    return True


def _selectors(net: nn.Module, dg: tp.DependencyGraph) -> dict[str, nn.Module]:
    names = {m: n for n, m in net.named_modules()}
    out: dict[str, nn.Module] = {}
    for name, module in net.named_modules():
        if not _is_norm(module) or module not in dg.module2node:
            continue
        root = dg.module2node[module]
        group = dg.get_pruning_group(module, _norm_prune_fn(dg, module), [0])
        ok = True
        for item in group:
            target = item.dep.target
            if target is root:
                continue
            if target.type == tp.ops.OPTYPE.OUTPUT:
                ok = False  # removing the channel would change the network's output shape
                break
            if target.type in _PASS_THROUGH:
                continue
            # a consumer of the channel (for normalisations the in- and out-channel functions are the same, so
            # they count as consumers too: conservative)
            if dg.is_in_channel_pruning_fn(item.dep.handler) and not _fed_only_by(target, root):
                ok = False  # the channel also reaches this layer by another path (e.g. a residual shortcut)
                break
        if ok:
            out[names[module]] = module
    return out


# ---------------------------------------------------------------------------------------------------------------------
# which gammas, the proximal step, channel selection


def bn_scales(G: nn.Module) -> dict[str, nn.Module]:
    """The normalisation layers of ``G`` whose scale gamma selects channels, by qualified module name.

    A BatchNorm (or affine InstanceNorm) qualifies when removing its channels, together with every layer coupled
    to them in Torch-Pruning's dependency graph, is exactly the same as zeroing its gamma and beta (see the
    module docstring): all consumers of the channel read it through this normalisation only, and the output
    layer is not involved. Mask parametrizations are ignored (the graph is traced on a stripped copy).

    Args:
        G: a generator following :class:`~degan.models.layers.GeneratorBase` (``z_dim``; ``num_classes``).

    Returns:
        ``{module name: normalisation module of G}`` in module order (``dcgan``: every BatchNorm; ``sngan32``:
        ``blocks.<i>.bn2`` and the final ``bn``).
    """
    plain = strip_parametrizations(copy.deepcopy(G), allow_spectral_norm=True)
    names = {n for n in _selectors(plain, _dependency_graph(plain))}
    return {n: m for n, m in G.named_modules() if n in names}


def proximal_l1(x: Tensor, lam: float) -> Tensor:
    """Soft thresholding ``prox_lam(x) = sign(x) * max(|x| - lam, 0)`` (the proximal operator of ``lam * |x|_1``).

    Args:
        x: any float tensor.
        lam: threshold >= 0 (``rho * lr`` in the slimming step).

    Returns:
        A new tensor of ``x``'s shape and dtype; entries with ``|x| <= lam`` are exactly 0.
    """
    return torch.sign(x) * torch.clamp(x.abs() - lam, min=0.0)


def _lr_of(optimizer: torch.optim.Optimizer, param: Tensor) -> float:
    for group in optimizer.param_groups:
        if any(p is param for p in group["params"]):
            return float(group["lr"])
    raise ValueError("the generator's normalisation scale is not in opt_G; cannot read its learning rate")


class SlimmingProximal(Callback):
    """The L1 proximal step of network slimming on the selecting gammas of G, after every G optimizer step.

    At ``on_step_end`` (the Trainer calls it after each iteration, whose single G step, mask enforcement and EMA
    update have run), every gamma returned by :func:`bn_scales` becomes
    ``sign(gamma) * max(|gamma| - rho * lr_gamma, 0)``, with ``lr_gamma`` the current learning rate of opt_G's
    parameter group holding gamma (GAN-LTH Algorithm 2, line 8; SPEC §3). Entries below the threshold become
    exactly 0; they may become non-zero again when the GAN gradient pushes them back, which is why the final
    selection reads the gammas at the end of training.

    G_ema is not touched: it follows G through the EMA, so its gammas of dead channels decay towards 0 but are
    not exactly 0. Channels are selected from the raw G (:func:`select_channels` on ``state.G``).

    With Adam (the optimizer of every degan run) one update moves gamma by about ``lr`` at most, so the
    useful range is ``0 < rho < 1``: a gamma whose gradient signal is weaker than ``rho`` relative to its noise is
    driven to 0, while ``rho >= 1`` drives *every* gamma to 0. The SPEC default ``rho = 5e-4`` is gentle: with the
    default lr 2e-4 a gamma of 1 needs 1e7 steps to reach 0 by the penalty alone; use ``prune_fraction`` in
    :func:`select_channels` (Liu et al. 2017's percentile rule) or a larger rho for short runs.

    Adds to the iteration's ``stats``: ``slim_zero_frac`` (fraction of selecting gammas that are exactly 0, in
    [0, 1]) and ``slim_gamma_abs`` (mean |gamma|).

    Args:
        rho: L1 strength >= 0 (GAN-LTH's rho; SPEC default 5e-4).
        layers: names of the normalisation layers to act on; default :func:`bn_scales` of the trained G.

    Raises:
        ValueError: ``rho < 0`` or not finite; a named layer is not a selecting normalisation of G.
    """

    def __init__(self, rho: float = 5e-4, layers: Iterable[str] | None = None) -> None:
        if not (isinstance(rho, (int, float)) and math.isfinite(rho) and rho >= 0):
            raise ValueError(f"rho must be a finite number >= 0 (SPEC default 5e-4); got {rho!r}")
        self.rho = float(rho)
        self.layers = list(layers) if layers is not None else None
        self._gammas: list[Tensor] = []

    def on_train_start(self, trainer: Trainer) -> None:
        found = bn_scales(trainer.state.G)
        names = self.layers if self.layers is not None else list(found)
        unknown = [n for n in names if n not in found]
        if unknown:
            raise ValueError(f"{unknown} are not channel-selecting normalisation layers of G; valid: {list(found)}")
        self._gammas = [found[n].weight for n in names]

    @torch.no_grad()
    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """Apply the proximal step to the gammas with the current learning rate of ``optimizer``."""
        for g in self._gammas:
            g.copy_(proximal_l1(g, self.rho * _lr_of(optimizer, g)))

    def on_step_end(self, trainer: Trainer, stats: dict[str, float]) -> None:
        self.step(trainer.state.opt_G)
        with torch.no_grad():
            total = sum(g.numel() for g in self._gammas)
            if total:
                stats["slim_zero_frac"] = sum(int((g == 0).sum()) for g in self._gammas) / total
                stats["slim_gamma_abs"] = float(sum(g.abs().sum() for g in self._gammas)) / total


def select_channels(G: nn.Module, threshold: float = 0.0, *, prune_fraction: float | None = None,
                    layers: Mapping[str, nn.Module] | None = None) -> dict[str, list[int]]:
    """Kept channel indices per selecting normalisation layer of ``G``.

    A channel is removed when ``|gamma| <= threshold`` (default 0: exactly the channels the proximal step
    zeroed, GAN-LTH Algorithm 2 line 11), or, with ``prune_fraction``, also when it is among the
    ``round(prune_fraction * C_total)`` smallest ``|gamma|`` over all selecting layers together (the global
    percentile rule of Liu et al. 2017; ties broken by layer order then channel index).

    A layer never keeps 0 channels (that would disconnect the generator): it then keeps its channel with the
    largest ``|gamma|`` and a :class:`UserWarning` says so.

    Args:
        G: the slimmed generator (masks and parametrizations allowed).
        threshold: >= 0.
        prune_fraction: in [0, 1) or None.
        layers: the selecting layers (default :func:`bn_scales` of ``G``).

    Returns:
        ``{layer name: sorted kept channel indices}``, every list non-empty.

    Raises:
        ValueError: negative threshold or a prune fraction outside [0, 1).
    """
    if not (math.isfinite(threshold) and threshold >= 0):
        raise ValueError(f"threshold must be a finite number >= 0; got {threshold!r}")
    if prune_fraction is not None and not 0.0 <= prune_fraction < 1.0:
        raise ValueError(f"prune_fraction must be in [0, 1) (the share of channels removed); got {prune_fraction!r}")
    layers = dict(layers) if layers is not None else bn_scales(G)
    gammas = {n: m.weight.detach().abs().float().cpu() for n, m in layers.items()}
    removed = {n: g <= threshold for n, g in gammas.items()}
    if prune_fraction:
        flat = torch.cat([g for g in gammas.values()])
        n_prune = round(prune_fraction * flat.numel())
        if n_prune:
            order = torch.sort(flat, stable=True).indices[:n_prune]
            hit = torch.zeros(flat.numel(), dtype=torch.bool)
            hit[order] = True
            start = 0
            for n, g in gammas.items():
                removed[n] = removed[n] | hit[start:start + g.numel()]
                start += g.numel()
    kept: dict[str, list[int]] = {}
    for n, g in gammas.items():
        idx = (~removed[n]).nonzero().flatten().tolist()
        if not idx:
            best = int(g.argmax())
            warnings.warn(f"all {g.numel()} channels of {n} would be removed (|gamma| <= {threshold:g}"
                          f"{' or in the smallest fraction' if prune_fraction else ''}); keeping channel {best} "
                          "(largest |gamma|) so the generator stays connected", UserWarning, stacklevel=2)
            idx = [best]
        kept[n] = idx
    return kept


@torch.no_grad()
def zero_channels(G: nn.Module, kept: Mapping[str, Iterable[int]]) -> nn.Module:
    """Zero gamma and beta of every channel not in ``kept`` (in place): the masked network a compact G equals.

    Args:
        G: the generator; modified in place.
        kept: ``{normalisation layer name: kept indices}``.

    Returns:
        ``G``.
    """
    modules = dict(G.named_modules())
    for name, idx in kept.items():
        m = modules[name]
        drop = torch.ones(m.num_features, dtype=torch.bool)
        drop[list(idx)] = False
        m.weight[drop.to(m.weight.device)] = 0
        if m.bias is not None:
            m.bias[drop.to(m.bias.device)] = 0
    return G


# ---------------------------------------------------------------------------------------------------------------------
# distillation


class GeneratorDistillation(ObjectiveWrapper):
    """Adds the distillation term of GAN-LTH §3 / GAN Slimming to the G loss of any objective.

    ``L_G_total = L_G + weight * mean((G(z) - G_dense(z))^2)``: the same latents z as the G step, the mean over
    all N*C*H*W output elements (pixel MSE in the [-1, 1] image range), ``G_dense`` the frozen trained dense
    generator in eval mode (running BatchNorm statistics, as it generates at evaluation), ``G`` in training mode.

    The paper writes ``L_dist = E_z[dist(g(z; theta_g), g(z; m_g ⊙ theta_g))]`` and refers to GAN Slimming
    (Wang et al. 2020b) for ``dist`` without giving a distance or a weight; GAN Slimming uses a VGG perceptual
    distance for image-to-image models. Here: pixel MSE (no pretrained feature network needed, works at any
    resolution and channel count) with weight 1 by default.

    G(z) is recomputed for the term (one more G forward per G step) inside
    :func:`degan.augment.advaug.frozen_statistics`, so BatchNorm running statistics advance once per step; in
    training mode BatchNorm normalises with the batch statistics, so this output equals the one the wrapped
    objective computed. The D loss and everything else are delegated to the wrapped objective.

    Stats added to the G step: ``loss_G_dist`` (the MSE, unweighted) and ``loss_G_gan`` (the wrapped objective's
    ``loss_G``); ``loss_G`` becomes the total.

    Args:
        objective: a :class:`~degan.losses.GANObjective` (or a wrapper with ``d_loss`` / ``g_loss``).
        teacher: the dense trained generator; frozen here (eval mode, no gradients).
        weight: lambda >= 0 of the term.

    Raises:
        ValueError: negative or non-finite weight.
    """

    def __init__(self, objective: GANObjective, teacher: nn.Module, weight: float = 1.0) -> None:
        if not (math.isfinite(weight) and weight >= 0):
            raise ValueError(f"distillation weight must be a finite number >= 0; got {weight!r}")
        super().__init__(objective)
        self.weight = float(weight)
        self.teacher = teacher.eval().requires_grad_(False)

    def distill(self, G: nn.Module, z: Tensor, c: Tensor | None = None) -> Tensor:
        """``mean((G(z, c) - teacher(z, c))^2)`` with gradients into G only; BatchNorm running stats untouched.
        ``c``: long [N] labels for a conditional G, else None."""
        from ..augment.advaug import frozen_statistics
        from ..losses import call_net

        with torch.no_grad():
            target = call_net(self.teacher, z, c)
        with frozen_statistics(G):
            out = call_net(G, z, c)
        return torch.mean((out - target) ** 2)

    def g_loss(self, G: nn.Module, D: nn.Module, z: Tensor,
               generator: torch.Generator | None = None, **kwargs) -> tuple[Tensor, dict[str, float]]:
        loss, stats = self.objective.g_loss(G, D, z, generator, **kwargs)
        if self.weight == 0:
            return loss, stats
        dist = self.distill(G, z, kwargs.get("c"))
        total = loss + self.weight * dist
        stats = dict(stats, loss_G_gan=stats.get("loss_G", float(loss.detach())), loss_G_dist=float(dist.detach()),
                     loss_G=float(total.detach()))
        return total, stats


# ---------------------------------------------------------------------------------------------------------------------
# the compact network


def _sync_model_attributes(G: nn.Module) -> None:
    """Shape attributes the forward pass reads: the 4x4 latent projection's channel count ``c0``."""
    fc = getattr(G, "fc", None)
    if hasattr(G, "c0") and isinstance(fc, nn.Linear):
        G.c0 = fc.out_features // 16


def _check_kept(name: str, idx: Iterable[int], channels: int) -> list[int]:
    idx = sorted(int(i) for i in idx)
    if not idx:
        raise ValueError(f"{name}: no channel kept; a layer must keep at least one channel")
    if len(set(idx)) != len(idx) or idx[0] < 0 or idx[-1] >= channels:
        raise ValueError(f"{name}: kept indices must be distinct and in [0, {channels}); got {idx[:8]}"
                         f"{'...' if len(idx) > 8 else ''}")
    return idx


def compact_generator(G: nn.Module, kept: Mapping[str, Iterable[int]]) -> nn.Module:
    """A physically smaller copy of ``G`` keeping only the ``kept`` channels of its selecting normalisations.

    A deep copy of ``G`` is stripped of its parametrizations (masks folded in: ``W * mask``), traced with
    Torch-Pruning's ``DependencyGraph``, and for each named layer the complement of its kept channels is removed
    with ``get_pruning_group(norm, prune_batchnorm_out_channels, removed).prune()``: the normalisation's
    gamma, beta and running statistics, the output channels of the convs / linear that produce the channel and
    the input channels of the layers that consume it. Layers not named in ``kept`` keep all channels. Applied to
    theta_0 this gives the sliced theta_0 (GAN-LTH §7: rebuild the slimmer network with the initial weights).

    The result equals :func:`zero_channels` of ``G`` (gamma and beta of the removed channels zeroed) in training
    and eval mode, up to float rounding.

    Args:
        G: a generator (dcgan, sngan32, or any :class:`~degan.models.layers.GeneratorBase`); not modified.
        kept: ``{selecting layer name: kept channel indices}`` (e.g. from :func:`select_channels`).

    Returns:
        A plain ``nn.Module`` (no parametrizations, no mask buffers) in ``G``'s train/eval mode, on ``G``'s device,
        with ``kept_channels`` set to the sorted kept indices.

    Raises:
        ValueError: a name that is not a selecting normalisation of ``G`` (the message lists them), empty, repeated
            or out-of-range indices, or a spectral-normed layer in ``G``.
    """
    net = strip_parametrizations(copy.deepcopy(G))
    dg = _dependency_graph(net)
    selectors = _selectors(net, dg)
    unknown = sorted(set(kept) - set(selectors))
    if unknown:
        raise ValueError(f"{unknown} are not channel-selecting normalisation layers of this generator; valid: "
                         f"{', '.join(selectors)}")
    clean = {name: _check_kept(name, idx, selectors[name].num_features) for name, idx in kept.items()}
    for name, idx in clean.items():
        module = selectors[name]
        removed = sorted(set(range(module.num_features)) - set(idx))
        if removed:
            dg.get_pruning_group(module, _norm_prune_fn(dg, module), removed).prune(record_history=False)
    _sync_model_attributes(net)
    for name, idx in clean.items():
        if selectors[name].num_features != len(idx):  # internal invariant: groups of selectors are disjoint
            raise RuntimeError(f"{name} has {selectors[name].num_features} channels after slicing, expected {len(idx)}")
    net.kept_channels = {name: list(idx) for name, idx in clean.items()}
    return net


@torch.no_grad()
def slice_mask(G: nn.Module, kept: Mapping[str, Iterable[int]], mask: Mask) -> Mask:
    """The weight mask ``mask`` of ``G`` cut to the compact network's shapes (same slicing as the weights).

    Args:
        G: the generator the mask belongs to (keys are its plain weight names).
        kept: as in :func:`compact_generator`.
        mask: ``{weight name: bool tensor}``.

    Returns:
        ``{weight name: bool tensor}`` with the compact layers' shapes.

    Raises:
        KeyError: a mask key that is not a weight of ``G``.
    """
    probe = strip_parametrizations(copy.deepcopy(G))
    params = dict(probe.named_parameters())
    for name, m in mask.items():
        params[name].copy_(m.to(params[name].device, params[name].dtype))
    small = dict(compact_generator(probe, kept).named_parameters())
    return {name: small[name].detach().cpu() != 0 for name in mask}


def build_compact_generator(model: str, kwargs: Mapping, kept: Mapping[str, Iterable[int]], *,
                            prunable: str | None = None, spectral_norm: bool = False) -> nn.Module:
    """A freshly initialised compact generator of registered ``model`` with the given kept channels.

    Args:
        model: registered model name.
        kwargs: its options (resolution, img_channels, width, z_dim, ...).
        kept: ``{selecting layer name: kept indices}``.
        prunable: if given, all-ones weight masks are registered on these layer kinds of the compact G (as for
            every other stage of a ticket run), else the network is plain.
        spectral_norm: passed to ``create_model`` (no generator here has spectral-norm layers).

    Returns:
        The compact G (weights random; load a state dict into it).

    Raises:
        ValueError: unknown model or option, or invalid ``kept``.
    """
    from ..models import create_model
    from .mask import add_masks

    G, _ = create_model(model, spectral_norm=spectral_norm, **dict(kwargs))
    small = compact_generator(G, kept)
    small.name, small.config = G.name, dict(G.config)
    if prunable is not None:
        add_masks(small, prunable)
    return small


# ---------------------------------------------------------------------------------------------------------------------
# size and cost


def count_params(net: nn.Module) -> int:
    """Number of parameter entries (masked layers count their full raw weight)."""
    return sum(p.numel() for p in net.parameters())


@torch.no_grad()
def generator_flops(G: nn.Module, batch: int = 1) -> int:
    """Forward FLOPs of ``G`` on ``batch`` latents, counted by ``torch.utils.flop_counter.FlopCounterMode``.

    Counts the matrix products (convs, linears; 2 FLOPs per multiply-add); normalisation, activations and
    upsampling are not counted. Mode (train/eval) is restored; eval mode is used so BN statistics are untouched.
    """
    from torch.utils.flop_counter import FlopCounterMode

    was = G.training
    z, c = _example_inputs(G, batch)
    try:
        G.eval()
        with FlopCounterMode(display=False) as counter:
            G(z, c)
    finally:
        G.train(was)
    return int(counter.get_total_flops())


def flops_ratio(G_small: nn.Module, G_dense: nn.Module) -> float:
    """``FLOPs(G_small) / FLOPs(G_dense)`` per generated image, in (0, 1] for a compact ticket.

    The sparsity of a channel ticket is ``1 - flops_ratio`` (GAN-LTH §4: "the ratio of MFLOPs between the sparse
    model and the full model").
    """
    return generator_flops(G_small) / generator_flops(G_dense)
