"""Mixed precision and speed options of the training loop.

Precision (``train.precision``):

- ``fp32`` (default): no autocast; the loop runs exactly as without this module.
- ``bf16``: forward passes and losses under ``torch.autocast(dtype=torch.bfloat16)`` (CPU and CUDA); weights,
  gradients and optimizer state stay fp32. No loss scaling is needed (bf16 has fp32's exponent range).
- ``fp16``: CUDA only. Autocast to float16 plus dynamic loss scaling with one scaler per optimizer (G and D), the
  algorithm of ``torch.amp.GradScaler`` (start 2**16, x2 after 2000 finite steps, x0.5 on inf/NaN). The scaled loss
  is produced by an objective wrapper whose *value* is the unscaled loss (so logging and the NaN guard see the true
  loss) and whose gradient is ``scale`` times larger; :meth:`Precision.unscale_` (called by
  :func:`degan.train.distributed.sync_gradients` after the gradient all-reduce) divides the gradients back and, if
  any is inf/NaN, clears them so that ``optimizer.step()`` skips every parameter (Adam ignores parameters without a
  gradient) and halves the scale. A skipped step is not a divergence: the loop's NaN guard checks the loss values,
  which stay finite; a real NaN loss still stops training.

Terms that differentiate twice or take gradients with respect to activations (R1; AdvAug's PGD step) run in
fp32 inside :func:`fp32` (autocast off, inputs cast to float32).

A checkpoint records its precision (``TrainState.extras["precision"]``); resuming with another precision is an
error unless forced (:func:`check_resume`).

Speed options (train config; what is faster where is measured by ``benchmarks/train_speed.py``):

- ``channels_last``: G, D and G_ema in NHWC memory format (helps conv on recent GPUs with fp16/bf16); the
  config's ``auto`` turns it on for CUDA only (:meth:`degan.config.TrainConfig.channels_last_on`).
- ``adam``: ``auto`` (PyTorch's default: foreach on CUDA, for-loop on CPU), ``foreach``, ``fused`` (CUDA only),
  ``for_loop``.
- ``compile``: ``torch.compile`` of G's and D's plain forward passes. A call whose input requires grad while the
  module's weights do too (R1, AdvAug's PGD on D: double backward) or that runs inside :func:`fp32` /
  :func:`eager` uses the eager module, so double backward never goes through a compiled graph.
- ``cudnn_benchmark``: ``torch.backends.cudnn.benchmark`` (off by default: shapes are fixed, but it makes runs
  non-deterministic and costs start-up time).
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Iterator

import torch
from torch import Tensor, nn

from ..errors import CheckpointError, DeganError
from ..losses import ObjectiveWrapper

__all__ = [
    "PRECISIONS", "PRECISION_CHOICES", "BF16_VALIDATED", "has_bf16_units", "auto_precision", "ADAM_IMPLS", "LossScaler", "Precision", "autocast", "apply_speed_options", "check_resume",
    "configure_adam", "eager", "fp32", "resolve_precision",
]

PRECISIONS = ("fp32", "bf16", "fp16")
#: ``train.precision`` values: the modes plus ``auto`` (:func:`auto_precision`).
PRECISION_CHOICES = PRECISIONS + ("auto",)
#: Model families whose bf16 training the claims suite compared with fp32 and found no quality loss (claim C5:
#: ``dcgan`` on the CIFAR-10 subset, 5 seeds, paired KID difference -0.0010 [-0.0084, +0.0064]).
BF16_VALIDATED = ("dcgan",)
ADAM_IMPLS = ("auto", "foreach", "fused", "for_loop")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def has_bf16_units(device: str | torch.device) -> bool:
    """Whether ``device`` computes bfloat16 in hardware: CUDA with ``torch.cuda.is_bf16_supported()`` (Ampere and
    later), an x86 CPU with ``avx512_bf16`` or ``amx_bf16``, an Arm CPU with ``bf16`` (read from /proc/cpuinfo)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if dev.type != "cpu":
        return False
    try:
        with open("/proc/cpuinfo") as f:
            flags = set()
            for line in f:
                if line.lower().startswith(("flags", "features")):
                    flags.update(line.split(":", 1)[1].split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def auto_precision(model: str, device: str | torch.device) -> tuple[str, str]:
    """``train.precision=auto``: ``bf16`` where the hardware has bf16 units and the claims suite showed bf16 trains
    as well as fp32 for the model family (:data:`BF16_VALIDATED`), else ``fp32``.

    Returns:
        ``(mode, reason)``: the mode and one line saying why.
    """
    if not has_bf16_units(device):
        return "fp32", f"precision auto -> fp32: {torch.device(device).type} has no bfloat16 units"
    if model not in BF16_VALIDATED:
        return "fp32", (f"precision auto -> fp32: bf16 is not yet compared with fp32 for {model} (claims suite C5 "
                        f"covers {', '.join(BF16_VALIDATED)})")
    return "bf16", (f"precision auto -> bf16: bfloat16 units on {torch.device(device).type}, and claims suite C5 "
                    f"found no quality loss for {model}")


def resolve_precision(name: str, device: str | torch.device) -> str:
    """Check that precision ``name`` is usable on ``device``; returns it.

    Raises:
        ValueError: unknown name (naming the valid ones), or ``fp16`` on a CPU.
    """
    if name not in PRECISIONS:
        raise ValueError(f"train.precision={name!r} is not valid; choose one of: {', '.join(PRECISIONS)}")
    if name == "fp16" and torch.device(device).type != "cuda":
        raise ValueError("train.precision=fp16 needs a CUDA device (float16 autocast and loss scaling are for GPUs); "
                         "on CPU use --precision bf16 or fp32")
    return name


# ---------------------------------------------------------------------------------------------------------------------
# loss scaling


class LossScaler:
    """Dynamic loss scale of one optimizer (``torch.amp.GradScaler``'s rule).

    Args:
        init_scale: starting scale (2**16).
        growth_factor, backoff_factor: multiply the scale by these after ``growth_interval`` finite steps / on an
            inf or NaN gradient.
        growth_interval: finite steps before the scale grows.
    """

    def __init__(self, init_scale: float = 2.0 ** 16, growth_factor: float = 2.0, backoff_factor: float = 0.5,
                 growth_interval: int = 2000) -> None:
        self.scale = float(init_scale)
        self.growth_factor, self.backoff_factor, self.growth_interval = growth_factor, backoff_factor, growth_interval
        self.good_steps = 0
        self.skipped = 0

    def unscale_(self, params: list[nn.Parameter]) -> bool:
        """Divide the gradients by the scale; returns True if they are all finite. On inf/NaN the gradients are set
        to None (the optimizer then skips the step) and the scale backs off."""
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return True
        torch._foreach_mul_(grads, 1.0 / self.scale)
        norms = torch._foreach_norm(grads)
        finite = bool(torch.isfinite(torch.stack([n.float() for n in norms])).all())
        if finite:
            self.good_steps += 1
            if self.good_steps >= self.growth_interval:
                self.scale *= self.growth_factor
                self.good_steps = 0
        else:
            for p in params:
                p.grad = None
            self.scale *= self.backoff_factor
            self.good_steps = 0
            self.skipped += 1
        return finite

    def state_dict(self) -> dict:
        return {"scale": self.scale, "good_steps": self.good_steps, "skipped": self.skipped}

    def load_state_dict(self, sd: dict) -> None:
        self.scale, self.good_steps = float(sd["scale"]), int(sd["good_steps"])
        self.skipped = int(sd.get("skipped", 0))


def _scaled(loss: Tensor, scale: float) -> Tensor:
    """``loss`` by value, ``scale * d loss`` by gradient (value exactly ``loss`` while ``scale * loss`` is finite)."""
    lf = loss.float()
    extra = lf * (scale - 1.0)
    return lf + (extra - extra.detach())


class ScaledLossObjective(ObjectiveWrapper):
    """Multiplies the gradients of the D and G losses (and of a lazy G regularisation phase) by their scaler's scale
    (fp16 loss scaling); values and stats unchanged."""

    def __init__(self, objective: Any, precision: "Precision") -> None:
        super().__init__(objective)
        self.precision = precision

    def d_loss(self, G, D, real, z, generator=None, **kw):
        loss, stats = self.objective.d_loss(G, D, real, z, generator, **kw)
        return _scaled(loss, self.precision.scalers["D"].scale), stats

    def g_loss(self, G, D, z, generator=None, **kw):
        loss, stats = self.objective.g_loss(G, D, z, generator, **kw)
        return _scaled(loss, self.precision.scalers["G"].scale), stats

    def g_reg_loss(self, G, D, z, generator=None, **kw):
        """The lazy G regularisation phase's loss (path length), scaled with G's scaler like ``g_loss``."""
        loss, stats = self.objective.g_reg_loss(G, D, z, generator, **kw)
        return _scaled(loss, self.precision.scalers["G"].scale), stats

    def d_reg_loss(self, G, D, real, generator=None, **kw):
        """The lazy D regularisation phase's loss (R1 with ``r1.separate``), scaled with D's scaler."""
        loss, stats = self.objective.d_reg_loss(G, D, real, generator, **kw)
        return _scaled(loss, self.precision.scalers["D"].scale), stats


# ---------------------------------------------------------------------------------------------------------------------
# the policy object


class Precision:
    """Precision policy of a stage; lives in ``TrainState.extras["precision"]`` (checkpointed) and is a callback
    (logs ``loss_scale_G`` / ``loss_scale_D`` in fp16).

    Args:
        mode: ``fp32`` | ``bf16`` | ``fp16``.
        device: training device (``fp16`` needs CUDA).

    Raises:
        ValueError: see :func:`resolve_precision`.
    """

    def __init__(self, mode: str = "fp32", device: str | torch.device = "cpu") -> None:
        self.device_type = torch.device(device).type
        self.mode = resolve_precision(mode, device)
        self.dtype = _DTYPES.get(self.mode)
        self.scalers = {"G": LossScaler(), "D": LossScaler()} if self.mode == "fp16" else {}

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast context of this policy (a null context for fp32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def wrap(self, objective: Any) -> Any:
        """The objective with loss scaling (fp16); unchanged otherwise."""
        return ScaledLossObjective(objective, self) if self.scalers else objective

    def unscale_(self, net: nn.Module, which: str) -> bool:
        """fp16: unscale ``net``'s gradients; False (gradients cleared, step skipped) on inf/NaN. Else True."""
        scaler = self.scalers.get(which)
        return True if scaler is None else scaler.unscale_(list(net.parameters()))

    # callback hooks
    def on_train_start(self, trainer) -> None:
        pass

    def on_step_end(self, trainer, stats: dict) -> None:
        for k, sc in self.scalers.items():
            stats[f"loss_scale_{k}"] = sc.scale

    def on_train_end(self, trainer) -> None:
        pass

    def state_dict(self) -> dict:
        return {"mode": self.mode, "scalers": {k: s.state_dict() for k, s in self.scalers.items()}}

    def load_state_dict(self, sd: dict) -> None:
        """Restore the loss scales (only when the checkpoint was written with the same precision)."""
        if sd.get("mode") == self.mode:
            for k, s in sd.get("scalers", {}).items():
                if k in self.scalers:
                    self.scalers[k].load_state_dict(s)


def check_resume(checkpoint_state: dict, mode: str, force: bool = False) -> None:
    """Refuse to resume a checkpoint written with another precision (checkpoints without a record are fp32).

    Raises:
        CheckpointError: the precisions differ and ``force`` is False.
    """
    saved = checkpoint_state.get("extras", {}).get("precision", {}).get("mode", "fp32")
    if saved != mode and not force:
        raise CheckpointError(f"the checkpoint was trained with precision {saved} but this run asks for {mode}; "
                              f"resume with --precision {saved}, or pass --force to continue in {mode}")


def autocast(state) -> contextlib.AbstractContextManager:
    """The autocast context of ``state.extras["precision"]`` (a null context without one, i.e. fp32)."""
    precision = getattr(state, "extras", {}).get("precision")
    return precision.autocast() if precision is not None else contextlib.nullcontext()


_LOCAL = threading.local()


@contextlib.contextmanager
def eager() -> Iterator[None]:
    """Inside: compiled forwards (``train.compile``) fall back to the eager modules."""
    prev = getattr(_LOCAL, "eager", False)
    _LOCAL.eager = True
    try:
        yield
    finally:
        _LOCAL.eager = prev


@contextlib.contextmanager
def fp32() -> Iterator[None]:
    """Inside: autocast off (CPU and CUDA) and eager modules, for double-backward terms (R1) and gradients with
    respect to activations (AdvAug's PGD). Cast inputs with ``.float()``."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.autocast("cpu", enabled=False))
        if torch.cuda.is_available():
            stack.enter_context(torch.autocast("cuda", enabled=False))
        stack.enter_context(eager())
        yield


# ---------------------------------------------------------------------------------------------------------------------
# speed options


def configure_adam(opt: torch.optim.Optimizer, impl: str) -> None:
    """Set the implementation of an Adam(W) optimizer's param groups (before or after ``load_state_dict``).

    Raises:
        ValueError: unknown ``impl`` or ``fused`` with parameters that are not on a CUDA device.
    """
    if impl not in ADAM_IMPLS:
        raise ValueError(f"train.adam={impl!r} is not valid; choose one of: {', '.join(ADAM_IMPLS)}")
    if impl == "auto":
        return
    if impl == "fused":
        devices = {p.device.type for g in opt.param_groups for p in g["params"]}
        if devices != {"cuda"}:
            raise ValueError(f"train.adam=fused needs every parameter on CUDA (got {sorted(devices)}); "
                             "use foreach or auto on CPU")
    for g in opt.param_groups:
        g["foreach"] = impl == "foreach"
        g["fused"] = impl == "fused"
    if impl == "fused":  # fused kernels keep the step count as a float32 tensor on the parameter's device
        for p, st in opt.state.items():
            if "step" in st and torch.is_tensor(st["step"]):
                st["step"] = st["step"].to(device=p.device, dtype=torch.float32)


class _CompiledForward:
    """``module.forward`` replaced by a dispatcher: the compiled forward for plain calls; the eager one inside
    :func:`eager`, or when an input requires grad while the module's own parameters do too (the pattern of R1 and
    of AdvAug's PGD on D: a gradient w.r.t. the input that is then back-propagated into the weights, i.e. double
    backward). D in the G step (input from G, D frozen) and both plain D-step passes stay compiled."""

    def __init__(self, module: nn.Module, **compile_kw) -> None:
        self.module_params = list(module.parameters())
        self.eager_forward = module.forward
        self.compiled = torch.compile(self.eager_forward, **compile_kw)

    def __call__(self, *args, **kwargs):
        if getattr(_LOCAL, "eager", False) or (
                any(isinstance(a, Tensor) and a.requires_grad for a in (*args, *kwargs.values()))
                and any(p.requires_grad for p in self.module_params)):
            return self.eager_forward(*args, **kwargs)
        return self.compiled(*args, **kwargs)


def apply_speed_options(state, *, channels_last: bool = False, adam: str = "auto", compile: bool = False,
                        cudnn_benchmark: bool = False) -> None:
    """Apply the speed options to a stage's networks and optimizers (call again after loading a checkpoint: loading
    replaces the optimizer param groups).

    Raises:
        ValueError: invalid ``adam`` (see :func:`configure_adam`).
    """
    if torch.backends.cudnn.is_available():
        torch.backends.cudnn.benchmark = bool(cudnn_benchmark)
    if channels_last:
        for net in (state.G, state.D, state.G_ema):
            net.to(memory_format=torch.channels_last)
    for opt in (state.opt_G, state.opt_D):
        configure_adam(opt, adam)
    if compile:
        for net in (state.G, state.D):
            if not isinstance(net.forward, _CompiledForward):
                net.forward = _CompiledForward(net)


def validate_speed(device: str | torch.device, adam: str) -> None:
    """Early check of the speed options against the device.

    Raises:
        DeganError: ``fused`` Adam asked for on a CPU.
    """
    if adam == "fused" and torch.device(device).type != "cuda":
        raise DeganError("train.adam=fused needs CUDA; use foreach or auto on CPU")
