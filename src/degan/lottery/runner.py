"""Runs: data -> (levels: prune -> rewind -> train -> evaluate) -> report. Idempotent: finished levels are skipped.

IMP for GANs (Algorithm 1 of Chen et al., *GANs Can Play Lottery Tickets Too*, ICLR 2021, arXiv:2106.00134, and of
Chen et al., *Data-Efficient GAN Training Beyond (Just) Augmentations*, NeurIPS 2021, arXiv:2103.00397): level 0
trains the dense G and D from theta_0 / phi_0; level k prunes ``rate`` of the remaining weights of each chosen
network by global magnitude (G and D ranked separately), rewinds the kept weights of G and D to theta_0 / phi_0
and trains again on the same limited data (the subset indices are drawn once per run and reused by every level).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch

from ..config import RunConfig, load_file, to_dict, variant_name
from ..errors import CheckpointError, DeganError, TrainingDivergedError
from ..fileio import atomic_path, read_json, remove_stale_temps
from ..pruning import Mask, set_mask
from ..train import distributed as ddp
from ..train.checkpoint import load_weights
from .early_bird import early_bird_levels
from .experiment import (  # noqa: F401  (re-exported: the public API of degan.lottery.runner)
    Builder, Experiment, RewindPoint, _print, build_dynamic_networks, build_networks, check_class_count,
    dense_masks, dense_teacher, environment, evaluate_generator, experiment_for, final_state, get_extractor,
    grid_inputs, initial_weights, level_start, load_masks, model_kwargs, networks_for, parse_metrics, prepare,
    repeat_conditions, resolve_classes, resolve_device, rewind_path, sample_fn_for, save_G_ema, save_masks)
from ..export import load_generator  # noqa: F401  (re-exported)
from .masks import prune_networks, run_levels
from .stage import run_stage
from .layout import RunLayout

Log = Callable[[str], None]




def repair_run_folder(exp: Experiment) -> None:
    """Before a resumed run continues: remove the temporary files that a killed write left directly in the run
    folder (``init.pt``, ``config.yaml``, the report...). Each unfinished stage repairs its own folder
    (:func:`degan.lottery.stage.repair_after_fault`)."""
    removed = remove_stale_temps(exp.run.root, recursive=False)
    if removed:
        exp.log(f"[degan] {exp.run.root.name}: {len(removed)} temporary file(s) of an interrupted write removed")


def next_masks(exp: Experiment, k: int, prev_masks: dict[str, Mask]) -> dict[str, Mask]:
    """Masks of level ``k >= 1`` by the configured method; networks not in ``prune.networks`` keep their mask.

    ``imp_global`` / ``imp_layerwise`` / ``random`` prune ``rate`` of the remaining weights of level k-1's trained
    networks (G or G_ema by ``prune.mask_source``; D); ``omp`` prunes the trained dense level 0 in one shot to
    density ``(1 - rate) ** k``. Every method gives level k the density ``(1 - rate) ** k`` of each pruned network
    (up to ties).
    """
    cfg = exp.cfg
    method = cfg.prune.method
    state = final_state(exp.run.level(0 if method == "omp" else k - 1))
    G, D = build_networks(cfg)
    G.load_state_dict(state["G_ema" if cfg.prune.mask_source == "G_ema" else "G"])
    D.load_state_dict(state["D"])
    seed = cfg.prune.seed * 1000 + k
    return prune_networks({"G": G, "D": D}, prev_masks, (n.strip() for n in cfg.prune.networks.split(",")),
                          method=method, rate=cfg.prune.rate, level=k, seeds={"G": seed, "D": seed})


def share_dense_level(exp: Experiment, source: str | Path) -> None:
    """Reuse the finished dense level 0 (and theta_0 / phi_0) of another ticket run that trained it identically.

    Level 0 does not depend on the prune settings, so IMP_G, IMP_GD, OMP and random-pruning runs of one config can
    share it (one dense baseline, trained once). Copies ``init.pt`` and ``level_0`` into this run if it has no
    level 0 yet.

    Raises:
        DeganError: the source is not a run with a finished level 0, or its config differs from this run's in
            anything but ``prune.*``, ``eval.*`` and the name, or it drew another subset, or this run already has a
            different level 0.
    """
    import shutil

    src = RunLayout(Path(source))
    if not src.config.is_file() or not src.level(0).is_done():
        raise DeganError(f"--dense-from {source}: not a run folder with a finished level_0")
    from ..config import merge

    theirs, mine = to_dict(merge(RunConfig(), load_file(src.config))), to_dict(exp.cfg)
    diffs = [f"{sec}.{k}: {theirs.get(sec, {}).get(k)!r} vs {v!r}" for sec, vals in mine.items()
             if isinstance(vals, dict) and sec not in ("prune", "eval") for k, v in vals.items()
             if sec != "train" or k not in ("snap_kimg", "log_kimg", "keep_checkpoints", "device")
             if theirs.get(sec, {}).get(k) != v]
    if diffs:
        raise DeganError(f"--dense-from {source} trained its dense level with another config ("
                         + "; ".join(diffs[:5]) + "); only prune.* and eval.* may differ")
    if read_json(src.subset).get("indices") != exp.indices.tolist():
        raise DeganError(f"--dense-from {source} drew another data subset; the dense level cannot be shared")
    if exp.run.level(0).root.exists():
        import filecmp

        if exp.run.init.is_file() and filecmp.cmp(src.init, exp.run.init, shallow=False):
            return  # already shared (a re-run)
        raise DeganError(f"{exp.run.level(0).root} exists already; --dense-from only fills a run without level 0")
    shutil.copy2(src.init, exp.run.init)
    tmp = exp.run.root / ".level_0.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src.level(0).root, tmp)
    tmp.rename(exp.run.level(0).root)
    exp.log(f"[degan] level_0 shared from {src.root} (dense level trained once for all variants)")


def run_ticket(cfg: RunConfig, outdir: str | Path, *, resume: bool = False, progress: bool = True,
               log: Log = _print, branches: tuple[str, ...] = (), dense_from: str | Path | None = None,
               force: bool = False) -> RunLayout:
    """Lottery tickets: level 0 dense, then ``prune.levels`` levels of prune -> rewind -> train -> evaluate.

    The variant (IMP_G / IMP_GD / IMP_GD^KD, pruning method, rewind point, D reset, rate) comes from ``cfg.prune``.
    Re-running the same command skips finished levels; more ``--levels`` extend the same run. ``branches`` (names in
    :data:`degan.lottery.branches.BRANCHES`) are trained from every finished level k >= 1 after the levels.

    Returns:
        The run folder layout.
    """
    log = log if ddp.is_main() else (lambda msg: None)  # DDP: rank 0 speaks
    exp = prepare(cfg, outdir, "ticket", log)
    cfg = exp.cfg  # with model.num_classes resolved from the data (conditional runs)
    exp.force = force
    if resume and ddp.is_main():
        repair_run_folder(exp)
    if dense_from is not None:
        with ddp.main_first():
            share_dense_level(exp, dense_from)
    init = initial_weights(exp)
    variant = variant_name(cfg.prune)

    trained = early_bird_levels(cfg)  # one-shot early-bird: the dense level (to the draw) and the last level only

    def train(stage, masks: dict[str, Mask]) -> None:
        if stage.level not in trained:
            return
        try:
            if stage.level == 0:  # late rewinding saves its point during the dense level (a technique)
                run_stage(exp, stage, init, masks, resume=resume, progress=progress, role="level",
                          extra_info={"variant": variant, "branch": None})
            else:
                run_stage(exp, stage, level_start(exp, init, stage.level), masks, resume=resume, progress=progress,
                          role="level", extra_info={"variant": variant, "branch": None, "rewind": cfg.prune.rewind,
                                                    "d_reset": cfg.prune.d_reset})
        except TrainingDivergedError as e:
            raise _diverged_hint(exp, stage, e, "ticket") from None

    run_levels(exp.run, cfg.prune.levels, dense_masks(cfg), lambda k, prev: next_masks(exp, k, prev), train)
    if branches:
        from .branches import run_branch

        for k in (k for k in trained if k >= 1):
            for b in branches:
                run_branch(exp, k, b, resume=resume, progress=progress)
    from ..report import write_report

    if ddp.is_main():
        log(f"[degan] report: {write_report(exp.run.root)}")
    ddp.barrier()
    return exp.run


def ticket_source(ticket: str | Path, cfg: RunConfig) -> tuple[dict, dict[str, Mask]]:
    """Masks and theta_0 of a finished ticket level, checked against ``cfg``.

    Raises:
        CheckpointError: not a level folder, or made for another model/resolution/channels/prunable set; its
            ``init.pt`` is unreadable or holds code; its weights or masks do not fit the model (wrong shapes).
    """
    from .layout import find_stage

    try:
        run, stages = find_stage(ticket)
    except FileNotFoundError as e:
        raise CheckpointError(str(e)) from None
    if len(stages) != 1:
        hint = f"pass one of them, e.g. {stages[-1].root}" if stages else "it has none; train it first"
        raise CheckpointError(f"--ticket expects one level folder (runs/<run>/level_<k>), got the run {ticket} with "
                              f"{len(stages)} levels; {hint}")
    src = load_file(run.config)
    mine = to_dict(cfg)
    diffs = [f"{sec}.{key}: ticket {src.get(sec, {}).get(key)!r} vs this run {mine[sec][key]!r}"
             for sec, key in (("model", "name"), ("model", "width"), ("model", "z_dim"), ("model", "spectral_norm"),
                              ("data", "resolution"), ("data", "channels"), ("prune", "prunable"))
             if src.get(sec, {}).get(key) != mine[sec][key]]
    if diffs:
        raise CheckpointError("the ticket was drawn for another model or config: " + "; ".join(diffs)
                              + ". Train it with the same model settings")
    if not run.init.is_file():
        raise CheckpointError(f"{run.init} is missing; the ticket's initial weights are needed to rewind")
    init = load_weights(run.init, what="the ticket's initial weights",
                        todo="train the ticket run again, or use a level of another run")
    masks = load_masks(stages[0].masks)
    _check_ticket_fits(cfg, init, masks, ticket)
    return init, masks


def _check_ticket_fits(cfg: RunConfig, init: dict, masks: dict[str, Mask], ticket: str | Path) -> None:
    """Build this run's G and D (with the ticket's class count) and load the ticket's theta_0 and masks into them,
    so a ticket that cannot be trained is refused before a run folder is written.

    Raises:
        CheckpointError: the weights or masks do not fit (keys or shapes of another model or config).
    """
    theirs = init.get("model") or {}
    cond = bool(theirs.get("conditional"))
    probe = replace(cfg, model=replace(cfg.model, conditional=cond,
                                       num_classes=theirs.get("num_classes") if cond else None))
    G, D = build_networks(probe)
    for name, net in (("G", G), ("D", D)):
        try:
            net.load_state_dict(init[name])
        except (KeyError, RuntimeError) as e:
            detail = "; ".join(ln.strip() for ln in str(e).strip().splitlines()[:2])[:200]
            raise CheckpointError(f"the ticket {str(ticket)!r} has initial weights of {name} that do not fit this "
                                  f"model ({detail}); train it with the model settings it was drawn with") from None
        try:
            set_mask(net, masks.get(name, {}))
        except CheckpointError as e:
            raise CheckpointError(f"the ticket {str(ticket)!r} does not fit this model: {e} Train it with the model "
                                  "settings it was drawn with") from None


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def continue_from(exp: Experiment, stage, path: str | Path) -> dict | None:
    """Start ``stage`` (level 0 of a ``degan train`` run) from the checkpoint ``path`` of another run whose config
    differs from this one only in the optimizer settings (``optim.*``: learning rates, betas, eps) and bookkeeping:
    ``degan train ... --set optim.lr_G=... --resume PATH``, e.g. to continue a run that diverged from its last good
    checkpoint with lower learning rates.

    The checkpoint's full state (weights, Adam moments, counters, random streams) is copied into this stage's
    ``checkpoints/`` with the new settings put into the optimizers' parameter groups (groups that had the old
    setting get the new one; e.g. RG-GAN thresholds with their own ``dynamic.threshold_lr`` keep it), the source
    stage's ``stats.jsonl`` / ``monitor.jsonl`` records up to the checkpoint are copied, and ``resumed_from.json``
    records the source and the changes; the stage then resumes from that checkpoint as with ``--resume latest``.
    Re-running the command after an interruption continues this stage's own newest checkpoint.

    Returns:
        The ``resumed_from.json`` record, or None when the stage is finished already.

    Raises:
        CheckpointError: the file is not a degan training checkpoint, was written for another config (the keys
            that differ are named) or another data subset.
        DeganError: this stage already has training of its own that did not start from a checkpoint.
    """
    import numpy as np

    from ..config import config_hash, merge
    from ..fileio import read_jsonl, write_json, write_text
    from ..train.checkpoint import checkpoint_name, latest_checkpoint, load_checkpoint, save_checkpoint
    from .stage import STEP_LOGS

    path = Path(path)
    if stage.is_done():
        return None
    own = latest_checkpoint(stage.checkpoints)
    if own is not None:
        if stage.resumed_from.is_file():
            exp.log(f"[degan] {stage.root.name} continues from {own.name} (it started from "
                    f"{read_json(stage.resumed_from)['checkpoint']})")
            return read_json(stage.resumed_from)
        raise DeganError(f"{stage.root} has training of its own already (checkpoint {own.name}); --resume {path} "
                         "starts a run from another run's checkpoint. Continue this one with --resume latest, or use "
                         "another --outdir")
    payload = load_checkpoint(path)
    if not isinstance(payload.get("config"), dict):
        raise CheckpointError(f"{str(path)!r} has no config; it is not a checkpoint of a degan training stage")
    try:
        theirs = merge(RunConfig(), payload["config"])
    except DeganError as e:
        raise CheckpointError(f"the config stored in {str(path)!r} cannot be read by this degan ({e})") from None
    mine = exp.cfg
    if config_hash(replace(mine, optim=theirs.optim)) != config_hash(theirs):
        a, b = _flat(to_dict(theirs)), _flat(to_dict(mine))
        diffs = [f"{k}: checkpoint {a.get(k)!r} vs this run {v!r}" for k, v in b.items()
                 if a.get(k) != v and not k.startswith(("optim.", "name", "eval."))]
        raise CheckpointError(f"--resume {path}: that checkpoint was trained with another config ("
                              + "; ".join(diffs[:6]) + "); when continuing from another run's checkpoint only the "
                              "optimizer settings (optim.*) may change")
    saved_idx = payload.get("subset_indices")
    if saved_idx is not None and not np.array_equal(np.asarray(saved_idx), exp.indices):
        raise CheckpointError(f"--resume {path}: that checkpoint was trained on another subset of the data")
    state = payload["state"]
    old, new = theirs.optim, mine.optim
    for net in ("G", "D"):
        lr_old, lr_new = getattr(old, f"lr_{net}"), getattr(new, f"lr_{net}")
        for group in state[f"opt_{net}"]["param_groups"]:
            if group.get("lr") == lr_old:
                group["lr"] = lr_new
            if tuple(group.get("betas", ())) == (old.beta1, old.beta2):
                group["betas"] = (new.beta1, new.beta2)
            if group.get("eps") == old.eps:
                group["eps"] = new.eps
    cur = int(state["cur_nimg"])
    changed = {f"optim.{k}": [v, getattr(new, k)] for k, v in to_dict(old).items() if v != getattr(new, k)}
    record = {"checkpoint": str(path.resolve()), "source_stage": payload.get("stage"), "kimg": cur / 1000,
              "step": int(state["step"]), "changed": changed}
    src = path.resolve().parent.parent  # <run>/<stage>/checkpoints/<file>: its logs up to the checkpoint
    for name in STEP_LOGS:
        if (src / name).is_file() and not (stage.root / name).exists():
            recs = [r for r in read_jsonl(src / name) if int(r.get("cur_nimg", 0)) <= cur]
            write_text(stage.root / name, "".join(json.dumps(r) + "\n" for r in recs))
    from .stage import _checkpoint_meta

    write_json(stage.resumed_from, record)  # before the checkpoint: a checkpoint here means the seeding finished
    save_checkpoint(stage.checkpoints / checkpoint_name(cur), {**payload, **_checkpoint_meta(exp, stage),
                                                               "state": state})
    exp.log(f"[degan] {stage.root.name}: continuing from {path} (kimg {cur / 1000:g}, G step {state['step']})"
            + "".join(f"; {k} {a:g} -> {b:g}" if isinstance(a, float) else f"; {k} {a} -> {b}"
                      for k, (a, b) in changed.items()))
    return record


def _diverged_hint(exp: Experiment, stage, e: TrainingDivergedError, kind: str) -> TrainingDivergedError:
    """The divergence error with how to continue: the last good checkpoint and the command that continues past it
    with lower learning rates (``degan train``), or that starts over with them (``degan ticket``)."""
    from ..train.checkpoint import latest_checkpoint

    o = exp.cfg.optim
    lower = f"--set optim.lr_G={o.lr_G / 2:g} --set optim.lr_D={o.lr_D / 2:g}"
    last = latest_checkpoint(stage.checkpoints)
    msg = str(e).split(". Last good checkpoint:")[0]
    if last is None:
        return TrainingDivergedError(f"{msg}. No checkpoint was written before it; start again with lower learning "
                                     f"rates, e.g. {lower}")
    if kind == "train":
        return TrainingDivergedError(f"{msg}. Last good checkpoint: {last}. To continue from it with lower learning "
                                     f"rates, run the same command with {lower} --resume {last} (a new run folder "
                                     "continues from that checkpoint)")
    return TrainingDivergedError(f"{msg}. Last good checkpoint: {last}. A ticket level cannot continue with other "
                                 f"learning rates; run the ticket search again with lower ones, e.g. {lower}")


def run_train(cfg: RunConfig, outdir: str | Path, *, resume: bool | str | Path = False, progress: bool = True,
              log: Log = _print, force: bool = False) -> RunLayout:
    """Train one GAN (dense from a fresh init, or a ticket's mask from its theta_0), evaluate, report.

    ``resume``: True continues the run's newest checkpoint (``--resume latest``); a path to a checkpoint of another
    run with other optimizer settings starts this run from it (:func:`continue_from`).
    """
    if cfg.ticket:
        init, masks = ticket_source(cfg.ticket, cfg)
    log = log if ddp.is_main() else (lambda msg: None)  # DDP: rank 0 speaks
    exp = prepare(cfg, outdir, "train", log)
    cfg = exp.cfg  # with model.num_classes resolved from the data (conditional runs)
    exp.force = force
    if resume and ddp.is_main():
        repair_run_folder(exp)
    if cfg.ticket:
        check_class_count(init.get("model", {}), cfg, f"the ticket {cfg.ticket}")
    if not cfg.ticket:
        init = initial_weights(exp)
        masks = dense_masks(cfg)
    else:
        with atomic_path(exp.run.init) as tmp:
            torch.save(init, tmp)
    extra = {"ticket": str(cfg.ticket)} if cfg.ticket else {}
    stage = exp.run.level(0)
    if resume is not True and resume:  # a checkpoint path
        with ddp.main_first():
            started = continue_from(exp, stage, resume)
        if started is not None:
            extra["resumed_from"] = started
    try:
        run_stage(exp, stage, init, masks, resume=bool(resume), progress=progress, extra_info=extra or None)
    except TrainingDivergedError as e:
        raise _diverged_hint(exp, stage, e, "train") from None
    from ..report import write_report

    if ddp.is_main():
        log(f"[degan] report: {write_report(exp.run.root)}")
    ddp.barrier()
    return exp.run
