"""Runs: data -> (levels: prune -> rewind -> train -> evaluate) -> report. Idempotent: finished levels are skipped.

IMP for GANs (Algorithm 1 of Chen et al., *GANs Can Play Lottery Tickets Too*, ICLR 2021, arXiv:2106.00134, and of
Chen et al., *Data-Efficient GAN Training Beyond (Just) Augmentations*, NeurIPS 2021, arXiv:2103.00397): level 0
trains the dense G and D from theta_0 / phi_0; level k prunes ``rate`` of the remaining weights of each chosen
network by global magnitude (G and D ranked separately), rewinds the kept weights of G and D to theta_0 / phi_0
and trains again on the same limited data (the subset indices are drawn once per run and reused by every level).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from ..config import RunConfig, load_file, to_dict, variant_name
from ..errors import CheckpointError, DeganError
from ..fileio import atomic_path, read_json
from ..pruning import PRUNERS, Mask, ones_like_mask
from ..train import distributed as ddp
from .experiment import (  # noqa: F401  (re-exported: the public API of degan.lottery.runner)
    Builder, Experiment, RewindPoint, _print, build_dynamic_networks, build_networks, check_class_count,
    dense_masks, dense_teacher, environment, evaluate_generator, experiment_for, final_state, get_extractor,
    grid_inputs, initial_weights, level_start, load_masks, model_kwargs, networks_for, parse_metrics, prepare,
    repeat_conditions, resolve_classes, resolve_device, rewind_path, sample_fn_for, save_G_ema, save_masks)
from ..export import load_generator  # noqa: F401  (re-exported)
from .stage import run_stage
from .layout import RunLayout

Log = Callable[[str], None]




def next_masks(exp: Experiment, k: int, prev_masks: dict[str, Mask]) -> dict[str, Mask]:
    """Masks of level ``k >= 1`` by the configured method; networks not in ``prune.networks`` keep their mask.

    ``imp_global`` / ``imp_layerwise`` / ``random`` prune ``rate`` of the remaining weights of level k-1's trained
    networks (G or G_ema by ``prune.mask_source``; D); ``omp`` prunes the trained dense level 0 in one shot to
    density ``(1 - rate) ** k``. Every method gives level k the density ``(1 - rate) ** k`` of each pruned network
    (up to ties).
    """
    cfg = exp.cfg
    method = cfg.prune.method
    source = exp.run.level(0 if method == "omp" else k - 1)
    state = final_state(source)
    G, D = build_networks(cfg)
    G.load_state_dict(state["G_ema" if cfg.prune.mask_source == "G_ema" else "G"])
    D.load_state_dict(state["D"])
    pruner = PRUNERS.get(method)
    nets = {n.strip() for n in cfg.prune.networks.split(",")}
    out = {}
    for name, net in (("G", G), ("D", D)):
        if name not in nets:
            out[name] = prev_masks[name]
        elif method == "omp":
            out[name] = pruner(net, ones_like_mask(net), target_density=(1.0 - cfg.prune.rate) ** k)
        elif method == "random":
            out[name] = pruner(net, prev_masks[name], cfg.prune.rate, seed=cfg.prune.seed * 1000 + k)
        else:
            out[name] = pruner(net, prev_masks[name], cfg.prune.rate)
    return out


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
    if dense_from is not None:
        with ddp.main_first():
            share_dense_level(exp, dense_from)
    init = initial_weights(exp)
    masks = dense_masks(cfg)
    variant = variant_name(cfg.prune)
    for k in range(cfg.prune.levels + 1):
        stage = exp.run.level(k)
        if k == 0:  # late rewinding saves its point during the dense level (a technique)
            run_stage(exp, stage, init, masks, resume=resume, progress=progress, role="level",
                      extra_info={"variant": variant, "branch": None})
            continue
        masks = load_masks(stage.masks) if stage.masks.is_file() else next_masks(exp, k, masks)
        run_stage(exp, stage, level_start(exp, init), masks, resume=resume, progress=progress, role="level",
                  extra_info={"variant": variant, "branch": None, "rewind": cfg.prune.rewind,
                              "d_reset": cfg.prune.d_reset})
    if branches:
        from .branches import run_branch

        for k in range(1, cfg.prune.levels + 1):
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
        CheckpointError: not a level folder, or made for another model/resolution/channels/prunable set.
    """
    from .layout import find_stage

    try:
        run, stages = find_stage(ticket)
    except FileNotFoundError as e:
        raise CheckpointError(str(e)) from None
    if len(stages) != 1:
        raise CheckpointError(f"--ticket expects one level folder (runs/<run>/level_<k>), got the run {ticket}")
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
    return torch.load(run.init, map_location="cpu", weights_only=True), load_masks(stages[0].masks)


def run_train(cfg: RunConfig, outdir: str | Path, *, resume: bool = False, progress: bool = True,
              log: Log = _print, force: bool = False) -> RunLayout:
    """Train one GAN (dense from a fresh init, or a ticket's mask from its theta_0), evaluate, report."""
    if cfg.ticket:
        init, masks = ticket_source(cfg.ticket, cfg)
    log = log if ddp.is_main() else (lambda msg: None)  # DDP: rank 0 speaks
    exp = prepare(cfg, outdir, "train", log)
    cfg = exp.cfg  # with model.num_classes resolved from the data (conditional runs)
    exp.force = force
    if cfg.ticket:
        check_class_count(init.get("model", {}), cfg, f"the ticket {cfg.ticket}")
    if not cfg.ticket:
        init = initial_weights(exp)
        masks = dense_masks(cfg)
    else:
        with atomic_path(exp.run.init) as tmp:
            torch.save(init, tmp)
    run_stage(exp, exp.run.level(0), init, masks, resume=resume, progress=progress,
              extra_info={"ticket": str(cfg.ticket)} if cfg.ticket else None)
    from ..report import write_report

    if ddp.is_main():
        log(f"[degan] report: {write_report(exp.run.root)}")
    ddp.barrier()
    return exp.run
