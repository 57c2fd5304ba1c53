"""Discriminator overfitting monitor: D's accuracy on training reals, held-out reals and fakes over training.

With little data, D memorises the training images: its output on the training reals keeps rising while its output
on held-out reals of the same distribution falls (Figure 2 of Chen et al., *Data-Efficient GAN Training Beyond
(Just) Augmentations: A Lottery Ticket Perspective*, NeurIPS 2021, arXiv:2103.00397; also Karras et al., *Training
Generative Adversarial Networks with Limited Data*, NeurIPS 2020, arXiv:2006.06676, Fig. 1). Every
``every_kimg`` :class:`OverfitMonitor` measures, on fixed image samples and **without augmentation**:

- ``acc_train`` / ``acc_heldout``: fraction of training / held-out reals with ``D(x) > 0`` (judged real);
- ``acc_fake``: fraction of G_ema samples with ``D(G(z)) < 0`` (judged fake);
- ``logit_train`` / ``logit_heldout`` / ``logit_fake``: the mean raw D outputs (the paper's figure plots these);
- ``r_t = E[sign(D(x_train))]``, ADA's overfitting heuristic on the clean training reals;

and appends one JSON line per measurement to ``monitor.jsonl`` in the stage folder. When D memorises (training
accuracy high while held-out accuracy falls well below it) a plain-words warning is printed and stored in the record.

D is always called through :func:`d_logits` (the one place to add class labels for a conditional D). D and G_ema are
run in eval mode under ``torch.no_grad`` and put back in their previous mode, so the monitor draws from no training
RNG stream and updates no spectral-norm or batch-norm state: training is bit-identical with or without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn

from ..fileio import append_jsonl, atomic_path, read_jsonl
from .loop import Callback, Trainer, images_to_float

__all__ = ["d_logits", "d_statistics", "measure", "memorisation_warning", "OverfitMonitor", "plot_monitor",
           "heldout_reals", "overfitting_monitor"]

GAP_WARN = 0.3
"""Default gap ``acc_train - acc_heldout`` at or above which the monitor warns."""
MIN_TRAIN_ACC = 0.8
"""Default training accuracy at or above which a gap counts as memorisation."""


# ---------------------------------------------------------------------------------------------------------------------
# calling D


def d_logits(D: nn.Module, x: Tensor, labels: Tensor | None = None) -> Tensor:
    """Raw logits of D, float ``[N]``: the one place the monitor calls D.

    Args:
        D: the discriminator, ``D(x)`` or ``D(x, c)`` -> logits ``[N]`` or ``[N, 1]``.
        x: float ``[N, C, H, W]`` in [-1, 1].
        labels: long ``[N]`` class labels for a conditional D; None for an unconditional one.
    """
    out = D(x) if labels is None else D(x, labels)
    return out.reshape(x.shape[0], -1)[:, 0].float()


def _check_images(images: Tensor, name: str) -> None:
    if not torch.is_tensor(images) or images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"{name} must be uint8 [N, C, H, W] in [0, 255], got "
                         f"{getattr(images, 'dtype', type(images).__name__)} {tuple(getattr(images, 'shape', ()))}")


@torch.no_grad()
def _logits_of(D: nn.Module, images: Tensor, labels: Tensor | None, device: torch.device, batch_size: int) -> Tensor:
    from .grow import growable

    level = D.growth if growable(D) else None  # ProGAN: reals as D sees them in training (pooled, faded)
    out = []
    for i in range(0, images.shape[0], batch_size):
        x = images_to_float(images[i:i + batch_size].to(device))
        if level is not None and (level[0] != x.shape[-1] or level[1] < 1.0):
            from ..models.progan import progressive_view

            x = progressive_view(x, *level)
        c = None if labels is None else labels[i:i + batch_size].to(device)
        out.append(d_logits(D, x, c).cpu())
    return torch.cat(out) if out else torch.zeros(0)


def d_statistics(logits: Tensor, real: bool) -> dict[str, float]:
    """Accuracy and mean output of D on one image set from its logits.

    Args:
        logits: float ``[N]``, N >= 1.
        real: True if the images are reals (correct = logit > 0), False for fakes (correct = logit < 0). A logit of
            exactly 0 counts as wrong.

    Returns:
        ``{"acc": float in [0, 1], "logit": mean logit, "r_t": mean sign in [-1, 1]}``.

    Raises:
        ValueError: no logits.
    """
    if logits.numel() == 0:
        raise ValueError("d_statistics needs at least one logit")
    correct = logits > 0 if real else logits < 0
    return {"acc": float(correct.float().mean()), "logit": float(logits.mean()),
            "r_t": float(torch.sign(logits).mean())}


def memorisation_warning(acc_train: float, acc_heldout: float | None, gap_warn: float = GAP_WARN,
                         min_train_acc: float = MIN_TRAIN_ACC) -> str | None:
    """A plain-words warning when D memorises the training reals, else None.

    D memorises when it calls at least ``min_train_acc`` of the training reals real but the held-out reals' accuracy
    is at least ``gap_warn`` lower. Without held-out reals (``acc_heldout`` None) there is nothing to compare: None.
    """
    if acc_heldout is None or acc_train < min_train_acc or acc_train - acc_heldout < gap_warn:
        return None
    return (f"D is memorising the training images: it calls {100 * acc_train:.0f} % of the training reals real but "
            f"only {100 * acc_heldout:.0f} % of held-out reals of the same dataset. Its feedback to G no longer "
            "generalises; expect FID to rise from here. Try stronger augmentation (DiffAugment / ADA), LeCam, "
            "a sparser D (a ticket), or stop earlier.")


def measure(D: nn.Module, G: nn.Module | None, train: Tensor, heldout: Tensor | None = None,
            z: Tensor | None = None, *, train_labels: Tensor | None = None, heldout_labels: Tensor | None = None,
            fake_labels: Tensor | None = None, device: str | torch.device = "cpu", batch_size: int = 256) -> dict:
    """One measurement of D on training reals, held-out reals and fakes (no augmentation, no gradients).

    D (and G) are evaluated in eval mode and returned to their previous mode.

    Args:
        D: the discriminator (called through :func:`d_logits`).
        G: the generator of the fakes (normally G_ema), ``G(z)`` or ``G(z, c)`` -> float ``[N, C, H, W]`` in
            [-1, 1]; None = no fakes.
        train: training reals, uint8 ``[N, C, H, W]`` in [0, 255], N >= 1. A growing D (ProGAN) scores every real
            as training shows it at D's current level: pooled to its resolution and blended during a fade-in
            (:func:`degan.models.progan.progressive_view`).
        heldout: held-out reals of the same dataset, uint8 ``[M, C, H, W]``, or None.
        z: latents of the fakes, float ``[K, z_dim]`` (needed with ``G``).
        train_labels, heldout_labels, fake_labels: long labels for a conditional D / G, or None.
        device: where D and G live.
        batch_size: images per forward pass.

    Returns:
        ``{"acc_train", "logit_train", "r_t", "acc_heldout", "logit_heldout", "acc_fake", "logit_fake", "gap",
        "num_train", "num_heldout", "num_fake"}``; held-out / fake entries (and ``gap = acc_train - acc_heldout``)
        are None when that set is absent.

    Raises:
        ValueError: images that are not uint8 NCHW, an empty training set, or ``G`` without ``z``.
    """
    _check_images(train, "train")
    if train.shape[0] == 0:
        raise ValueError("train needs at least one image")
    if heldout is not None:
        _check_images(heldout, "heldout")
    if G is not None and z is None:
        raise ValueError("measure(G=...) needs the latents z of the fakes")
    device = torch.device(device)
    modes = [(m, m.training) for m in (D, G) if m is not None]
    try:
        for m, _ in modes:
            m.eval()
        tr = d_statistics(_logits_of(D, train, train_labels, device, batch_size), real=True)
        rec: dict = {"acc_train": tr["acc"], "logit_train": tr["logit"], "r_t": tr["r_t"],
                     "acc_heldout": None, "logit_heldout": None, "acc_fake": None, "logit_fake": None, "gap": None,
                     "num_train": int(train.shape[0]), "num_heldout": 0, "num_fake": 0}
        if heldout is not None and heldout.shape[0] > 0:
            ho = d_statistics(_logits_of(D, heldout, heldout_labels, device, batch_size), real=True)
            rec.update(acc_heldout=ho["acc"], logit_heldout=ho["logit"], gap=tr["acc"] - ho["acc"],
                       num_heldout=int(heldout.shape[0]))
        if G is not None and z.shape[0] > 0:
            logits = []
            with torch.no_grad():
                for i in range(0, z.shape[0], batch_size):
                    c = None if fake_labels is None else fake_labels[i:i + batch_size].to(device)
                    zi = z[i:i + batch_size].to(device)
                    fake = G(zi) if c is None else G(zi, c)
                    logits.append(d_logits(D, fake, c).cpu())
            fk = d_statistics(torch.cat(logits), real=False)
            rec.update(acc_fake=fk["acc"], logit_fake=fk["logit"], num_fake=int(z.shape[0]))
        return rec
    finally:
        for m, was_training in modes:
            m.train(was_training)


# ---------------------------------------------------------------------------------------------------------------------
# the callback


class OverfitMonitor(Callback):
    """Every ``every_kimg`` (and at the start and end of training), :func:`measure` D and append a line to ``path``.

    Each line: ``kimg``, ``cur_nimg``, ``step`` and the keys of :func:`measure`, plus ``warning`` (str or None).
    The first memorisation warning of a stage is passed to ``log``; every record stores its own. At the end of
    training the plot :func:`plot_monitor` is written to ``plot_path`` (when given).

    Args:
        path: the JSONL file (``monitor.jsonl`` in the stage folder).
        every_kimg: period in thousands of real images shown to D (> 0).
        train_images: fixed sample of training reals, uint8 ``[N, C, H, W]``.
        heldout_images: fixed sample of held-out reals of the same dataset, uint8, or None.
        num_fakes: G_ema samples per measurement (latents fixed by ``seed``); 0 = none.
        seed: seed of the fakes' latents (and labels for a conditional G).
        train_labels, heldout_labels: long ``[N]`` labels for a conditional D, or None.
        gap_warn, min_train_acc: thresholds of :func:`memorisation_warning`.
        plot_path: PNG written at the end of training; None = no plot.
        log: where the warning is printed.
        batch_size: images per forward pass.

    Raises:
        ValueError: ``every_kimg <= 0``, ``num_fakes < 0`` or bad images.
    """

    main_rank_only = True  # DDP: measured and written by rank 0 (no_grad forwards start no collective)

    def __init__(self, path: str | Path, every_kimg: float, train_images: Tensor,
                 heldout_images: Tensor | None = None, *, num_fakes: int = 256, seed: int = 0,
                 train_labels: Tensor | None = None, heldout_labels: Tensor | None = None,
                 gap_warn: float = GAP_WARN, min_train_acc: float = MIN_TRAIN_ACC,
                 plot_path: str | Path | None = None, log: Callable[[str], None] = print,
                 batch_size: int = 256) -> None:
        if not every_kimg > 0:
            raise ValueError(f"every_kimg must be > 0, got {every_kimg!r}")
        if num_fakes < 0:
            raise ValueError(f"num_fakes must be >= 0, got {num_fakes!r}")
        _check_images(train_images, "train_images")
        if heldout_images is not None:
            _check_images(heldout_images, "heldout_images")
        self.path, self.plot_path = Path(path), None if plot_path is None else Path(plot_path)
        self.every_nimg = max(1, int(round(every_kimg * 1000)))
        self.train, self.heldout = train_images, heldout_images
        self.train_labels, self.heldout_labels = train_labels, heldout_labels
        self.num_fakes, self.seed = int(num_fakes), int(seed)
        self.gap_warn, self.min_train_acc = gap_warn, min_train_acc
        self.log, self.batch_size = log, batch_size
        self.warned = False
        self.last: dict | None = None
        self._last_nimg: int | None = None

    def _fakes(self, G: nn.Module) -> tuple[Tensor | None, Tensor | None]:
        if self.num_fakes == 0:
            return None, None
        gen = torch.Generator().manual_seed(self.seed)
        z = torch.randn(self.num_fakes, G.z_dim, generator=gen)
        k = int(getattr(G, "num_classes", 0) or 0)
        c = torch.randint(0, k, (self.num_fakes,), generator=gen) if k > 0 else None
        return z, c

    def record(self, trainer: Trainer) -> dict:
        """Measure now and append the record; returns it."""
        s = trainer.state
        z, c = self._fakes(s.G_ema)
        rec = measure(s.D, s.G_ema if z is not None else None, self.train, self.heldout, z,
                      train_labels=self.train_labels, heldout_labels=self.heldout_labels, fake_labels=c,
                      device=trainer.device, batch_size=self.batch_size)
        warning = memorisation_warning(rec["acc_train"], rec["acc_heldout"], self.gap_warn, self.min_train_acc)
        rec = {"kimg": round(s.kimg, 3), "cur_nimg": s.cur_nimg, "step": s.step, **rec, "warning": warning}
        append_jsonl(self.path, rec)
        if warning and not self.warned:
            self.log(f"[degan] warning at kimg {s.kimg:.1f}: {warning}")
            self.warned = True
        self.last, self._last_nimg = rec, s.cur_nimg
        return rec

    def on_train_start(self, trainer: Trainer) -> None:
        n = trainer.state.cur_nimg
        self._next = (n // self.every_nimg + 1) * self.every_nimg
        # resumed: the log (cut back to the checkpoint) already holds the record of this point if one was due, since
        # the checkpoint is written after the monitor's records (degan.train.technique.CALLBACK_ORDER)
        done = next((r for r in read_jsonl(self.path) if r.get("cur_nimg") == n), None)
        if done is not None:
            self.last, self._last_nimg = done, n
        elif n == 0:
            self.record(trainer)

    def on_step_end(self, trainer: Trainer, stats: dict[str, float]) -> None:
        if trainer.state.cur_nimg >= self._next:
            self.record(trainer)
            self._next = (trainer.state.cur_nimg // self.every_nimg + 1) * self.every_nimg

    def on_train_end(self, trainer: Trainer) -> None:
        if self._last_nimg != trainer.state.cur_nimg:
            self.record(trainer)
        if self.plot_path is not None:
            plot_monitor(self.path, self.plot_path)


# ---------------------------------------------------------------------------------------------------------------------
# the plot


def _series(records: list[dict], key: str) -> tuple[list[float], list[float]]:
    pts = [(r["kimg"], r[key]) for r in records if r.get(key) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def _dedupe(records: list[dict]) -> list[dict]:
    """The last record per ``cur_nimg`` (a resumed stage repeats the measurements after its last checkpoint)."""
    by = {}
    for r in records:
        if "kimg" in r and "acc_train" in r:
            by[r.get("cur_nimg", r["kimg"])] = r
    return sorted(by.values(), key=lambda r: r["kimg"])


def plot_monitor(jsonl_path: str | Path, out_png: str | Path, title: str | None = None) -> Path:
    """Plot a ``monitor.jsonl``: D's mean output (left) and accuracy (right) on training reals, held-out reals and
    fakes over kimg, as Figure 2 of Chen et al. 2021 (arXiv:2103.00397); r_t on the right panel. Kimg of a
    memorisation warning are shaded.

    Returns:
        ``out_png`` (written atomically).

    Raises:
        ValueError: the file has no measurement.
    """
    from matplotlib.figure import Figure

    records = _dedupe(read_jsonl(jsonl_path))
    if not records:
        raise ValueError(f"{jsonl_path} has no D-monitor measurement to plot")
    fig = Figure(figsize=(10, 3.8), dpi=120, layout="constrained")
    ax_l, ax_a = fig.subplots(1, 2)
    styles = [("train", "training reals", "C0", "-o"), ("heldout", "held-out reals", "C1", "-s"),
              ("fake", "fakes (G_ema)", "C3", "--^")]
    for key, label, color, fmt in styles:
        for ax, prefix in ((ax_l, "logit_"), (ax_a, "acc_")):
            x, y = _series(records, prefix + key)
            if x:
                ax.plot(x, y, fmt, color=color, markersize=3, label=label)
    x, y = _series(records, "r_t")
    ax_a.plot(x, y, ":", color="0.3", label="r_t = E[sign D(x_train)]")
    ax_l.axhline(0.0, color="0.6", linewidth=0.8)
    warn = [r["kimg"] for r in records if r.get("warning")]
    if warn:
        for ax in (ax_l, ax_a):
            ax.axvspan(min(warn), max(warn), color="red", alpha=0.08, label="memorisation warning")
    ax_l.set_title("mean D output (logit), no augmentation")
    ax_a.set_title("D accuracy (sign of the logit)")
    ax_a.set_ylim(-1.05, 1.05)
    for ax in (ax_l, ax_a):
        ax.set_xlabel("kimg")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    if records[-1].get("num_heldout", 0) == 0:
        fig.suptitle((title + ": " if title else "") + "no held-out reals (dataset has no test split and the "
                     "subset is the whole training set)", fontsize="small")
    elif title:
        fig.suptitle(title, fontsize="small")
    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png")
    return out_png


# ---------------------------------------------------------------------------------------------------------------------
# the runner's hook


_HELDOUT_CACHE: dict[tuple, tuple[Tensor | None, Tensor | None, str]] = {}


def heldout_reals(source: str, *, resolution: int, channels: int, resize: str, train_indices: np.ndarray,
                  num: int, seed: int = 0, with_labels: bool = False, background: str = "black") -> tuple:
    """A fixed sample of reals of the training distribution that the run does not train on.

    The dataset's test split when it has one; else the training-split images outside the limited-data subset;
    else none. Results are cached per process (levels of a run share them).

    Args:
        source, resolution, channels, resize, background: as :func:`degan.data.load_dataset`.
        train_indices: int ``[n]`` indices of the subset trained on (into the training split).
        num: sample size (>= 1).
        seed: seed of the sample.
        with_labels: also return the images' labels (for a conditional D).

    Returns:
        ``(images uint8 [min(num, available), C, R, R] or None, description)``, description one of ``"test split"``,
        ``"training split outside the subset"``, ``"none"``; with ``with_labels``
        ``(images, labels int64 [M] or None (unlabelled source), description)``.
    """
    key = (source, resolution, channels, resize, background, int(num), int(seed), len(train_indices),
           hash(np.asarray(train_indices, dtype=np.int64).tobytes()))
    if key not in _HELDOUT_CACHE:
        _HELDOUT_CACHE[key] = _draw_heldout(source, kw=dict(resolution=resolution, channels=channels, resize=resize,
                                                            background=background),
                                            train_indices=train_indices, num=num, seed=seed)
    images, labels, where = _HELDOUT_CACHE[key]
    return (images, labels, where) if with_labels else (images, where)


def _draw_heldout(source: str, kw: dict, train_indices: np.ndarray, num: int, seed: int
                  ) -> tuple[Tensor | None, Tensor | None, str]:
    from ..data import load_dataset
    from ..errors import DataError

    def take(ds, idx: np.ndarray) -> tuple[Tensor, Tensor | None]:
        labels = None if ds.labels is None else torch.from_numpy(np.asarray(ds.labels)[idx].astype(np.int64))
        return torch.from_numpy(np.ascontiguousarray(ds.images[idx])), labels

    gen = torch.Generator().manual_seed(seed)
    try:
        test = load_dataset(source, split="test", **kw)
        idx = torch.randperm(test.images.shape[0], generator=gen)[:num].numpy()
        return (*take(test, idx), "test split")
    except DataError:
        full = load_dataset(source, split="train", **kw)
        rest = np.setdiff1d(np.arange(full.images.shape[0]), np.asarray(train_indices, dtype=np.int64))
        if len(rest):
            pick = rest[torch.randperm(len(rest), generator=gen)[:num].numpy()]
            return (*take(full, np.sort(pick)), "training split outside the subset")
    return None, None, "none"


def overfitting_monitor(exp, stage, every_kimg: float, num: int = 256) -> OverfitMonitor:
    """The :class:`OverfitMonitor` of one stage of a run (used by :func:`degan.lottery.stage.run_stage`).

    Args:
        exp: the :class:`~degan.lottery.runner.Experiment` (config, training subset, device, log).
        stage: the :class:`~degan.lottery.layout.StageLayout` (``monitor.jsonl`` and ``monitor.png`` go there).
        every_kimg: measurement period in kimg.
        num: images per set (training reals, held-out reals, fakes).
    """
    cfg = exp.cfg
    gen = torch.Generator().manual_seed(cfg.eval.seed)
    idx = torch.randperm(exp.images.shape[0], generator=gen)[:num]
    train = exp.images[idx].cpu()
    heldout, heldout_labels, where = heldout_reals(
        cfg.data.source, resolution=cfg.data.resolution, channels=cfg.data.channels, resize=cfg.data.resize,
        train_indices=exp.indices, num=num, seed=cfg.eval.seed, with_labels=True, background=cfg.data.background)
    labels = getattr(exp, "labels", None)  # a conditional run: D scores reals with their labels
    train_labels = None if labels is None else labels[idx].cpu()
    if labels is None:
        heldout_labels = None
    elif heldout is not None and heldout_labels is None:
        heldout = None  # held-out reals without labels cannot be scored by a conditional D
        where = "none"
    if heldout is None:
        exp.log(f"[degan] D monitor: no held-out reals ({cfg.data.source} has no test split and the subset is all "
                "of it); logging accuracy on training reals, fakes and r_t only")
    else:
        exp.log(f"[degan] D monitor: every {every_kimg:g} kimg on {train.shape[0]} training reals, "
                f"{heldout.shape[0]} held-out reals ({where}) and {num} fakes -> {stage.monitor}")
    return OverfitMonitor(stage.monitor, every_kimg, train, heldout, num_fakes=num, seed=cfg.eval.seed + 2,
                          plot_path=stage.monitor_png, log=exp.log, train_labels=train_labels,
                          heldout_labels=heldout_labels)
