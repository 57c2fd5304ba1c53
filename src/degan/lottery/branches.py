"""Branches: experiments trained from a finished level, written beside it (``level_<k>_<branch>``), as in open_lth.

Each branch answers one control question about the ticket of level k (SPEC §3; GAN-LTH §4-5, Chen et al.,
ICLR 2021, arXiv:2106.00134; Frankle & Carbin, ICLR 2019):

- ``random_ticket``: the same mask with a fresh random initialisation (is the initialisation part of the ticket?).
- ``random_mask``: a random mask with exactly the same number of kept weights in every layer, from the same start
  weights as the level (is the mask's structure part of the ticket?).
- ``finetune``: standard pruning: the mask of level k applied to the trained weights of level k-1 (the weights the
  mask was drawn from), trained on without rewinding.
- ``transfer``: the mask of level k trained on another dataset, from theta_0 (``init="theta0"``), a fresh random
  init (``"fresh"``) or the trained weights of level k (``"trained"``); GAN-LTH §5.
- ``channel``: a channel-pruned ticket (network slimming), see :mod:`degan.lottery.channel`.

Every branch trains with the run's config (same schedule, augmentation, objective, evaluation) and writes the same
files as a level, plus ``branch``, ``source_level`` and the branch options in ``done.json``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..config import replace, variant_name
from ..data import dataset_id, load_dataset, select_subset
from ..errors import DataError, DeganError
from ..fileio import read_json, write_json
from ..pruning import Mask
from .layout import StageLayout
from .experiment import (
    Experiment,
    build_networks,
    final_state,
    initial_weights,
    level_start,
    load_masks,
)
from .stage import run_stage

BRANCHES = ("random_ticket", "random_mask", "finetune", "transfer", "channel")
TRANSFER_INITS = ("theta0", "fresh", "trained")


def _level_masks(exp: Experiment, k: int) -> dict[str, Mask]:
    stage = exp.run.level(k)
    if not stage.is_done():
        raise DeganError(f"{stage.root} is not a finished level; train it first (degan ticket ... --levels {k})")
    return load_masks(stage.masks)


def random_layerwise_mask(mask: Mask, seed: int) -> Mask:
    """A random mask with exactly as many kept weights in every layer as ``mask`` (seeded).

    Args:
        mask: bool tensors keyed by weight name.
        seed: seed of the ``torch.Generator`` that draws the positions.

    Returns:
        A new mask, bool, same keys and shapes, same per-layer kept counts.
    """
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, m in mask.items():
        kept = int(m.sum())
        flat = torch.zeros(m.numel(), dtype=torch.bool)
        flat[torch.randperm(m.numel(), generator=gen)[:kept]] = True
        out[name] = flat.view(m.shape)
    return out


def _fresh_weights(exp: Experiment, seed: int) -> dict:
    G, D = build_networks(exp.cfg, seed=seed)
    return {"G": G.state_dict(), "D": D.state_dict()}


def transfer_experiment(exp: Experiment, data: str, stage: StageLayout, adapt: bool = False) -> Experiment:
    """The experiment of a transfer branch: the same config on another dataset, its subset saved in the branch.

    The subset spec (fraction or count, seed, mode, balance) is the run's; the indices go to
    ``<branch>/subset.json`` and are reused on re-runs.

    Raises:
        DataError: the dataset cannot be loaded, or its images have another resolution or channel count than the
            ticket's and ``adapt`` is False (then they would be resized / converted silently).
    """
    cfg = exp.cfg
    res, ch = cfg.data.resolution, cfg.data.channels
    try:
        ds = load_dataset(data, resolution=res, channels=ch, resize=cfg.data.resize if adapt else "none",
                          background=cfg.data.background)
    except DataError as e:
        if not adapt and "resize" in str(e):
            raise DataError(f"transfer dataset {data!r} has images of another resolution than the ticket's {res} px "
                            f"({e}); the mask only fits {res} px networks. Pass --adapt to resize them with "
                            f"data.resize={cfg.data.resize}, or use a {res} px dataset") from None
        raise
    modes = set(ds.info.get("original_modes", {}))
    gray = {"L", "I;16", "I", "1", "gray", "F"}
    if not adapt and modes:
        if ch == 3 and modes <= gray:
            raise DataError(f"transfer dataset {data!r} is grayscale but the ticket was drawn for 3-channel images; "
                            "pass --adapt to replicate the gray channel, or use an RGB dataset")
        if ch == 1 and not modes <= gray:
            raise DataError(f"transfer dataset {data!r} is colour ({', '.join(sorted(modes))}) but the ticket was "
                            "drawn for 1-channel images; pass --adapt to convert to luma, or use a grayscale dataset")
    subset_path = stage.root / "subset.json"
    n = ds.images.shape[0]
    if subset_path.is_file():
        saved = read_json(subset_path)
        if saved.get("num_images") != n:
            raise DeganError(f"{subset_path} was drawn from {saved.get('num_images')} images but {data!r} now has {n}")
        indices = np.asarray(saved["indices"], dtype=np.int64)
    else:
        indices = select_subset(n, cfg.data.subset, seed=cfg.data.subset_seed, mode=cfg.data.subset_mode,
                                labels=ds.labels, balance=cfg.data.subset_balance)
        stage.root.mkdir(parents=True, exist_ok=True)
        write_json(subset_path, {"source": data, "spec": cfg.data.subset, "mode": cfg.data.subset_mode,
                                 "seed": cfg.data.subset_seed, "num_images": n, "num_selected": int(len(indices)),
                                 "indices": indices.tolist()})
    cfg2 = replace(cfg, data=replace(cfg.data, source=str(data)))
    labels = None
    if cfg2.model.conditional:  # a conditional ticket: the new data must have labels within its classes
        from .experiment import resolve_classes

        resolve_classes(cfg2, ds.labels, str(data))
        labels = torch.from_numpy(np.asarray(ds.labels)[indices].astype(np.int64))
    images = torch.from_numpy(np.ascontiguousarray(ds.images[indices]))
    return Experiment(cfg=cfg2, run=exp.run, images=images, indices=indices,
                      data_info=dict(ds.info, num_selected=int(len(indices))), device=exp.device, log=exp.log,
                      labels=labels)


def branch_name(kind: str, data: str | None = None) -> str:
    """Folder suffix of a branch: the kind, or ``transfer-<data label>``."""
    if kind == "transfer":
        from .layout import data_label

        if not data:
            raise DeganError("the transfer branch needs --data PATH (the dataset to train the mask on)")
        return f"transfer-{data_label(dataset_id(data))}"
    return kind


def run_branch(exp: Experiment, k: int, kind: str, *, seed: int | None = None, data: str | None = None,
               init: str = "theta0", adapt: bool = False, resume: bool = False, progress: bool = True,
               **options) -> dict:
    """Train branch ``kind`` of level ``k`` into ``level_<k>_<name>`` (skipped when finished).

    Args:
        exp: the run's experiment (:func:`~degan.lottery.runner.prepare` or :func:`experiment_for`).
        k: the source level; must be finished (``finetune`` needs k >= 1).
        kind: one of :data:`BRANCHES`.
        seed: seed of the fresh init (``random_ticket``, ``transfer`` with ``init="fresh"``) or of the random mask;
            default ``train.seed + 1`` / ``prune.seed + 1``.
        data: the transfer dataset (path or builtin name).
        init: transfer start weights: ``theta0`` | ``fresh`` | ``trained``.
        adapt: transfer only: allow resizing / channel conversion of a dataset that differs from the ticket's.
        options: passed to the channel branch (see :func:`degan.lottery.channel.run_channel_branch`).

    Returns:
        The branch's ``done.json`` summary.

    Raises:
        DeganError: unknown kind, unfinished source level, finetune of level 0, unknown transfer init.
        DataError: an unusable transfer dataset.
    """
    if kind not in BRANCHES:
        raise DeganError(f"unknown branch {kind!r}; valid branches are: {', '.join(BRANCHES)}")
    if kind == "channel":
        from .channel import run_channel_branch

        return run_channel_branch(exp, exp.run.level(k), resume=resume, progress=progress, **options)
    if options:
        raise DeganError(f"options {sorted(options)} only apply to the channel branch")
    masks = _level_masks(exp, k)
    stage = exp.run.branch(k, branch_name(kind, data))
    base_init = initial_weights(exp)
    info: dict = {"variant": variant_name(exp.cfg.prune), "branch": stage.branch, "source_level": k,
                  "density_source": read_json(exp.run.level(k).done).get("density_G")}
    run_exp = exp
    if kind == "random_ticket":
        seed = exp.cfg.train.seed + 1 if seed is None else seed
        start = _fresh_weights(exp, seed)
        info["init_seed"] = seed
    elif kind == "random_mask":
        seed = exp.cfg.prune.seed + 1 if seed is None else seed
        nets = {n.strip() for n in exp.cfg.prune.networks.split(",")}
        masks = {name: (random_layerwise_mask(m, seed * 2 + (name == "D")) if name in nets else m)
                 for name, m in masks.items()}
        start = level_start(exp, base_init, k) if k > 0 else {"G": base_init["G"], "D": base_init["D"]}
        info["mask_seed"] = seed
    elif kind == "finetune":
        if k == 0:
            raise DeganError("finetune needs a pruned level (k >= 1): it trains level k's mask on the weights of "
                             "level k-1")
        prev = final_state(exp.run.level(k - 1))
        start = {"G": prev["G"], "D": prev["D"]}
        info["weights_from"] = exp.run.level(k - 1).root.name
    else:  # transfer
        if init not in TRANSFER_INITS:
            raise DeganError(f"transfer init {init!r} is not valid; choose one of: {', '.join(TRANSFER_INITS)}")
        if stage.is_done():
            return read_json(stage.done)
        run_exp = transfer_experiment(exp, data, stage, adapt=adapt)
        if init == "theta0":
            start = {"G": base_init["G"], "D": base_init["D"]}
        elif init == "fresh":
            seed = exp.cfg.train.seed + 1 if seed is None else seed
            start = _fresh_weights(exp, seed)
            info["init_seed"] = seed
        else:
            trained = final_state(exp.run.level(k))
            start = {"G": trained["G"], "D": trained["D"]}
        info.update(transfer_data=str(data), transfer_init=init, source_data=exp.cfg.data.source)
    return run_stage(run_exp, stage, start, masks, resume=resume, progress=progress, extra_info=info, role="branch")


def branch_of(path: str | Path) -> tuple[Experiment, int]:
    """Open the run of a level folder ``<run>/level_<k>`` for branching: ``(experiment, k)``.

    Raises:
        DeganError: not a level folder of a degan run.
    """
    from .layout import STAGE_PATTERN
    from .experiment import experiment_for

    p = Path(path)
    m = STAGE_PATTERN.match(p.name)
    if not m or m.group(2) or not (p.parent / "config.yaml").is_file():
        raise DeganError(f"{str(p)!r} is not a level folder (<run>/level_<k>) of a degan run")
    return experiment_for(p.parent), int(m.group(1))
