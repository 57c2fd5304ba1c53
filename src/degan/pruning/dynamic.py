"""Dynamic pruning with trainable per-channel thresholds (RG-GAN, SPEC §5), as a weight parametrization.

Sources: Saxena, Cao, Xu, Kulshrestha. *RG-GAN: Dynamic Regenerative Pruning for Data-Efficient Generative
Adversarial Networks*. AAAI 2024 (Eq. 1-3); J. Liu, Xu, Shi, Cheung, So. *Dynamic Sparse Training: Find Efficient
Sparse Network From Scratch With Trainable Masked Layers*. ICLR 2020, arXiv:2005.06870 (the step estimator).

Every masked layer (conv, transposed conv, linear; never biases or normalisation) gets a :class:`DynamicMask`
parametrization on its weight, registered *before* spectral norm (pass :func:`add_dynamic_masks` as
``pre_sn_hook`` to :func:`degan.models.create_model`), so the effective weight is ``SN(W ⊙ M)`` and its largest
singular value is 1 whatever the mask. For a weight ``W`` with output channels ``i`` and threshold vector ``t``:

- forward: ``M_ij = S(|W_ij| - t_i)`` (unit step: 1 where the argument is > 0, else 0) and the layer uses
  ``W ⊙ M``;
- backward (``threshold_grad="ste"``): the step's derivative is replaced by the DST estimator
  ``H'(x) = 2 - 4|x|`` for ``|x| <= 0.4``, ``0.4`` for ``0.4 < |x| <= 1``, ``0`` otherwise, so
  ``dL/dt_i = -sum_j g_ij W_ij H'(x_ij)`` (``g = dL/d(W ⊙ M)``, ``x = |W| - t``; pruned weights near the threshold
  contribute, which is how a threshold learns to fall and regrow them), and the weight gets the derivative of
  ``W ⊙ H(|W| - t)``, masked: ``dL/dW = M ⊙ g ⊙ (1 + |W| H'(x))`` (RG-GAN: gradients are computed for all
  weights, then multiplied by the forward mask, "no gradient update for reactivated weights in this pass");
- ``threshold_grad="regularizer_only"``: the mask is a constant for autograd, as in the released RG-GAN code
  (it casts the mask to bool): ``dL/dW = M ⊙ g`` and the thresholds receive no gradient from the loss; they then
  move only by the sparsity regulariser :func:`sparsity_regularizer`.

Pruned weights are **frozen, not zeroed**: their gradient is 0, but Adam's momentum would still move them, so
:meth:`DynamicMask.after_optimizer_step` (called by :func:`degan.pruning.mask.enforce_masks` after every optimizer
step) writes their pre-step values back. A weight whose ``|W| - t`` turns positive again (its threshold fell)
comes back with the value it had when it was pruned ("recurrent regeneration"). (With Adam beta1 = 0, the SNGAN
setting, a zero gradient already gives a zero step; the restore matters for beta1 > 0 and weight decay.)

G_ema: :func:`degan.train.state.ema_update` averages the thresholds like any parameter, so G_ema's mask is
``S(|W_ema| - t_ema)`` from its own averaged weights and thresholds (as the released code, which averages all of
``netG.parameters()``); G's frozen weights are constant, so their averages converge to them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.nn.utils import parametrize

from ..errors import ConfigError
from .mask import PRUNABLE_KINDS, prunable_modules

__all__ = [
    "THRESHOLD_GRAD_MODES",
    "DynamicMask",
    "add_dynamic_masks",
    "check_layers",
    "collapse_guard",
    "density_of",
    "disarm",
    "dynamic_density",
    "dynamic_layers",
    "is_dense",
    "is_dynamic",
    "param_groups",
    "set_dense",
    "sparsity_regularizer",
    "step_grad",
    "threshold_parameters",
    "threshold_penalty",
    "threshold_stats",
    "weight_parameters",
]

THRESHOLD_GRAD_MODES = ("ste", "regularizer_only")

CONVT_TYPES = PRUNABLE_KINDS["convT"]


def step_grad(x: Tensor) -> Tensor:
    """The DST estimator of the unit step's derivative (Liu et al., ICLR 2020, Eq. 6; RG-GAN's ``H'``).

    ``H'(x) = 2 - 4|x|`` for ``|x| <= 0.4``, ``0.4`` for ``0.4 < |x| <= 1``, ``0`` for ``|x| > 1``; it is
    continuous at 0.4 (both branches give 0.4) and jumps to 0 at |x| = 1.

    Args:
        x: float tensor of any shape (``|W| - t``).

    Returns:
        float tensor of ``x``'s shape and dtype, values in [0, 2].
    """
    a = x.abs()
    return torch.where(a <= 1.0, (2.0 - 4.0 * a).clamp_min(0.4), torch.zeros((), dtype=x.dtype, device=x.device))


def _gt0(x: Tensor) -> Tensor:
    """``S(x)`` as a float 0/1 tensor of ``x``'s dtype (a comparison written straight into a float tensor, which
    on CPU is several times faster than a bool mask followed by a multiply or ``where``)."""
    return torch.gt(x, 0.0, out=torch.empty_like(x))


class _MaskedWeightSTE(torch.autograd.Function):
    """``W ⊙ S(|W| - t)`` with the DST estimator in the backward pass (see the module docstring).

    Inputs: the raw weight, the threshold viewed to broadcast against it, the constants ``x = |W| - t`` and
    ``keep = S(x)`` (float 0/1) from the forward pass, and ``aux``, a dict shared by every use of the same
    ``(W, t)`` in which the backward pass stores ``W ⊙ H'(x)`` and ``M ⊙ (1 + |W| H'(x))`` the first time, so the
    several backward passes of one step (D is applied to reals and fakes) cost one multiply each.
    """

    @staticmethod
    def forward(ctx, weight: Tensor, thr: Tensor, x: Tensor, keep: Tensor, aux: dict) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(weight, x, keep)
        ctx.thr_shape, ctx.aux = thr.shape, aux
        return weight * keep

    @staticmethod
    @once_differentiable
    def backward(ctx, g: Tensor):  # type: ignore[override]
        weight, x, keep = ctx.saved_tensors
        aux = ctx.aux
        if "wh" not in aux:
            a = x.abs()
            h = torch.rsub(a, 2.0, alpha=4.0).clamp_min_(0.4).mul_(torch.le(a, 1.0, out=a))  # step_grad(x)
            aux["wh"] = weight * h  # dL/dt_i = -sum_j g_ij (W H')_ij
            aux["scale"] = h.mul_(weight.abs()).add_(1.0).mul_(keep)  # dL/dW = g ⊙ M ⊙ (1 + |W| H')
        grad_w = grad_t = None
        if ctx.needs_input_grad[1]:
            grad_t = (g * aux["wh"]).sum_to_size(ctx.thr_shape).neg_()
        if ctx.needs_input_grad[0]:
            grad_w = g * aux["scale"]
        return grad_w, grad_t, None, None, None


class DynamicMask(nn.Module):
    """Weight parametrization ``W -> W ⊙ S(|W| - t)`` with a trainable threshold ``t`` per output channel.

    RG-GAN (Saxena et al., AAAI 2024, Eq. 1-2) with the Dynamic Sparse Training step estimator (J. Liu et al.,
    ICLR 2020). Register it with :func:`add_dynamic_masks`, before spectral norm.

    Args:
        weight_shape: shape of the weight it masks, e.g. ``[c_out, c_in, k, k]`` for a conv, ``[c_in, c_out, k, k]``
            for a transposed conv, ``[out, in]`` for a linear.
        channel_dim: the weight's output-channel dimension: 0 for conv and linear, 1 for transposed convs (for a
            grouped transposed conv, dim 1 holds ``c_out / groups`` channels and each threshold is shared by the
            channels at the same position in every group).
        threshold_grad: ``"ste"`` (thresholds learn from the loss through ``H'``) or ``"regularizer_only"`` (mask
            constant for autograd, as the released RG-GAN code; thresholds move only by the regulariser).

    Attributes:
        threshold: ``nn.Parameter``, float ``[c_out]``, initialised 0 (in the weight's units, i.e. a magnitude).
        dense: when True (augmented regeneration's dense phase, see :meth:`set_dense`) the mask is all ones.

    Memory: besides the threshold, up to five weight-sized float buffers per layer while training (``|W| - t``, the
    0/1 mask and two backward terms, cached per value of ``(W, t)``; the frozen pre-step copy), none of them in the
    state dict.

    Raises:
        ValueError: an unknown ``threshold_grad`` or a ``channel_dim`` outside the weight's dimensions.
    """

    def __init__(self, weight_shape: torch.Size | tuple[int, ...], channel_dim: int = 0, threshold_grad: str = "ste",
                 *, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if threshold_grad not in THRESHOLD_GRAD_MODES:
            raise ValueError(f"threshold_grad must be one of {', '.join(THRESHOLD_GRAD_MODES)}; got {threshold_grad!r}")
        shape = tuple(int(s) for s in weight_shape)
        if not 0 <= channel_dim < len(shape):
            raise ValueError(f"channel_dim {channel_dim} is outside a weight of shape {shape}")
        self.weight_shape = shape
        self.channel_dim = int(channel_dim)
        self.threshold_grad = threshold_grad
        self.threshold = nn.Parameter(torch.zeros(shape[channel_dim], device=device, dtype=dtype))
        self.view_shape = tuple(s if d == channel_dim else 1 for d, s in enumerate(shape))
        self.dense = False
        # Frozen-weight bookkeeping (plain attributes: not in the state dict, not copied into G_ema by ema_update).
        self._frozen: Tensor | None = None  # pre-step copy of the raw weight
        self._frozen_keep: Tensor | None = None  # the mask (float 0/1) of the forward pass that armed it
        self._armed_version: int | None = None  # weight._version when armed; None = not armed
        self._armed_ptr: int | None = None
        self._cache: tuple[Tensor, Tensor, dict] | None = None  # (|W| - t, float mask, backward terms) and its key
        self._cache_key: tuple | None = None
        # The ParametrizationList holding this mask (set by add_dynamic_masks; bypasses nn.Module registration so
        # the list is not made a child module; deepcopy maps it to the copy's own list).
        object.__setattr__(self, "_plist", None)

    # -- the mask -----------------------------------------------------------------------------------------------------
    def _thr(self) -> Tensor:
        return self.threshold.view(self.view_shape)

    @torch.no_grad()
    def _x_keep(self, weight: Tensor) -> tuple[Tensor, Tensor]:
        """``(x, keep)`` = ``(|W| - t, S(x))`` for ``weight``, ``keep`` as float 0/1 of the weight's dtype.

        Cached while neither the weight nor the thresholds change (keyed on their storage and in-place version
        counters), so the several forward passes of one training step, and the density bookkeeping after the
        step, compute them once. Never modify the returned tensors.
        """
        return self._cached(weight)[:2]

    @torch.no_grad()
    def _cached(self, weight: Tensor) -> tuple[Tensor, Tensor, dict]:
        if torch.is_inference_mode_enabled():  # inference tensors must not be cached (they cannot enter autograd)
            x = weight.abs() - self._thr()
            return x, _gt0(x), {}
        t = self.threshold
        key = (weight.data_ptr(), weight._version, t.data_ptr(), t._version, weight.shape, weight.device)
        if self._cache_key != key:
            x = weight.abs().sub_(self._thr())
            self._cache = (x, _gt0(x), {})
            self._cache_key = key
        return self._cache

    def _keep(self, weight: Tensor) -> Tensor:
        if weight is self._plist_original():
            return self._x_keep(weight)[1]
        with torch.no_grad():
            return _gt0(weight.abs() - self._thr())

    def mask_for(self, weight: Tensor) -> Tensor:
        """``S(|W| - t)`` for ``weight`` (of this mask's shape) as a new bool tensor, ignoring :attr:`dense`."""
        return self._keep(weight) != 0

    def forward(self, weight: Tensor) -> Tensor:
        """Masked weight ``W ⊙ M`` (``W`` itself in the dense phase); same shape and dtype as ``weight``."""
        if self.dense:
            return weight
        x, keep, aux = self._cached(weight)
        if not torch.is_grad_enabled() or not (weight.requires_grad or self.threshold.requires_grad):
            return weight * keep
        if self.training and weight.requires_grad:
            self._arm(weight, keep)
        if self.threshold_grad == "ste":
            return _MaskedWeightSTE.apply(weight, self._thr(), x, keep, aux)
        return weight * keep

    # -- frozen pruned weights ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def _arm(self, weight: Tensor, keep: Tensor) -> None:
        """Remember the weight's pre-step values and the mask of this forward pass (once per step).

        Re-copies whenever the weight changed since the last copy (its in-place version counter moved, e.g. a
        ``load_state_dict``), so the copy always holds the values the optimizer step starts from.
        """
        if self._armed_version == weight._version and self._armed_ptr == weight.data_ptr():
            return
        if self._frozen is None or self._frozen.shape != weight.shape or self._frozen.device != weight.device \
                or self._frozen.dtype != weight.dtype:
            self._frozen = torch.empty_like(weight, memory_format=torch.contiguous_format)
        self._frozen.copy_(weight)
        self._frozen_keep = keep
        self._armed_version, self._armed_ptr = weight._version, weight.data_ptr()

    def disarm(self) -> None:
        """Forget the pre-step copy (the next training forward pass takes a new one) and the cached mask.

        Call it (or :func:`disarm` on the network) after changing the raw weights or thresholds through ``.data``,
        which bypasses the in-place version counters the caches are keyed on.
        """
        self._armed_version = self._armed_ptr = None
        self._frozen_keep = None
        self._cache = self._cache_key = None

    @torch.no_grad()
    def after_optimizer_step(self, weight: Tensor) -> None:
        """Freeze pruned weights: write back the pre-step values where the step's forward mask was 0.

        Called by :func:`degan.pruning.mask.enforce_masks` with the raw weight after every optimizer step.
        Mechanism: the first training forward pass of a step (grad enabled, weight requiring grad) copies the raw
        weight into a persistent buffer and keeps that pass's mask; here ``W <- lerp(W_pre, W, M)`` (exact for a 0/1
        ``M``: ``W`` where kept, ``W_pre`` where pruned). Kept weights keep their update; pruned ones get back exactly
        their old values (their gradient is already 0; this undoes Adam's momentum, which moves them whenever
        beta1 > 0). Cost per step and layer: one copy in the forward pass, one ``lerp`` into the buffer and one copy
        here; no allocation. A no-op in the dense phase or if no training forward ran since the last call.
        """
        if self._armed_version is None or self._frozen_keep is None or self._frozen is None:
            return
        if self._armed_ptr == weight.data_ptr() and self._frozen.shape == weight.shape:  # the weight it copied
            weight.copy_(torch.lerp(self._frozen, weight, self._frozen_keep, out=self._frozen))
        self.disarm()

    def _load_from_state_dict(self, *args, **kwargs) -> None:  # a load replaces the weights: drop the old copy
        self.disarm()
        super()._load_from_state_dict(*args, **kwargs)

    def _apply(self, fn, *args, **kwargs):  # .to(device) / .double(): the copies would be of the old tensors
        self.disarm()
        self._frozen = None
        return super()._apply(fn, *args, **kwargs)

    # -- queries --------------------------------------------------------------------------------------------------
    def _plist_original(self) -> Tensor | None:
        plist = self._plist
        return None if plist is None else plist.original

    def raw_weight(self) -> Tensor:
        """The raw (unmasked, un-normalised) weight this mask is registered on.

        Raises:
            RuntimeError: the mask was not registered with :func:`add_dynamic_masks`.
        """
        plist = self._plist
        if plist is None:
            raise RuntimeError("this DynamicMask is not registered on a layer; use add_dynamic_masks(net)")
        return plist.original

    def sparse_mask(self) -> Tensor:
        """``S(|W| - t)`` from the current weight and thresholds, bool of the weight's shape (ignores ``dense``);
        a new tensor the caller may modify."""
        return self.mask_for(self.raw_weight())

    def current_mask(self) -> Tensor:
        """The mask in force now, bool of the weight's shape: all True in the dense phase, else ``S(|W| - t)``."""
        w = self.raw_weight()
        if self.dense:
            return torch.ones(w.shape, dtype=torch.bool, device=w.device)
        return self.mask_for(w)

    def kept_count(self, effective: bool = True) -> int:
        """Number of kept weights (``effective``: counting the dense phase as all kept)."""
        w = self.raw_weight()
        if effective and self.dense:
            return w.numel()
        keep = self._keep(w)
        return int(keep.sum(dtype=torch.float64 if keep.numel() >= 2 ** 24 else None))  # exact count

    def kept_fraction(self, effective: bool = True) -> float:
        """Fraction of kept weights in [0, 1]: 1.0 in the dense phase when ``effective`` (what the layer computes
        with), else the fraction with ``|W| > t`` whatever the phase."""
        return self.kept_count(effective) / max(1, self.raw_weight().numel())

    def set_dense(self, dense: bool) -> None:
        """Enter (True) or leave (False) the dense phase of augmented regeneration (RG-GAN).

        In the dense phase the mask is all ones, so every pruned weight comes back with the value it was frozen
        at; the thresholds are not used in the forward pass, so they get no gradient and Adam leaves them as they
        are (the sparsity regulariser is also off, see :class:`degan.train.regen.DynamicPruningObjective`). On
        leaving it the mask is recomputed from the weights, which were all trained meanwhile.
        """
        self.dense = bool(dense)
        self.disarm()

    def extra_repr(self) -> str:
        return (f"shape={self.weight_shape}, channel_dim={self.channel_dim}, threshold_grad={self.threshold_grad}, "
                f"dense={self.dense}")


# ---------------------------------------------------------------------------------------------------------------------
# network-level helpers


def _dynamic_mask_of(module: nn.Module) -> DynamicMask | None:
    if not parametrize.is_parametrized(module, "weight"):
        return None
    for p in module.parametrizations.weight:
        if isinstance(p, DynamicMask):
            return p
    return None


def add_dynamic_masks(net: nn.Module, prunable: str | Iterable[str] = "conv,convT,linear",
                      threshold_grad: str = "ste") -> nn.Module:
    """Register a :class:`DynamicMask` (thresholds 0) on every prunable weight of ``net``, in place.

    Pass it as ``pre_sn_hook`` to :func:`degan.models.create_model` (e.g.
    ``pre_sn_hook=lambda n: add_dynamic_masks(n, threshold_grad="regularizer_only")``) so the mask comes before
    spectral norm. Layers that already carry a :class:`DynamicMask` are left as they are.

    Args:
        net: generator or discriminator.
        prunable: layer kinds, ``conv``, ``convT`` and/or ``linear`` (RG-GAN masks all three).
        threshold_grad: ``"ste"`` or ``"regularizer_only"`` (see :class:`DynamicMask`).

    Returns:
        ``net``.

    Raises:
        ValueError: an unknown kind or ``threshold_grad``, or a weight that already has another parametrization
            (spectral norm or a lottery-ticket mask): dynamic masks must come first and do not combine with
            static ones.
    """
    if threshold_grad not in THRESHOLD_GRAD_MODES:
        raise ValueError(f"threshold_grad must be one of {', '.join(THRESHOLD_GRAD_MODES)}; got {threshold_grad!r}")
    for name, module in list(prunable_modules(net, prunable)):
        if parametrize.is_parametrized(module, "weight"):
            if _dynamic_mask_of(module) is not None:
                continue
            kinds = ", ".join(type(p).__name__ for p in module.parametrizations.weight)
            raise ValueError(f"{name} is already parametrized ({kinds}); register dynamic masks before spectral norm "
                             "(pass add_dynamic_masks as pre_sn_hook to create_model) and not together with "
                             "lottery-ticket masks (add_masks)")
        w = module.weight
        dm = DynamicMask(w.shape, 1 if isinstance(module, CONVT_TYPES) else 0, threshold_grad,
                         device=w.device, dtype=w.dtype)
        parametrize.register_parametrization(module, "weight", dm)
        object.__setattr__(dm, "_plist", module.parametrizations.weight)
        dm.disarm()  # registration evaluates the parametrization once
    return net


def dynamic_layers(net: nn.Module) -> Iterator[tuple[str, nn.Module, DynamicMask]]:
    """Yield ``(weight_name, module, DynamicMask)`` for every dynamically masked layer, in module order.

    ``weight_name`` is the name the weight has in a plain copy of the network (``"blocks.1.weight"``).
    """
    for name, module in net.named_modules():
        dm = _dynamic_mask_of(module)
        if dm is not None:
            yield (f"{name}.weight" if name else "weight"), module, dm


def is_dynamic(net: nn.Module) -> bool:
    """Whether ``net`` has at least one :class:`DynamicMask`."""
    return next(dynamic_layers(net), None) is not None


def set_dense(net: nn.Module, dense: bool) -> None:
    """:meth:`DynamicMask.set_dense` on every layer of ``net``."""
    for _, _, dm in dynamic_layers(net):
        dm.set_dense(dense)


def is_dense(net: nn.Module) -> bool:
    """True when ``net`` is in the dense phase (or has no dynamic masks): then no layer prunes."""
    return all(dm.dense for _, _, dm in dynamic_layers(net))


def disarm(net: nn.Module) -> None:
    """Drop the pre-step weight copies of every layer (after changing raw weights through ``.data``)."""
    for _, _, dm in dynamic_layers(net):
        dm.disarm()


def threshold_parameters(net: nn.Module) -> list[nn.Parameter]:
    """The threshold vectors of every :class:`DynamicMask` of ``net``, in module order."""
    return [dm.threshold for _, _, dm in dynamic_layers(net)]


def weight_parameters(net: nn.Module) -> list[nn.Parameter]:
    """Every parameter of ``net`` that is not a threshold (weights, biases, normalisation, embeddings)."""
    thr = {id(p) for p in threshold_parameters(net)}
    return [p for p in net.parameters() if id(p) not in thr]


def param_groups(net: nn.Module, lr: float, threshold_lr: float | None = None, *,
                 threshold_betas: tuple[float, float] | None = None, threshold_eps: float | None = None) -> list[dict]:
    """Adam parameter groups ``[weights, thresholds]`` for ``net`` (empty groups left out).

    Recommended threshold group (the defaults here): the same learning rate and betas as the weights (the
    released RG-GAN code trains both with one Adam, lr 2e-4, betas (0, 0.9)) and weight decay 0 (decay would pull
    the thresholds to 0, i.e. towards a dense network, against the regulariser). Keep the optimizer's ``eps``
    and record it: the regulariser's gradient is tiny (``lambda * exp(-t)`` ~ 5e-12), so with Adam a threshold
    driven by the regulariser alone moves by about ``lr * g / (|g| + eps)`` per step, i.e. ~``lr * 5e-4`` with
    ``eps = 1e-8``; a smaller ``threshold_eps`` (e.g. 1e-15) makes it move ~``lr`` per step instead (SPEC §5 note).
    In ``ste`` mode the loss gradient dominates and eps matters little.

    Args:
        net: a network with dynamic masks (a network without gives one group).
        lr: learning rate of the weights.
        threshold_lr: learning rate of the thresholds; None = ``lr``.
        threshold_betas, threshold_eps: Adam settings for the thresholds; None = the optimizer's.

    Returns:
        ``[{"params": weights, "lr": lr, "name": "weights"}, {"params": thresholds, "lr": ..., "weight_decay": 0.0,
        "name": "thresholds"}]``, to pass to ``torch.optim.Adam(groups, lr=lr, betas=..., eps=...)``.

    Raises:
        ValueError: a negative learning rate or eps.
    """
    for key, v in (("lr", lr), ("threshold_lr", threshold_lr), ("threshold_eps", threshold_eps)):
        if v is not None and not v >= 0:
            raise ValueError(f"{key} must be >= 0; got {v}")
    groups = []
    weights, thr = weight_parameters(net), threshold_parameters(net)
    if weights:
        groups.append({"params": weights, "lr": float(lr), "name": "weights"})
    if thr:
        g = {"params": thr, "lr": float(lr if threshold_lr is None else threshold_lr), "weight_decay": 0.0,
             "name": "thresholds"}
        if threshold_betas is not None:
            g["betas"] = (float(threshold_betas[0]), float(threshold_betas[1]))
        if threshold_eps is not None:
            g["eps"] = float(threshold_eps)
        groups.append(g)
    return groups


def sparsity_regularizer(net: nn.Module, lam: float = 5e-12) -> Tensor:
    """RG-GAN's sparsity penalty ``lam * sum_layers sum_i exp(-t_i)`` (Eq. 3; lambda 5e-12 in the paper, 1e-12 in
    the released code). Penalises low thresholds, pushing them up (sparser masks).

    Args:
        net: network with dynamic masks.
        lam: lambda >= 0.

    Returns:
        0-dim float tensor (differentiable w.r.t. the thresholds); 0 when ``net`` has no dynamic masks.

    Raises:
        ValueError: ``lam < 0`` (or not finite).
    """
    thr = threshold_parameters(net)
    if not thr:
        _check_lam(lam)
        p = next(net.parameters(), None)
        return torch.zeros((), device=p.device if p is not None else None)
    return threshold_penalty(thr, lam)


def _check_lam(lam: float) -> None:
    if not (lam >= 0 and lam != float("inf")):
        raise ValueError(f"sparsity regulariser lambda must be a finite number >= 0 (paper: 5e-12); got {lam}")


def threshold_penalty(thresholds: Iterable[Tensor], lam: float) -> Tensor:
    """``lam * sum over tensors sum_i exp(-t_i)`` for threshold tensors collected once (see
    :func:`sparsity_regularizer`, which collects them from a network).

    Raises:
        ValueError: ``lam < 0`` (or not finite) or no thresholds.
    """
    _check_lam(lam)
    terms = [torch.exp(-t).sum() for t in thresholds]
    if not terms:
        raise ValueError("threshold_penalty needs at least one threshold tensor")
    return lam * torch.stack(terms).sum() if len(terms) > 1 else lam * terms[0]


@torch.no_grad()
def collapse_guard(net: nn.Module, min_keep: float = 0.01) -> list[str]:
    """Reset to 0 the thresholds of every layer whose kept ratio is ``<= min_keep`` (RG-GAN's collapse guard;
    the released code does it with 1 %). Layers in the dense phase are skipped.

    Args:
        net: network with dynamic masks.
        min_keep: kept-ratio floor in [0, 1).

    Returns:
        The weight names of the layers that were reset (empty if none).

    Raises:
        ValueError: ``min_keep`` outside [0, 1).
    """
    if not 0.0 <= min_keep < 1.0:
        raise ValueError(f"min_keep must be in [0, 1) (a kept ratio; RG-GAN uses 0.01); got {min_keep}")
    reset = []
    for name, _, dm in dynamic_layers(net):
        if not dm.dense and dm.kept_fraction(effective=False) <= min_keep:
            dm.threshold.zero_()
            reset.append(name)
    return reset


@torch.no_grad()
def threshold_stats(net: nn.Module) -> dict[str, float]:
    """``{"mean", "min", "max"}`` over all thresholds of ``net`` (NaN when it has none)."""
    return _threshold_stats([dm for _, _, dm in dynamic_layers(net)])


def _threshold_stats(dms: list[DynamicMask]) -> dict[str, float]:
    if not dms:
        nan = float("nan")
        return {"mean": nan, "min": nan, "max": nan}
    t = torch.cat([dm.threshold.detach().reshape(-1) for dm in dms])
    return {"mean": float(t.mean()), "min": float(t.min()), "max": float(t.max())}


@torch.no_grad()
def dynamic_density(net: nn.Module, effective: bool = True) -> dict:
    """Overall and per-layer density of the dynamic masks of ``net``, with threshold statistics.

    Args:
        net: network with dynamic masks.
        effective: count the dense phase as fully kept (what the network computes with); False = the density
            ``|W| > t`` implies whatever the phase.

    Returns:
        ``{"density": float in [0, 1], "kept": int, "total": int, "dense_phase": bool,
        "layers": {weight_name: {"kept", "total", "density"}}, "threshold": {"mean", "min", "max"}}``;
        density 1.0 and no layers for a network without dynamic masks.
    """
    return density_of([(name, dm) for name, _, dm in dynamic_layers(net)], effective)


@torch.no_grad()
def density_of(layers: list[tuple[str, DynamicMask]], effective: bool = True) -> dict:
    """:func:`dynamic_density` from a list ``[(weight_name, DynamicMask)]`` collected once (e.g. by a training
    callback: walking the modules of a network every step costs more than the counting)."""
    out, kept, total = {}, 0, 0
    for name, dm in layers:
        k, n = dm.kept_count(effective), dm.raw_weight().numel()
        out[name] = {"kept": k, "total": n, "density": k / n if n else 1.0}
        kept, total = kept + k, total + n
    return {"density": kept / total if total else 1.0, "kept": kept, "total": total,
            "dense_phase": all(dm.dense for _, dm in layers), "layers": out,
            "threshold": _threshold_stats([dm for _, dm in layers])}


def check_layers(net: nn.Module, names: Iterable[str]) -> list[str]:
    """Check that every name in ``names`` is a dynamically masked layer of ``net`` (for configs naming layers).

    Accepts module names (``blocks.1``) or weight names (``blocks.1.weight``).

    Returns:
        The names as weight names, in the given order.

    Raises:
        ConfigError (a ValueError): a name that is not a masked layer; the message lists the valid names.
    """
    valid = [n for n, _, _ in dynamic_layers(net)]
    out, unknown = [], []
    for n in names:
        w = n if n.endswith("weight") else f"{n}.weight"
        (out if w in valid else unknown).append(w if w in valid else n)
    if unknown:
        shown = ", ".join(v[: -len(".weight")] for v in valid[:40]) + (" ..." if len(valid) > 40 else "")
        raise ConfigError(f"no dynamically masked layer named {', '.join(map(repr, unknown))} in "
                          f"{type(net).__name__}; the masked layers are: {shown or '(none)'}")
    return out
