"""Training cost accounting: multiply-accumulates per layer and training FLOPs, dense and sparse-effective.

SPEC §5: "FLOPs: dense MACs per layer from a counter, and sparse-effective FLOPs = sum over layers of dense MACs x
density. State the convention with each figure." The counter is ``torch.utils.flop_counter.FlopCounterMode``,
which counts the matrix products of a forward (``aten.convolution``, ``mm``, ``addmm``, ``bmm``, attention) as
FLOPs = 2 x MACs and ignores biases, normalisation, activations, pooling, up-sampling and element-wise ops; layers
are attributed here with forward hooks around each layer (one window per call, so shared layers add up).

The training convention (:data:`FLOPS_CONVENTION`, repeated in :meth:`FlopsMeter.summary`) follows the sparse
training literature (Evci et al., *Rigging the Lottery: Making All Tickets Winners*, ICML 2020, arXiv:1911.11134,
appendix H): a backward pass costs 2 x its forward (gradients w.r.t. inputs and w.r.t. weights), and a sparse
layer costs its dense MACs times its kept fraction in both passes.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.utils.flop_counter import FlopCounterMode

from .pruning.mask import PRUNABLE_KINDS, layer_keep_fraction
from .train.loop import Callback

__all__ = ["FLOPS_CONVENTION", "TOTAL_KEY", "FlopsMeter", "layer_macs"]

TOTAL_KEY = "total"
"""Key of :func:`layer_macs`'s result holding the MACs of the whole forward (weight names never equal it)."""

FLOPS_CONVENTION = (
    "FLOPs = 2 x MACs; MACs of convolutions and matrix products from torch.utils.flop_counter.FlopCounterMode "
    "(biases, normalisation, activations, pooling, up-sampling and augmentation not counted). Training FLOPs per "
    "iteration = n_dis D steps, each a G forward on batch_D latents (no grad: 1x forward) plus a D forward and "
    "backward on 2 x batch_D images (reals and fakes: 3x forward, backward = 2x forward), plus one G step, a G "
    "forward and backward on batch_G latents (3x) and a D forward and backward on those batch_G fakes (3x). "
    "Dense = all layers dense. Effective = each masked layer's dense MACs x its kept fraction, in forward and "
    "backward alike (Evci et al. 2020), unmasked layers and ops outside layers counted dense; kept fractions "
    "re-read every refresh_every iterations. Not counted: the G_ema update, evaluation, and extra passes of "
    "objective terms (AdvAug perturbations, a distillation teacher)."
)


def _layer_names(net: nn.Module) -> dict[nn.Module, str]:
    """Modules whose MACs :func:`layer_macs` reports: every conv / transposed conv / linear, and every module with a
    parametrized weight, mapped to their weight name as in masks (``"blocks.0.weight"``)."""
    types = tuple(t for ts in PRUNABLE_KINDS.values() for t in ts)
    layers: dict[nn.Module, str] = {}
    for name, module in net.named_modules():
        if module in layers:
            continue  # a module reachable under two names: keep the first, as named_modules does
        # never read ``module.weight`` here: on a parametrized layer that runs the parametrizations (a power
        # iteration of spectral norm in training mode, which would change its ``_u`` buffer)
        if parametrize.is_parametrized(module, "weight") or (
                isinstance(module, types) and module._parameters.get("weight") is not None):
            layers[module] = f"{name}.weight" if name else "weight"
    return layers


def layer_macs(net: nn.Module, *inputs: Any, **kwargs: Any) -> dict[str, int]:
    """Forward multiply-accumulates of every layer of ``net`` for one forward of the given inputs.

    Runs ``net(*inputs, **kwargs)`` once under ``torch.no_grad()`` in eval mode inside a
    ``torch.utils.flop_counter.FlopCounterMode`` (FLOPs = 2 x MACs there), with a forward hook window around
    each layer; the training flags are restored afterwards and no buffer is updated (batch-norm statistics and
    spectral-norm vectors are untouched in eval mode), and no random number is drawn by this function.

    Args:
        net: any module; the reported layers are every Conv1d/2d/3d, ConvTranspose1d/2d/3d and Linear, and every
            other module whose ``weight`` is parametrized.
        *inputs, **kwargs: what ``net`` is called with (e.g. latents float ``[N, z_dim]`` for a generator,
            images float ``[N, C, H, W]`` for a discriminator), on ``net``'s device.

    Returns:
        ``{weight_name: MACs}`` (int, for the whole batch of the inputs, i.e. per forward of that batch; MACs are
        linear in the batch size, so a batch of 1 gives MACs per sample), keyed as in masks
        (``"blocks.1.weight"``; a layer not called gets 0, a layer called twice the sum), plus
        ``TOTAL_KEY = "total"``: all MACs the counter saw in the forward, including matrix products outside the
        reported layers (so ``total >= sum of the layers``).

    Raises:
        Whatever ``net`` raises on these inputs (e.g. ValueError for a wrong shape).
    """
    layers = _layer_names(net)
    own = {name: 0 for name in layers.values()}
    stack: list[list] = []  # [name, flops at window start, flops of nested reported layers]
    handles = []
    modes = {m: m.training for m in net.modules()}
    with FlopCounterMode(display=False) as counter:

        def pre(module: nn.Module, args: Any) -> None:
            stack.append([layers[module], counter.get_total_flops(), 0])

        def post(module: nn.Module, args: Any, out: Any) -> None:
            name, start, nested = stack.pop()
            delta = counter.get_total_flops() - start
            own[name] += delta - nested
            if stack:
                stack[-1][2] += delta

        try:
            for module in layers:
                handles.append(module.register_forward_pre_hook(pre))
                handles.append(module.register_forward_hook(post))
            net.eval()
            with torch.no_grad():
                net(*inputs, **kwargs)
        finally:
            for h in handles:
                h.remove()
            for m, training in modes.items():
                m.training = training
        total = counter.get_total_flops()
    result = {name: flops // 2 for name, flops in own.items()}
    result[TOTAL_KEY] = total // 2
    return result


def _dummy_inputs(G: nn.Module, D: nn.Module, z_dim: int, image_shape: tuple[int, ...],
                  device: torch.device) -> tuple[tuple, dict, tuple, dict]:
    """Batch-of-1 inputs for G and D (zeros: no random numbers drawn, so seeded streams stay untouched)."""
    z = torch.zeros(1, z_dim, device=device)
    img = torch.zeros(1, *image_shape, device=device)
    g_kw: dict = {}
    d_kw: dict = {}
    if int(getattr(G, "num_classes", 0) or 0) > 0:
        g_kw["c"] = torch.zeros(1, dtype=torch.long, device=device)
    if int(getattr(D, "num_classes", 0) or 0) > 0:
        d_kw["c"] = torch.zeros(1, dtype=torch.long, device=device)
    return (z,), g_kw, (img,), d_kw


def _cost_state(state) -> tuple:
    """``(G.cost_state, D.cost_state)`` of a train state (None for networks whose cost is fixed)."""
    return getattr(state.G, "cost_state", None), getattr(state.D, "cost_state", None)


class FlopsMeter(Callback):
    """Trainer callback accumulating training FLOPs, dense and sparse-effective, under :data:`FLOPS_CONVENTION`.

    At ``on_train_start`` it measures the per-layer forward MACs of ``state.G`` and ``state.D`` once, on a batch of
    one (zeros; see :func:`layer_macs`), and scales them by the trainer's ``batch_D``, ``batch_G`` and ``n_dis``
    into per-iteration coefficients. At every ``on_step_end`` it adds the per-iteration figures to the totals: a
    couple of float additions, no tensor op. The masks' kept fractions (:func:`~degan.pruning.layer_keep_fraction`:
    :class:`~degan.pruning.WeightMask` buffers and dynamic masks with ``kept_fraction()``) are re-read at start and
    after every ``refresh_every`` iterations, so masks changed during training (dynamic pruning) are followed with
    that delay; the figure of an iteration uses the fractions of the last refresh before it.

    Networks whose per-sample cost changes during training expose a hashable ``cost_state`` (ProGAN: the growth level
    and whether it is fading in); when the state's G or D reports a new one after an iteration, that iteration is
    still counted at the old figures and the MACs are measured again for the next ones.

    One meter covers one training stage (one Trainer run and its resumes): to resume, save :meth:`state_dict` with
    the checkpoint and call :meth:`load_state_dict` on a fresh meter before ``Trainer.run``.

    Args:
        refresh_every: iterations between two readings of the kept fractions, >= 1 (default 50).

    Raises:
        ValueError: ``refresh_every`` < 1.
    """

    def __init__(self, refresh_every: int = 50) -> None:
        if int(refresh_every) != refresh_every or refresh_every < 1:
            raise ValueError(f"refresh_every must be an integer >= 1 (iterations between mask readings), "
                             f"got {refresh_every!r}")
        self.refresh_every = int(refresh_every)
        self.iterations = 0
        self.train_flops_dense = 0
        self.train_flops_effective = 0.0
        self.real_images = 0
        self.flops_per_iter_dense = 0
        self.flops_per_iter_effective = 0.0
        self.macs_G: dict[str, int] = {}
        self.macs_D: dict[str, int] = {}
        self.keep_G: dict[str, float] = {}
        self.keep_D: dict[str, float] = {}
        self._coef_G = self._coef_D = 0
        self._started = False

    # -- callback hooks ------------------------------------------------------------------------------------------------
    def on_train_start(self, trainer) -> None:
        """Measure per-sample forward MACs of G and D, set the per-iteration coefficients, read the kept fractions."""
        s = trainer.state
        if s.step > 0 and self.iterations == 0:
            warnings.warn(
                f"FlopsMeter starts at G step {s.step} without saved meter state, so its totals cover only the "
                "iterations from now on; save meter.state_dict() with the checkpoint and load it on resume",
                stacklevel=2,
            )
        self.measure(trainer)
        self._started = True

    def measure(self, trainer) -> None:
        """Measure the per-sample forward MACs of the state's G and D now and recompute the per-iteration figures."""
        s = trainer.state
        self._measured_state = _cost_state(s)
        device = next((p.device for p in s.G.parameters()), torch.device("cpu"))
        g_args, g_kw, d_args, d_kw = _dummy_inputs(s.G, s.D, trainer.z_dim, tuple(trainer.images.shape[1:]), device)
        self.macs_G = layer_macs(s.G, *g_args, **g_kw)
        self.macs_D = layer_macs(s.D, *d_args, **d_kw)
        b_D, b_G, n_dis = int(trainer.batch_D), int(trainer.batch_G), int(trainer.n_dis)
        # samples x passes (forward = 1, forward + backward = 3) per iteration, see FLOPS_CONVENTION
        self._coef_G = n_dis * b_D * 1 + b_G * 3
        self._coef_D = n_dis * 2 * b_D * 3 + b_G * 3
        self.flops_per_iter_dense = 2 * (self._coef_G * self.macs_G[TOTAL_KEY]
                                         + self._coef_D * self.macs_D[TOTAL_KEY])
        self.refresh(trainer)

    def on_step_end(self, trainer, stats: dict[str, float]) -> None:
        """Add this iteration's FLOPs; re-read the kept fractions every ``refresh_every`` iterations."""
        if not self._started:
            raise RuntimeError("FlopsMeter.on_step_end before on_train_start; pass the meter in Trainer(callbacks=...)")
        self.iterations += 1
        self.train_flops_dense += self.flops_per_iter_dense
        self.train_flops_effective += self.flops_per_iter_effective
        self.real_images = int(trainer.state.cur_nimg)
        if _cost_state(trainer.state) != self._measured_state:
            self.measure(trainer)
        elif self.iterations % self.refresh_every == 0:
            self.refresh(trainer)

    # -- figures -------------------------------------------------------------------------------------------------------
    @staticmethod
    def _effective_macs(macs: dict[str, int], keep: dict[str, float]) -> float:
        """Forward MACs with each layer scaled by its kept fraction; unmasked layers and other ops dense."""
        layers = sum(m for n, m in macs.items() if n != TOTAL_KEY)
        other = macs[TOTAL_KEY] - layers
        return other + sum(m * keep.get(n, 1.0) for n, m in macs.items() if n != TOTAL_KEY)

    def refresh(self, trainer) -> None:
        """Re-read the kept fractions of G's and D's layers and recompute the effective per-iteration FLOPs."""
        self.keep_G = layer_keep_fraction(trainer.state.G)
        self.keep_D = layer_keep_fraction(trainer.state.D)
        self.flops_per_iter_effective = 2.0 * (self._coef_G * self._effective_macs(self.macs_G, self.keep_G)
                                               + self._coef_D * self._effective_macs(self.macs_D, self.keep_D))

    def summary(self) -> dict:
        """The figures so far, JSON-serialisable, with the convention they follow.

        Returns:
            A dict with:

            - ``train_flops_dense`` (int) / ``train_flops_effective`` (float): FLOPs summed over the iterations
              metered so far (resumes included when the state was loaded);
            - ``flops_per_iter_dense`` (int) / ``flops_per_iter_effective`` (float): FLOPs of one iteration, the
              effective one at the latest kept fractions;
            - ``effective_ratio``: effective / dense, in [0, 1] (of the totals, or of one iteration before any);
            - ``macs_forward_G`` / ``macs_forward_D`` (int): MACs of one forward of one sample (dense);
            - ``macs_forward_G_effective`` / ``macs_forward_D_effective`` (float): the same at the kept fractions;
            - ``iterations`` (int), ``real_images`` (int, #RI = reals shown to D, the trainer's ``cur_nimg``);
            - ``layers``: ``{"G"|"D": {weight_name: {"macs_forward": int, "kept_fraction": float}}}``;
            - ``convention``: :data:`FLOPS_CONVENTION`.
        """
        dense = self.train_flops_dense if self.iterations else self.flops_per_iter_dense
        eff = self.train_flops_effective if self.iterations else self.flops_per_iter_effective
        layers = {
            net: {n: {"macs_forward": int(m), "kept_fraction": float(keep.get(n, 1.0))}
                  for n, m in macs.items() if n != TOTAL_KEY}
            for net, macs, keep in (("G", self.macs_G, self.keep_G), ("D", self.macs_D, self.keep_D))
        }
        return {
            "train_flops_dense": int(self.train_flops_dense),
            "train_flops_effective": float(self.train_flops_effective),
            "flops_per_iter_dense": int(self.flops_per_iter_dense),
            "flops_per_iter_effective": float(self.flops_per_iter_effective),
            "effective_ratio": float(eff / dense) if dense else 1.0,
            "macs_forward_G": int(self.macs_G.get(TOTAL_KEY, 0)),
            "macs_forward_D": int(self.macs_D.get(TOTAL_KEY, 0)),
            "macs_forward_G_effective": float(self._effective_macs(self.macs_G, self.keep_G)) if self.macs_G else 0.0,
            "macs_forward_D_effective": float(self._effective_macs(self.macs_D, self.keep_D)) if self.macs_D else 0.0,
            "iterations": int(self.iterations),
            "real_images": int(self.real_images),
            "refresh_every": self.refresh_every,
            "layers": layers,
            "convention": FLOPS_CONVENTION,
        }

    # -- resume --------------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The accumulated totals as plain Python numbers (``torch.load(weights_only=True)``-safe)."""
        return {
            "iterations": int(self.iterations),
            "train_flops_dense": int(self.train_flops_dense),
            "train_flops_effective": float(self.train_flops_effective),
            "real_images": int(self.real_images),
        }

    def load_state_dict(self, sd: dict) -> None:
        """Restore the totals of :meth:`state_dict` (call before ``Trainer.run``; MACs are re-measured at start).

        Raises:
            ValueError: a key is missing or a value is negative / not finite (not a FlopsMeter state).
        """
        try:
            iterations = int(sd["iterations"])
            dense = int(sd["train_flops_dense"])
            eff = float(sd["train_flops_effective"])
            real = int(sd.get("real_images", 0))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"not a FlopsMeter state ({e!r}); expected the dict of FlopsMeter.state_dict() with "
                             "iterations, train_flops_dense, train_flops_effective") from None
        if iterations < 0 or dense < 0 or not math.isfinite(eff) or eff < 0 or real < 0:
            raise ValueError(f"FlopsMeter state has negative or non-finite values: {sd!r}")
        self.iterations, self.train_flops_dense, self.train_flops_effective = iterations, dense, eff
        self.real_images = real
