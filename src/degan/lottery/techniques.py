"""The built-in techniques of a training stage (with the RG-GAN stage helpers :func:`dynamic_callback` and
:func:`save_dynamic_result`), each a :class:`~degan.train.technique.Technique` registered with
:func:`~degan.train.technique.register_technique` (one factory per technique; None when it is off).

=============  ========================================================  =====  ==========
technique      enabled by                                                order  callback
=============  ========================================================  =====  ==========
advaug         ``advaug.enabled`` (replaces the adversarial objective)     0      -
recon          ``recon.weight > 0`` and a model with decoders (FastGAN)    5      -
lecam          ``lecam.enabled``                                          10      -
gp             ``train.loss=wgangp`` (WGAN-GP penalty + drift)             15      -
r1             ``r1.gamma > 0``                                           20      -
pl             ``pl.weight > 0`` (StyleGAN2 path length, lazy G phase)     22      -
ada            an ADA ``train.augment`` pipeline                          30      30
dynamic        ``dynamic.enabled`` (RG-GAN; builds the train state)       40      10
kd             IMP levels >= 1 with ``prune.kd_weight > 0``               50      -
grow           ``grow.enabled`` and a model that grows (ProGAN)            95      15
rewind         level 0 of a ticket run with late rewinding                 -      20
precision      always (fp32 / bf16 / fp16 autocast, loss scaling)        100       0
monitor        ``eval.monitor_every_kimg`` (D overfitting monitor)         -      70
tensorboard    ``eval.tensorboard``                                        -      80
=============  ========================================================  =====  ==========

Stage-specific techniques built by their callers: :class:`Slimming` (the slimming stage of a channel ticket).
``recon`` (FastGAN's reconstruction term) lives in :mod:`degan.recon`, ``grow`` (ProGAN's progressive growing) in
:mod:`degan.train.grow` and ``gp`` (WGAN-GP) in :mod:`degan.train.gp`; they register when imported at the end here.
The order numbers reproduce the historical wiring exactly, so training is bit-identical to it.
"""

from __future__ import annotations

from safetensors.torch import save_file as save_safetensors
from torch import nn

from .._version import __version__
from ..config import to_dict
from ..fileio import atomic_path, write_json
from ..train import distributed as ddp
from ..train.state import TrainState
from .experiment import Experiment, evaluate_generator, model_kwargs
from .layout import StageLayout
from ..train.technique import CALLBACK_ORDER, ORDER, StageContext, Technique, register_technique


# ----- objective terms -------------------------------------------------------------------------------------------

class AdvAug(Technique):
    """AdvAug (Chen et al., NeurIPS 2021, arXiv:2103.00397): the adversarial objective with PGD feature
    perturbations of G and D (:class:`degan.augment.advaug.AdvAugObjective`), replacing the plain one."""

    name, order = "advaug", 0

    def __init__(self, ctx: StageContext) -> None:
        self.cfg, self.augment = ctx.cfg, ctx.augment

    def wrap(self, objective, state):
        from ..augment.advaug import AdvAugObjective, AdvAugSettings

        settings = AdvAugSettings(**to_dict(self.cfg.advaug))
        return AdvAugObjective(self.cfg.train.loss, self.augment, settings, resolution=self.cfg.data.resolution)


@register_technique("advaug")
def _advaug(ctx: StageContext):
    return AdvAug(ctx) if ctx.cfg.advaug.enabled else None


class LeCamTechnique(Technique):
    """LeCam regulariser (Tseng et al., CVPR 2021); its EMAs are checkpointed (``state.extras["lecam"]``)."""

    name, order = "lecam", ORDER["lecam"]

    def __init__(self, ctx: StageContext) -> None:
        from ..augment.lecam import LeCam

        lc = ctx.cfg.lecam
        self.lecam = LeCam(weight=lc.weight, decay=lc.decay, start_step=lc.start_step)

    def setup(self, state) -> None:
        state.extras["lecam"] = self.lecam

    def wrap(self, objective, state):
        return self.lecam.wrap(objective, step_fn=lambda: state.step)

    def summary(self, state) -> dict:
        lc = self.lecam
        return {"lecam": {"weight": lc.weight, "decay": lc.decay, "start_step": lc.start_step,
                          "alpha_R": lc.alpha_R, "alpha_F": lc.alpha_F}}


@register_technique("lecam")
def _lecam(ctx: StageContext):
    return LeCamTechnique(ctx) if ctx.cfg.lecam.enabled else None


class R1Technique(Technique):
    """R1 on the un-augmented reals, lazy (:mod:`degan.train.r1`); its D-step counter is checkpointed."""

    name, order = "r1", ORDER["r1"]

    def __init__(self, ctx: StageContext) -> None:
        from ..train.r1 import R1

        self.r1 = R1(ctx.cfg.r1.gamma, ctx.cfg.r1.interval, separate=ctx.cfg.r1.separate)

    def setup(self, state) -> None:
        state.extras["r1"] = self.r1
        if self.r1.separate:  # its own lazy D step: lr * c, beta ** c (a resume then loads the saved groups)
            from ..train.path_length import lazy_adam_scale

            lazy_adam_scale(state.opt_D, self.r1.interval)

    def wrap(self, objective, state):
        return self.r1.wrap(objective)


@register_technique("r1")
def _r1(ctx: StageContext):
    return R1Technique(ctx) if ctx.cfg.r1.gamma > 0 else None


class ADATechnique(Technique):
    """ADA's adaptive p controller (Karras et al., NeurIPS 2020): p and its accumulators are checkpointed; it logs
    p and r_t for fixed p too, and writes ``ada_p.png`` after training."""

    name, order, callback_order = "ada", ORDER["ada"], CALLBACK_ORDER["ada"]

    def __init__(self, ctx: StageContext) -> None:
        from ..augment.ada import ADAController

        self.augment, self.stage = ctx.augment, ctx.stage
        self.ada = ADAController(ctx.augment)

    def setup(self, state) -> None:
        state.extras["ada"] = self.ada

    def callbacks(self, state) -> list:
        return [self.ada]

    def wrap(self, objective, state):
        return self.ada.wrap(objective)

    def finish(self, state):
        from ..augment.ada import plot_ada

        plot_ada(self.stage.stats, self.stage.root / "ada_p.png", target=self.ada.target if self.ada.adaptive else None)
        return None

    def summary(self, state) -> dict:
        a = self.ada
        return {"ada": {"spec": self.augment.spec, "adaptive": a.adaptive, "p_final": a.p, "r_t_last": a.last_rt,
                        "p_updates": a.updates}}


@register_technique("ada")
def _ada(ctx: StageContext):
    from ..augment.ada import AdaAugment

    return ADATechnique(ctx) if isinstance(ctx.augment, AdaAugment) else None


class KnowledgeDistillation(Technique):
    """IMP_GD^KD (GAN-LTH §3): KL from the frozen dense trained D added to L_D (:class:`degan.losses.
    DistillationObjective`)."""

    name, order = "kd", ORDER["kd"]

    def __init__(self, teacher, weight: float) -> None:
        self.teacher, self.weight = teacher, weight

    def wrap(self, objective, state):
        from ..losses import DistillationObjective

        return DistillationObjective(objective, self.teacher, self.weight)


@register_technique("kd")
def _kd(ctx: StageContext):
    if ctx.role != "level" or ctx.stage.level < 1 or ctx.cfg.prune.kd_weight <= 0 or ctx.stage.is_done():
        return None
    from .experiment import dense_teacher

    return KnowledgeDistillation(dense_teacher(ctx.exp), ctx.cfg.prune.kd_weight)


class Slimming(Technique):
    """The slimming stage of a channel ticket (GAN-LTH Algorithm 2): the proximal L1 step on G's BatchNorm scales
    after each update and the distillation ``mean((G(z) - G_dense(z))^2)`` to the dense G (weight
    ``distill_weight``; 0 = none). Built by :func:`degan.lottery.channel.run_channel_ticket`."""

    name, order, callback_order = "slimming", ORDER["distill"], CALLBACK_ORDER["slimming"]

    def __init__(self, rho: float, teacher=None, distill_weight: float = 0.0) -> None:
        self.rho, self.teacher, self.distill_weight = rho, teacher, distill_weight

    def callbacks(self, state) -> list:
        from ..pruning.slimming import SlimmingProximal

        return [SlimmingProximal(self.rho)]

    def wrap(self, objective, state):
        if self.distill_weight <= 0:
            return objective
        from ..pruning.slimming import GeneratorDistillation

        return GeneratorDistillation(objective, self.teacher, self.distill_weight)


# ----- state, precision, logging -----------------------------------------------------------------------------------

class DynamicPruningTechnique(Technique):
    """RG-GAN (Saxena et al., AAAI 2024): dynamic masks with learned thresholds, the sparsity regulariser and
    regeneration (:mod:`degan.train.regen`). Builds the train state (threshold parameter groups), writes Sparse_RG /
    Dense_RG generators itself and reports the final densities."""

    name, order, callback_order = "dynamic", ORDER["dynamic"], CALLBACK_ORDER["dynamic"]
    changes_density = True

    def __init__(self, ctx: StageContext) -> None:
        self.exp, self.stage = ctx.exp, ctx.stage
        self.cb = None

    def make_state(self, G, D, opt_kw: dict):
        from ..train.regen import make_dynamic_state

        state = make_dynamic_state(G, D, threshold_lr=self.exp.cfg.dynamic.threshold_lr, **opt_kw)
        self.cb = dynamic_callback(self.exp, self.stage)
        return state

    def setup(self, state) -> None:
        state.extras["dynamic"] = self.cb

    def callbacks(self, state) -> list:
        return [self.cb]

    def wrap(self, objective, state):
        return self.cb.wrap(objective)

    def finish(self, state):
        return save_dynamic_result(self.exp, self.stage, state, self.cb)

    def summary(self, state) -> dict:
        from ..train.regen import _opt_summary

        d = self.cb
        return {"variant": "RG", "dynamic": {
            "events": d.events, "fids": d.fids, "dense_phase_at_end": d.dense, "output": self.exp.cfg.dynamic.output,
            "settings": to_dict(self.exp.cfg.dynamic), "optimizer_G": _opt_summary(state.opt_G),
            "optimizer_D": _opt_summary(state.opt_D)}}


@register_technique("dynamic")
def _dynamic(ctx: StageContext):
    return DynamicPruningTechnique(ctx) if ctx.cfg.dynamic.enabled else None


class RewindPointTechnique(Technique):
    """Late rewinding (GAN-LTH §3): saves the dense run's G, D and G_ema at the rewind point (``rewind.pt``)."""

    name, callback_order = "rewind", CALLBACK_ORDER["rewind"]

    def __init__(self, ctx: StageContext, kind: str, value) -> None:
        self.exp, self.kind, self.value = ctx.exp, kind, value

    def callbacks(self, state) -> list:
        from .experiment import RewindPoint, rewind_path

        return [RewindPoint(rewind_path(self.exp), self.kind, self.value)]


@register_technique("rewind")
def _rewind(ctx: StageContext):
    from ..config import parse_rewind

    if ctx.role != "level" or ctx.stage.level != 0 or ctx.stage.branch is not None:
        return None
    kind, value = parse_rewind(ctx.cfg.prune.rewind)
    return RewindPointTechnique(ctx, kind, value) if kind not in ("init", "draw") else None


_AUTO_SAID: set = set()


def effective_precision(cfg, device, log=None) -> str:
    """``train.precision`` with ``auto`` resolved for the model and device (said once per run folder in the log)."""
    from ..train.precision import auto_precision

    if cfg.train.precision != "auto":
        return cfg.train.precision
    mode, reason = auto_precision(cfg.model.name, device)
    if log is not None and (cfg.model.name, str(device)) not in _AUTO_SAID:
        _AUTO_SAID.add((cfg.model.name, str(device)))
        log(f"[degan] {reason}")
    return mode


class PrecisionTechnique(Technique):
    """``--precision fp32|bf16|fp16`` (:mod:`degan.train.precision`): autocast, fp16 loss scaling (the outermost
    objective wrapper), the mode checkpointed; resuming in another precision is refused unless ``--force``."""

    name, order, callback_order = "precision", ORDER["precision"], CALLBACK_ORDER["precision"]

    def __init__(self, ctx: StageContext) -> None:
        from ..train.precision import Precision

        self.force = getattr(ctx.exp, "force", False)
        self.precision = Precision(effective_precision(ctx.cfg, ctx.exp.device, getattr(ctx.exp, "log", None)),
                                   ctx.exp.device)

    def setup(self, state) -> None:
        state.extras["precision"] = self.precision

    def before_resume(self, saved: dict) -> None:
        from ..train.precision import check_resume

        check_resume(saved, self.precision.mode, force=self.force)

    def callbacks(self, state) -> list:
        return [self.precision]

    def wrap(self, objective, state):
        return self.precision.wrap(objective)


@register_technique("precision")
def _precision(ctx: StageContext):
    return PrecisionTechnique(ctx)


class MonitorTechnique(Technique):
    """The D overfitting monitor (:mod:`degan.train.monitor`): D's accuracy on training vs held-out reals."""

    name, callback_order = "monitor", CALLBACK_ORDER["monitor"]

    def __init__(self, ctx: StageContext) -> None:
        self.ctx, self.monitor = ctx, None
        ctx.info["monitor_technique"] = self

    def callbacks(self, state) -> list:
        from ..train.monitor import overfitting_monitor

        cfg = self.ctx.cfg
        self.monitor = overfitting_monitor(self.ctx.exp, self.ctx.stage, cfg.eval.monitor_every_kimg,
                                           cfg.eval.monitor_num)
        return [self.monitor]


@register_technique("monitor")
def _monitor(ctx: StageContext):
    return MonitorTechnique(ctx) if ctx.cfg.eval.monitor_every_kimg is not None else None


class TensorBoardTechnique(Technique):
    """TensorBoard event files beside the JSONL logs (:mod:`degan.report.tensorboard`), with the monitor's
    accuracies when the monitor is on."""

    name, callback_order = "tensorboard", CALLBACK_ORDER["tensorboard"]

    def __init__(self, ctx: StageContext) -> None:
        self.ctx = ctx

    def callbacks(self, state) -> list:
        from ..report.tensorboard import TensorBoardLogger

        cfg, info = self.ctx.cfg, self.ctx.info
        mon = info.get("monitor_technique")
        return [TensorBoardLogger(self.ctx.stage.tensorboard, cfg.train.log_kimg, cfg.train.snap_kimg,
                                  info["grid_z"], mon.monitor if mon is not None else None, grid_c=info.get("grid_c"))]


@register_technique("tensorboard")
def _tensorboard(ctx: StageContext):
    return TensorBoardTechnique(ctx) if ctx.cfg.eval.tensorboard else None
def dynamic_callback(exp: Experiment, stage: StageLayout):
    """The RG-GAN callback of a stage, with the trigger metric evaluated on G_ema when regeneration is on."""
    from ..train.regen import DynamicPruning

    dyn = exp.cfg.dynamic
    evaluate = None
    if dyn.regen_every_kimg is not None:
        def evaluate(G_ema: nn.Module) -> float:
            value = None  # computed on rank 0, broadcast: every rank takes the same regeneration decision
            if ddp.is_main():
                value = float(evaluate_generator(exp, G_ema, [dyn.regen_metric], dyn.regen_num_gen)[0]["value"])
            G_ema.train()  # evaluation put it in eval mode; the EMA copy's mode does not matter, keep it stable
            return float(ddp.broadcast_object(value))
    log_path = stage.root / "dynamic.jsonl" if ddp.is_main() else None  # ranks > 0 must not truncate rank 0's log
    return DynamicPruning(lam=dyn.lam, min_keep=dyn.min_keep, regen_every_kimg=dyn.regen_every_kimg,
                          trigger=dyn.trigger, evaluate=evaluate, log_path=log_path,
                          log_kimg=exp.cfg.train.log_kimg, metric=dyn.regen_metric,
                          log=exp.log if ddp.is_main() else None)


def save_dynamic_result(exp: Experiment, stage: StageLayout, state: TrainState, dynamic) -> dict:
    """Write Sparse_RG and Dense_RG generators (plain state dicts, no masks machinery) and the final densities.

    ``G_ema.safetensors`` is the one ``dynamic.output`` names; the other is ``G_ema_dense.safetensors`` /
    ``G_ema_sparse.safetensors``. Returns the final effective densities ``{"G", "D"}`` of the raw G and D.
    """
    from ..pruning.dynamic import dynamic_density
    from ..train.regen import dense_state_dict, sparse_state_dict

    cfg = exp.cfg
    out = {"sparse": sparse_state_dict(state.G_ema), "dense": dense_state_dict(state.G_ema)}
    other = "dense" if cfg.dynamic.output == "sparse" else "sparse"
    for path, sd in ((stage.G_ema, out[cfg.dynamic.output]), (stage.root / f"G_ema_{other}.safetensors", out[other])):
        with atomic_path(path) as tmp:
            save_safetensors({k: v.detach().cpu().contiguous() for k, v in sd.items()}, str(tmp))
    write_json(stage.generator_json, {"model": cfg.model.name, "kwargs": model_kwargs(cfg),
                                      "spectral_norm": cfg.model.spectral_norm, "plain": True,
                                      "rg_output": cfg.dynamic.output, "z_dim": state.G_ema.z_dim,
                                      "degan_version": __version__})
    dG, dD = dynamic_density(state.G, effective=False), dynamic_density(state.D, effective=False)
    exp.log(f"[degan] {stage.root.name}: RG-GAN final density G {dG['density']:.4f}, D {dD['density']:.4f} "
            f"({len([e for e in dynamic.events if e.get('event') == 'regenerate'])} regeneration(s); "
            f"G_ema.safetensors is the {cfg.dynamic.output} generator)")
    write_json(stage.density, {"level": stage.level, "density_G": dG["density"], "density_D": dD["density"],
                               "layers_G": dG["layers"], "layers_D": dD["layers"], "dynamic": True,
                               "dense_phase_at_end": dynamic.dense, "events": dynamic.events})
    return {"G": dG["density"], "D": dD["density"]}



from . import best as _best  # noqa: E402,F401  (registers the best-snapshot / early-stopping technique)
from .. import recon as _recon  # noqa: E402,F401  (registers FastGAN's self-supervised reconstruction term)
from . import early_bird as _early_bird  # noqa: E402,F401  (registers the early-bird ticket check)
from ..train import path_length as _path_length  # noqa: E402,F401  (registers StyleGAN2's path-length phase)
from ..train import grow as _grow  # noqa: E402,F401  (registers ProGAN's progressive growing schedule)
from ..train import gp as _gp  # noqa: E402,F401  (registers the WGAN-GP gradient penalty and drift term)
