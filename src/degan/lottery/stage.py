"""One stage (an IMP level, a branch, a ``degan train`` run): restore, train with the enabled techniques, write
G_ema, evaluate, write ``done.json``. Everything beyond plain GAN training is a technique
(:mod:`degan.train.technique`, built-ins in :mod:`degan.lottery.techniques`).
"""

from __future__ import annotations

import time
from typing import Callable

import torch
from torch import nn

from .._version import __version__
from ..augment import build_augment
from ..config import to_dict
from ..costs import FlopsMeter
from ..errors import CheckpointError, DeganError, Interrupted, TrainingDivergedError
from ..fileio import append_jsonl, read_json, remove_stale_temps, truncate_jsonl, write_json
from ..losses import GANObjective
from ..pruning import Mask, density, get_mask, layer_density, set_mask
from ..report.grid import save_grid
from ..train.callbacks import ProgressBar, Snapshot, StatsLogger
from ..train.checkpoint import latest_checkpoint, load_checkpoint
from ..train.interrupt import stop_on_signals
from ..train.loop import StopRequested, Trainer, float_to_images, images_to_float
from ..train import distributed as ddp
from ..metrics.evaluate import auto_num_gen
from ..train.memory import is_oom, oom_error, probe_micro_batch
from ..train.precision import apply_speed_options
from . import techniques as _builtin_techniques  # noqa: F401  (registers the built-in techniques)
from ..train.technique import (CALLBACK_ORDER, StageContext, Technique, build_techniques, make_stage_state,
                               ordered_callbacks, wrap_objective)
from ..train.state import make_state
from .experiment import (Builder, Experiment, evaluate_generator, grid_inputs, networks_for, parse_metrics,
                         save_G_ema, save_masks)
from .layout import StageLayout

Log = Callable[[str], None]




def _restore_from(exp: Experiment, init: dict, masks: dict[str, Mask], build: Builder | None = None
                  ) -> tuple[nn.Module, nn.Module]:
    """Fresh G, D with the weights rewound to ``init`` and ``masks`` applied (pruned raw weights zeroed)."""
    G, D = (build or networks_for(exp.cfg))(exp.cfg)
    try:
        G.load_state_dict(init["G"])
        D.load_state_dict(init["D"])
    except RuntimeError as e:
        raise CheckpointError(f"initial weights do not fit model {exp.cfg.model.name!r} "
                              f"({str(e).splitlines()[0][:200]}); they were made for another model or config") from None
    set_mask(G, masks["G"])
    set_mask(D, masks["D"])
    return G.to(exp.device), D.to(exp.device)


def _checkpoint_meta(exp: Experiment, stage: StageLayout) -> dict:
    return {"config": to_dict(exp.cfg), "stage": stage.root.name, "degan_version": __version__,
            "subset_indices": torch.from_numpy(exp.indices.copy())}


#: Append-only logs of a stage whose records carry ``cur_nimg``; cut back to the checkpoint a stage resumes from.
STEP_LOGS = ("stats.jsonl", "monitor.jsonl")


def repair_after_fault(exp: Experiment, stage: StageLayout, cur_nimg: int) -> None:
    """Undo what an interrupted run of an unfinished stage left behind, before it (re)starts at ``cur_nimg``.

    Removes stale temporary files of interrupted atomic writes in the stage folder; cuts the step logs
    (:data:`STEP_LOGS`) back to the records at or before ``cur_nimg`` (the resumed training writes the rest again,
    so every step appears once); empties ``metrics.jsonl`` (an unfinished stage has no final metrics yet; a kill
    during the final evaluation may have left part of them). RG-GAN's ``dynamic.jsonl`` is cut by its own
    technique (:class:`degan.train.regen.DynamicPruning`).
    """
    removed = remove_stale_temps(stage.root)
    cut = {name: truncate_jsonl(stage.root / name, lambda r: int(r.get("cur_nimg", 0)) <= cur_nimg)
           for name in STEP_LOGS}
    cut["metrics.jsonl"] = truncate_jsonl(stage.metrics, lambda r: False)
    cut = {k: v for k, v in cut.items() if v}
    if removed or cut:
        exp.log(f"[degan] {stage.root.name}: repaired what an interruption left: "
                + ", ".join([f"{len(removed)} temporary file(s) removed"] * bool(removed)
                            + [f"{n} record(s) after kimg {cur_nimg / 1000:g} cut from {k}" for k, n in cut.items()]))


def stage_bytes_needed(state, keep_checkpoints: int) -> int:
    """About how many bytes a stage writes: ``keep_checkpoints`` checkpoints plus the one being written (G, D,
    G_ema and Adam's two moments of G and D), the final G_ema, and 1 MiB of sample grids and logs."""
    def nbytes(module) -> int:
        return sum(t.numel() * t.element_size() for t in module.state_dict().values() if torch.is_tensor(t))

    def pbytes(module) -> int:
        return sum(p.numel() * p.element_size() for p in module.parameters())

    ckpt = nbytes(state.G) + nbytes(state.D) + nbytes(state.G_ema) + 2 * (pbytes(state.G) + pbytes(state.D))
    return ckpt * (max(keep_checkpoints, 1) + 1) + nbytes(state.G_ema) + (1 << 20)


def warn_if_short_of_space(exp: Experiment, stage: StageLayout, state) -> None:
    """One warning line when the stage folder's file system has less free space than the stage will write."""
    import shutil

    need = stage_bytes_needed(state, exp.cfg.train.keep_checkpoints)
    try:
        free = shutil.disk_usage(stage.root).free
    except OSError:
        return
    if free < need:
        exp.log(f"[degan] warning: {stage.root} has {free / 2**20:.1f} MiB free but this stage writes about "
                f"{need / 2**20:.1f} MiB (checkpoints, G_ema, samples); it will stop with 'the disk is full' when "
                "space runs out, and --resume latest continues once space is freed")


def run_stage(exp: Experiment, stage: StageLayout, init: dict, masks: dict[str, Mask], *, resume: bool = False,
              progress: bool = True, extra_info: dict | None = None, build: Builder | None = None,
              techniques: list[Technique] | None = None, role: str = "train",
              generator_meta: dict | None = None) -> dict:
    """Train one stage from ``init`` under ``masks``, evaluate it and write ``done.json``; skip it if done.

    Everything beyond plain adversarial training (augmentation controllers, regularisers, RG-GAN, AdvAug, KD,
    precision, the D monitor, TensorBoard) is a technique (:mod:`degan.train.technique`): every registered one is
    built from the config and the stage, and none is named here.

    Args:
        exp: the prepared experiment.
        stage: the stage folder.
        init: state dicts ``{"G", "D"}`` to start from (theta_0 / phi_0 for IMP rewinding).
        masks: ``{"G": Mask, "D": Mask}``.
        resume: continue from the stage's latest checkpoint if it has one.
        progress: show a progress bar.
        extra_info: merged into ``done.json``.
        build: builds fresh (G, D) for this stage (e.g. a channel-pruned G); default :func:`build_networks`.
        techniques: stage-specific technique instances added to the registered ones (e.g. slimming).
        role: ``"level"`` (an IMP level), ``"train"`` or ``"branch"``; techniques may depend on it (KD, rewinding).
        generator_meta: merged into ``generator.json`` (how to rebuild a non-standard G).

    Returns:
        The ``done.json`` summary.

    Raises:
        DeganError: the stage has an unfinished training and ``resume`` is False.
        TrainingDivergedError: NaN/inf loss; the last good checkpoint is kept.
    """
    cfg = exp.cfg
    if stage.is_done():
        exp.log(f"[degan] {stage.root.name} already finished; skipping (delete {stage.done} to redo it)")
        return read_json(stage.done)
    stage.root.mkdir(parents=True, exist_ok=True)
    G, D = _restore_from(exp, init, masks, build)
    opt_kw = dict(lr_G=cfg.optim.lr_G, lr_D=cfg.optim.lr_D, betas=(cfg.optim.beta1, cfg.optim.beta2),
                  eps=cfg.optim.eps, seed=cfg.train.seed)
    augment = build_augment(cfg.train.augment)
    ctx = StageContext(exp, stage, augment=augment, role=role)
    techniques = build_techniques(ctx, techniques)
    state = make_stage_state(techniques, G, D, opt_kw, make_state)
    for t in techniques:  # checkpointed technique state is registered before a resume loads it
        t.setup(state)
    meter = FlopsMeter()
    state.extras["flops"] = meter
    stats_logger = StatsLogger(stage.stats, cfg.train.log_kimg)  # its running sums are checkpointed too
    state.extras["stats_logger"] = stats_logger
    ckpt = latest_checkpoint(stage.checkpoints)
    if ckpt is not None:
        if not resume:
            raise DeganError(f"{stage.root} has an unfinished training (checkpoint {ckpt.name}); pass "
                             "--resume latest to continue it, or use another --outdir to start over")
        saved = load_checkpoint(ckpt, "cpu")["state"]
        for t in techniques:
            t.before_resume(saved)
        state.load_state_dict(saved)
        exp.log(f"[degan] resuming {stage.root.name} from {ckpt.name} at kimg {state.kimg:.1f}")
    repair_after_fault(exp, stage, state.cur_nimg)
    warn_if_short_of_space(exp, stage, state)
    exp.record_invocation()  # every check passed: this command trains, so the folder records it
    apply_speed_options(state, channels_last=cfg.train.channels_last_on(exp.device), adam=cfg.train.adam,
                        compile=cfg.train.compile, cudnn_benchmark=cfg.train.cudnn_benchmark)
    save_masks(stage.masks, {"G": get_mask(G), "D": get_mask(D)})
    dens = {"G": density(get_mask(G)), "D": density(get_mask(D))}
    write_json(stage.density, {"level": stage.level, "density_G": dens["G"], "density_D": dens["D"],
                               "layers_G": layer_density(get_mask(G)), "layers_D": layer_density(get_mask(D))})
    exp.log(f"[degan] {stage.root.name}: density G {dens['G']:.4f}, D {dens['D']:.4f}")

    # fixed-seed previews: reals and augmented reals (adaptive ADA shown at p = 0.5; training starts at p = 0)
    preview = torch.Generator().manual_seed(0)
    reals = exp.images[torch.randint(0, exp.images.shape[0], (64,), generator=preview)]
    save_grid(reals, stage.samples / "reals.png", upscale=2)
    if augment is not None:
        show = augment.with_p(0.5 if augment.adaptive else augment.p) if hasattr(augment, "with_p") else augment
        aug = show(images_to_float(reals), generator=preview)
        save_grid(float_to_images(aug.clamp(-1, 1)), stage.samples / "reals_aug.png", upscale=2)

    grid_z, grid_c, grid_nrow = grid_inputs(G, cfg.eval.seed + 1)  # conditional: one row per class
    ctx.info.update(grid_z=grid_z, grid_c=grid_c)
    snapshot = Snapshot(stage.checkpoints, stage.samples, cfg.train.snap_kimg, _checkpoint_meta(exp, stage),
                        grid_z, keep=cfg.train.keep_checkpoints, grid_c=grid_c, nrow=grid_nrow)
    dynamic_density = any(t.changes_density for t in techniques)
    stats_logger.extra = (lambda: {"density_G": dens["G"], "density_D": dens["D"]}) if not dynamic_density else None
    entries = [(CALLBACK_ORDER["flops"], meter),
               (CALLBACK_ORDER["stats"], stats_logger),
               (CALLBACK_ORDER["snapshot"], snapshot)]
    if progress:
        entries.append((CALLBACK_ORDER["progress"], ProgressBar(desc=stage.root.name)))
    for t in sorted(techniques, key=lambda t: t.callback_order):
        entries += [(t.callback_order, cb) for cb in t.callbacks(state)]
    callbacks = ddp.stage_callbacks(ordered_callbacks(entries))  # DDP: sync first; file writers on rank 0 only
    objective = wrap_objective(techniques, GANObjective(cfg.train.loss, augment), state)
    micro = cfg.train.micro_batch()
    trainer = Trainer(state, exp.images, objective, total_kimg=cfg.train.total_kimg,
                      batch_D=ddp.per_rank_batch(cfg.train.batch_D, "train.batch_D"),
                      batch_G=ddp.per_rank_batch(cfg.train.batch_G, "train.batch_G"), n_dis=cfg.train.n_dis,
                      ema_decay=cfg.train.ema_beta(), mirror=cfg.data.mirror, device=exp.device, callbacks=callbacks,
                      labels=exp.labels, ema_start_step=cfg.train.ema_start_step,
                      micro_batch=None if micro == "auto" else micro)
    ddp.barrier()  # every rank has looked for its checkpoint before rank 0 writes the first one
    try:
        if micro == "auto":
            chosen = probe_micro_batch(trainer, log=exp.log)
            exp.log(f"[degan] --batch-gpu auto: {chosen} images per pass "
                    f"({max(trainer.batch_D, trainer.batch_G)} per process and step, gradients accumulated)")
        with stop_on_signals(exp.log, enabled=not ddp.is_distributed()) as requested:
            trainer.stop_requested = requested
            try:
                trainer.run()
            except StopRequested:
                path = snapshot.snapshot(trainer, periodic=False)  # between two iterations: resumes bit-identically
                err = Interrupted(f"{requested()} at kimg {state.kimg:.2f}: {stage.root.name} stopped and wrote "
                                  f"{path}; continue with the same command and --resume latest")
                err.exit_code = 143 if requested() == "SIGTERM" else 130  # 128 + the signal's number
                raise err from None
    except TrainingDivergedError as e:
        last = latest_checkpoint(stage.checkpoints)
        raise TrainingDivergedError(f"{e}. Last good checkpoint: {last}") from None
    except KeyboardInterrupt:
        raise DeganError(f"interrupted; {stage.root.name} can continue from {latest_checkpoint(stage.checkpoints)} "
                         "with --resume latest") from None
    except Exception as e:  # noqa: BLE001 - only out-of-memory is translated
        if not is_oom(e):
            raise
        where = ("the --batch-gpu auto probe" if micro == "auto" and trainer.micro_batch is None
                 else f"the training step at kimg {state.kimg:.2f}")
        raise oom_error(e, where=where + f" of {stage.root.name}", model=cfg.model.name, width=cfg.model.width,
                        resolution=cfg.data.resolution, batch=cfg.train.batch_D,
                        batch_per_process=max(trainer.batch_D, trainer.batch_G), micro_batch=trainer.micro_batch,
                        device=exp.device) from None

    # portable generator: safetensors + JSON config (a technique that writes its own generators returns densities)
    finished = [d for t in techniques if (d := t.finish(state)) is not None]
    if finished:
        dens = finished[-1]
    else:
        save_G_ema(stage, state.G_ema, exp.cfg, generator_meta)

    summary = {"level": stage.level, "density_G": dens["G"], "density_D": dens["D"],
               "sparsity_G": 1 - dens["G"], "sparsity_D": 1 - dens["D"], "kimg": state.kimg, "step": state.step,
               "real_images_shown": state.cur_nimg, "train_seconds": round(state.wall_seconds, 2),
               "micro_batch": trainer.micro_batch,
               "costs": {k: v for k, v in meter.summary().items() if k != "layers"}}
    for t in techniques:
        summary.update(t.summary(state))
    metrics = parse_metrics(cfg.eval.metrics)
    if metrics and ddp.is_main():  # metrics on rank 0 only (G_ema is the same on every rank)
        t0 = time.perf_counter()
        try:
            num_gen = cfg.eval.num_gen
            if num_gen is None:
                num_gen = auto_num_gen(exp.images.shape[0], exp.device)
                exp.log(f"[degan] evaluating with {num_gen} samples (chosen for {exp.images.shape[0]} training "
                        f"images on {torch.device(exp.device).type}; --num-gen N sets it)")
            records = evaluate_generator(exp, state.G_ema, metrics, num_gen, progress=progress)
        except Exception as e:  # noqa: BLE001 - only out-of-memory is translated
            if not is_oom(e):
                raise
            raise oom_error(e, where=f"the evaluation of {stage.root.name}", model=cfg.model.name,
                            width=cfg.model.width, resolution=cfg.data.resolution, batch=cfg.eval.batch_size,
                            batch_per_process=cfg.eval.batch_size, micro_batch=None, device=exp.device,
                            flag="--set eval.batch_size=") from None
        for r in records:
            append_jsonl(stage.metrics, {"level": stage.level, "kimg": state.kimg, **r, "timestamp": time.time()})
        summary["eval_seconds"] = round(time.perf_counter() - t0, 2)
        summary["metrics"] = {r["metric"]: {"value": r["value"], "std": r.get("std")} for r in records}
        exp.log("[degan] " + stage.root.name + ": " + ", ".join(
            f"{r['metric']} {r['value']:.4g}" + (f" ± {r['std']:.2g}" if r.get("std") is not None else "")
            for r in records))
    summary.update(extra_info or {})
    write_json(stage.done, summary)
    ddp.barrier()  # the stage's files exist before any rank goes on
    return summary
