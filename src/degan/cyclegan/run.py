"""CycleGAN ticket runs on the shared lottery machinery: the run folder (:mod:`degan.lottery.layout`), mask files and
the level loop (:mod:`degan.lottery.masks`), environment and device (:mod:`degan.lottery.experiment`), the report
(:mod:`degan.report`); this module wires the CycleGAN pieces into them."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file as save_safetensors
from torch import nn

from .._version import __version__
from ..config import parse_rewind, to_dict
from ..data import dataset_id
from ..errors import CheckpointError, DataError, DeganError, TrainingDivergedError
from ..fileio import append_jsonl, atomic_path, read_json, write_json, write_text
from ..lottery.experiment import (RewindPoint, environment, final_state, load_rewind_point, resolve_device,
                                  rewind_path)
from ..lottery.layout import RunLayout, StageLayout, data_label, run_folder_name, slug
from ..lottery.masks import run_levels, save_masks
from ..pruning import Mask, density, get_mask, layer_density, set_mask
from ..report import write_report
from ..train.callbacks import ProgressBar, StatsLogger
from ..train.checkpoint import latest_checkpoint, load_checkpoint
from .config import CycleGANConfig, config_hash, dump_yaml, parse_classes, parse_metric_kinds, resolve_config
from .data import Domain, load_domain
from .evaluate import evaluate_translation, load_extractor
from .grid import CycleSnapshot
from .networks import NETS, NETWORK_GROUPS, build_networks, load_translators, next_masks, pruned_networks
from .trainer import CycleTrainer, make_state

Log = Callable[[str], None]


def _print(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_folder(cfg: CycleGANConfig, outdir: str | Path) -> RunLayout:
    """``<outdir>/cyclegan-<A>-to-<B>-<hash>``; the domain labels come from the sources and classes.

    Raises:
        DataError: a source that is neither an existing path nor a builtin name.
    """
    def label(source: str | None, classes: str | None) -> str:
        if source is None:
            raise DataError("CycleGAN needs two domains: give --data-a and --data-b (data.source_a / data.source_b)")
        name = data_label(dataset_id(source))[:12].strip("-")
        return name + (f"-c{'.'.join(map(str, parse_classes(classes)))}" if parse_classes(classes) else "")

    d = cfg.data
    pair = f"{label(d.source_a, d.classes_a)}-to-{label(d.source_b, d.classes_b)}"
    name = run_folder_name("cyclegan", f"w{cfg.model.width:g}", "x", config_hash(cfg))
    name = name.replace("-x-", f"-{slug(pair, 60)}-")
    return RunLayout(Path(outdir) / name)


@dataclass
class CycleExperiment:
    """A run folder with its config, both domains' training images and the device (the CycleGAN counterpart of
    :class:`degan.lottery.experiment.Experiment`; ``extractor`` is the Inception network, loaded once when needed)."""

    cfg: CycleGANConfig
    run: RunLayout
    domains: dict[str, Domain]
    device: torch.device
    log: Log = _print
    extractor: nn.Module | None = None


def prepare(cfg: CycleGANConfig, outdir: str | Path, log: Log = _print) -> CycleExperiment:
    """Load both domains, choose the run folder, write config/env/data/subset files (subset reused on re-runs).

    Raises:
        DataError: a domain cannot be loaded, has no image of the asked classes, or the subset is impossible.
        DeganError: the saved subset does not fit the data any more.
    """
    device = resolve_device(cfg.train.device)
    build_networks(cfg)  # fail on model options before writing anything
    run = run_folder(cfg, outdir)
    saved = read_json(run.subset) if run.subset.is_file() else {}
    d = cfg.data
    domains = {"A": load_domain(d.source_a, d.classes_a, d, d.subset_seed, saved.get("A")),
               "B": load_domain(d.source_b, d.classes_b, d, d.subset_seed + 1, saved.get("B"))}
    if not saved:
        write_json(run.subset, {k: {"spec": d.subset, "seed": d.subset_seed + (k == "B"),
                                    "num_images": dom.info["num_images"], "classes": dom.info["classes"],
                                    "num_selected": len(dom.indices), "indices": dom.indices.tolist()}
                                for k, dom in domains.items()})
    write_text(run.config, dump_yaml(cfg))
    write_json(run.env, environment())
    write_json(run.data, {k: dom.info for k, dom in domains.items()})
    log(f"[degan] run folder {run.root}")
    for k, dom in domains.items():
        cls = f" classes {dom.info['classes']}" if dom.info["classes"] else ""
        log(f"[degan] domain {k}: {dom.info['source']}{cls}: {len(dom.indices)} images at {d.resolution}px")
    return CycleExperiment(cfg=cfg, run=run, domains=domains, device=device, log=log)


def initial_weights(exp: CycleExperiment) -> dict[str, dict]:
    """theta_0 of the four networks: ``init.pt`` (written once, atomically) or made from the seed."""
    if exp.run.init.is_file():
        return torch.load(exp.run.init, map_location="cpu", weights_only=True)["nets"]
    nets = build_networks(exp.cfg)
    init = {"nets": {n: m.state_dict() for n, m in nets.items()}, "model": to_dict(exp.cfg.model),
            "resolution": exp.cfg.data.resolution, "channels": exp.cfg.data.channels}
    with atomic_path(exp.run.init) as tmp:
        torch.save(init, tmp)
    return init["nets"]


def eval_domains(exp: CycleExperiment) -> dict[str, Domain]:
    """The images evaluation translates: the training domains, or the test splits for ``eval.reference=test``."""
    if exp.cfg.eval.reference == "train":
        return exp.domains
    d = exp.cfg.data
    return {"A": load_domain(d.source_a, d.classes_a, d, 0, split="test"),
            "B": load_domain(d.source_b, d.classes_b, d, 0, split="test")}


def evaluate_level(exp: CycleExperiment, stage: StageLayout, nets: dict[str, nn.Module], kimg: float, *,
                   progress: bool = False) -> list[dict]:
    """FID / KID of a level's generators both ways (``exp.cfg.eval``; :func:`evaluate_translation`), each record
    appended to the level's ``metrics.jsonl`` with ``level``, ``kimg`` and ``timestamp``, and logged.

    The one evaluation entry of CycleGAN levels: used after training (:func:`run_level`) and by ``degan eval`` on a
    finished level (:func:`evaluate_run`).

    Args:
        nets: at least ``G_AB`` and ``G_BA``.
        kimg: the training length the generators have, recorded with each result.

    Returns:
        The records (empty when ``eval.metrics`` is ``none``).

    Raises:
        DeganError: the Inception weights cannot be found.
        ValueError: fewer than 2 images in a domain.
    """
    if not parse_metric_kinds(exp.cfg.eval.metrics):
        return []
    if exp.extractor is None:
        exp.extractor = load_extractor(exp.cfg, exp.device)
    records = evaluate_translation(nets, eval_domains(exp), exp.cfg, exp.extractor,
                                   cache_dir=exp.run.root.parent / ".cache" / "reference-features",
                                   device=exp.device, progress=progress)
    for r in records:
        append_jsonl(stage.metrics, {"level": stage.level, "kimg": kimg, **r, "timestamp": time.time()})
    exp.log(f"[degan] {stage.root.name}: " + ", ".join(
        f"{r['metric']} {r['value']:.4g}" + (f" ± {r['std']:.2g}" if r["std"] is not None else "")
        for r in records))
    return records


def run_level(exp: CycleExperiment, stage: StageLayout, init: dict[str, dict], masks: dict[str, Mask], *,
              resume: bool = False, progress: bool = True) -> dict:
    """Train one level from ``init`` under ``masks``, write grids / masks / densities / metrics and ``done.json``.

    A finished level (``done.json``) is skipped and its summary returned.

    Raises:
        DeganError: an unfinished level exists and ``resume`` is False; or interrupted.
        TrainingDivergedError: NaN / inf loss (the last good checkpoint is named).
    """
    cfg = exp.cfg
    if stage.is_done():
        exp.log(f"[degan] {stage.root.name} already finished; skipping (delete {stage.done} to redo it)")
        return read_json(stage.done)
    stage.root.mkdir(parents=True, exist_ok=True)
    nets = build_networks(cfg)
    for n, m in nets.items():
        try:
            m.load_state_dict(init[n])
        except RuntimeError as e:
            raise CheckpointError(f"initial weights do not fit {n} ({str(e).splitlines()[0][:200]})") from None
        set_mask(m, masks[n])
        m.to(exp.device)
    state = make_state(nets, cfg)
    ckpt = latest_checkpoint(stage.checkpoints)
    if ckpt is not None:
        if not resume:
            raise DeganError(f"{stage.root} has an unfinished training (checkpoint {ckpt.name}); pass --resume latest "
                             "to continue it, or use another --outdir to start over")
        state.load_state_dict(load_checkpoint(ckpt)["state"])
        exp.log(f"[degan] resuming {stage.root.name} from {ckpt.name} at kimg {state.kimg:.2f}")
    current = {n: get_mask(m) for n, m in nets.items()}
    save_masks(stage.masks, current)
    dens = {n: density(current[n]) for n in NETS}
    write_json(stage.density, {"level": stage.level, **{f"density_{n}": dens[n] for n in NETS},
                               "layers": {n: layer_density(current[n]) for n in NETS}})
    exp.log(f"[degan] {stage.root.name}: density " + ", ".join(f"{n} {dens[n]:.4f}" for n in NETS))

    preview = torch.Generator().manual_seed(0)
    A, B = exp.domains["A"].images, exp.domains["B"].images
    grid_A = A[torch.randperm(A.shape[0], generator=preview)[:8]]
    grid_B = B[torch.randperm(B.shape[0], generator=preview)[:8]]
    meta = {"config": to_dict(cfg), "stage": stage.root.name, "degan_version": __version__}
    callbacks = [StatsLogger(stage.stats, cfg.train.log_kimg, extra=lambda: {f"density_{n}": dens[n] for n in NETS}),
                 CycleSnapshot(stage, cfg.train.snap_kimg, meta, grid_A, grid_B, keep=cfg.train.keep_checkpoints)]
    rewind_kind, rewind_value = parse_rewind(cfg.prune.rewind)
    if stage.level == 0 and rewind_kind != "init":  # late rewinding: level 0 saves the point levels k >= 1 start from
        callbacks.insert(1, RewindPoint(rewind_path(exp), rewind_kind, rewind_value, networks=lambda t: t.state.nets))
    if progress:
        callbacks.insert(0, ProgressBar(desc=f"cyclegan {stage.root.name}"))
    trainer = CycleTrainer(state, A, B, cfg, device=exp.device, callbacks=callbacks)
    try:
        trainer.run()
    except TrainingDivergedError as e:
        raise TrainingDivergedError(f"{e}. Last good checkpoint: {latest_checkpoint(stage.checkpoints)}") from None
    except KeyboardInterrupt:
        raise DeganError(f"interrupted; {stage.root.name} can continue with --resume latest") from None

    sd = {f"{n}.{k}": v.detach().cpu().contiguous() for n in NETWORK_GROUPS["G"]
          for k, v in nets[n].state_dict().items()}
    with atomic_path(stage.translators) as tmp:
        save_safetensors(sd, str(tmp))
    write_json(stage.generator_json, {"model": cfg.model.name, "kind": "cyclegan", "networks": ["G_AB", "G_BA"],
                                      "kwargs": {"resolution": cfg.data.resolution, "img_channels": cfg.data.channels,
                                                 "width": cfg.model.width, "n_blocks": cfg.model.n_blocks,
                                                 "n_layers": cfg.model.n_layers},
                                      "prunable": cfg.prune.prunable, "degan_version": __version__})
    summary = {"level": stage.level, **{f"density_{n}": dens[n] for n in NETS},
               "density_G": density({f"{n}.{k}": v for n in NETWORK_GROUPS["G"] for k, v in current[n].items()}),
               "density_D": density({f"{n}.{k}": v for n in NETWORK_GROUPS["D"] for k, v in current[n].items()}),
               "kimg": state.kimg, "step": state.step, "images_shown_per_domain": state.cur_nimg,
               "train_seconds": round(state.wall_seconds, 2), "pruned_networks": pruned_networks(cfg),
               "variant": variant_name(cfg)}
    if rewind_kind != "init":
        summary["rewind"] = cfg.prune.rewind
    if parse_metric_kinds(cfg.eval.metrics):
        t0 = time.perf_counter()
        records = evaluate_level(exp, stage, nets, state.kimg, progress=progress)
        summary["eval_seconds"] = round(time.perf_counter() - t0, 2)
        summary["metrics"] = {r["metric"]: {"value": r["value"], "std": r["std"]} for r in records}
    write_json(stage.done, summary)
    return summary


def variant_name(cfg: CycleGANConfig) -> str:
    """GAN-LTH's name of the run's variant: ``IMP_G``, ``IMP_D`` or ``IMP_GD``, with ``@<rewind>`` for late
    rewinding (as :func:`degan.config.variant_name`)."""
    name = "IMP_" + "".join(g for g in ("G", "D") if g in cfg.prune.networks)
    return name if cfg.prune.rewind == "init" else f"{name}@{cfg.prune.rewind}"


def level_start(exp: CycleExperiment, init: dict[str, dict]) -> dict[str, dict]:
    """The weights levels k >= 1 start from: theta_0 (``init``) or, for late rewinding, all four networks as level
    0 saved them at ``prune.rewind`` (:class:`degan.lottery.experiment.RewindPoint`).

    Raises:
        DeganError: late rewinding asked for but level 0 has no saved rewind point (it was trained without it).
    """
    if parse_rewind(exp.cfg.prune.rewind)[0] == "init":
        return init
    saved = load_rewind_point(exp)
    return {n: saved[n] for n in NETS}


def run_cyclegan(cfg: CycleGANConfig, outdir: str | Path, *, resume: bool = False, progress: bool = True,
                 log: Log = _print) -> RunLayout:
    """CycleGAN tickets: level 0 trains all four networks dense; level k = prune -> rewind (to theta_0, or to level
    0's weights at the late-rewinding point ``prune.rewind``) -> train.

    Re-running skips finished levels; a larger ``prune.levels`` extends the same run folder (levels are not hashed).

    Returns:
        The run folder layout (``report.md`` written by :func:`degan.report.write_report`, as ``degan report``).

    Raises:
        DataError, ConfigError, CheckpointError, DeganError, TrainingDivergedError: see :func:`prepare` and
        :func:`run_level`.
    """
    exp = prepare(cfg, outdir, log)
    init = initial_weights(exp)
    masks = {n: {k: torch.ones_like(v, dtype=torch.bool) for k, v in get_mask(m).items()}
             for n, m in build_networks(cfg).items()}

    def level_masks(k: int, prev: dict[str, Mask]) -> dict[str, Mask]:
        trained = final_state(exp.run.level(k - 1))["nets"]
        dense = final_state(exp.run.level(0))["nets"] if cfg.prune.method == "omp" else None
        return next_masks(cfg, trained, prev, k, dense)

    def train(stage: StageLayout, m: dict[str, Mask]) -> dict:
        return run_level(exp, stage, init if stage.level == 0 else level_start(exp, init), m, resume=resume,
                         progress=progress)

    run_levels(exp.run, cfg.prune.levels, masks, level_masks, train)
    log(f"[degan] report: {write_report(exp.run.root)}")
    return exp.run


def experiment_for(run_root: str | Path, log: Log = _print, **eval_overrides) -> CycleExperiment:
    """Re-open a CycleGAN run folder for evaluation: its ``config.yaml`` (``eval`` settings overridden by
    ``eval_overrides``, e.g. ``metrics="fid"``, ``num_images=500``) and both domains' images by ``subset.json``.

    Raises:
        ConfigError: an unreadable config or a bad override.
        DataError, DeganError: a domain cannot be loaded or no longer fits ``subset.json``.
    """
    run = RunLayout(Path(run_root))
    cfg = resolve_config(run.config, overrides={"eval": eval_overrides} if eval_overrides else None)
    saved = read_json(run.subset)
    d = cfg.data
    domains = {"A": load_domain(d.source_a, d.classes_a, d, d.subset_seed, saved["A"]),
               "B": load_domain(d.source_b, d.classes_b, d, d.subset_seed + 1, saved["B"])}
    return CycleExperiment(cfg=cfg, run=run, domains=domains, device=resolve_device(cfg.train.device), log=log)


def evaluate_run(exp: CycleExperiment, stages: list[StageLayout], *, progress: bool = False) -> list[dict]:
    """``degan eval`` on a CycleGAN run: :func:`evaluate_level` on the final translators of each finished stage.

    Returns:
        The records of all stages, each with ``stage`` (folder name) added.

    Raises:
        CheckpointError: a stage without ``translators.safetensors``.
        DeganError, ValueError: see :func:`evaluate_level`.
    """
    out = []
    for stage in stages:
        nets = load_translators(stage.root, exp.device)
        kimg = read_json(stage.done).get("kimg") if stage.is_done() else None
        out += [{"stage": stage.root.name, **r} for r in evaluate_level(exp, stage, nets, kimg, progress=progress)]
    return out
