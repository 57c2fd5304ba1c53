"""The recipe: training settings for a user's own folder, chosen from the data and the machine.

``degan train --data DIR`` with no ``--preset``, ``--model`` or ``--config`` asks :func:`choose` for settings that
give recognisable samples in about 30 minutes on 2 CPU cores, prints each choice with its reason, and lets every
flag override it (the recipe is applied before ``--config``, ``--set`` and the flags; ``--recipe none`` turns it
off, ``--recipe auto`` applies it to any source). What it looks at:

- the folder (or zip): the number of images, their median short side and whether any has an alpha channel
  (:func:`inspect_source`, reading headers of at most 64 files, not the pixels);
- the machine: CUDA or CPU;
- what the user already fixed (``--resolution``, ``--width``): the training length is sized for those.

CPU choices and why (timings: ``benchmarks/mask_overhead.py`` and ``benchmarks/train_speed.py`` on the 2-core
development machine; the README quickstart shows a whole run):

- ``dcgan`` (the CPU-sized family), batch 32, hinge loss, Adam 2e-4 betas (0, 0.9), G EMA 0.99 (the ``dcgan``
  preset); DiffAugment ``color,translation,cutout`` (Zhao et al., NeurIPS 2020: the policy for 100-shot and
  10-20 % CIFAR data); x-flips.
- 32 px: a 64 px step costs about 4x a 32 px one at the same width (measured ratio 4.07), so 64 px gets far
  fewer images in the same time; ``--resolution 64`` asks for it anyway and the recipe then halves the width
  (ratio 1.74 to 32 px at width 0.5) and shortens the run.
- the length: :data:`CPU_KIMG_PER_MIN` x :data:`CPU_TRAIN_MINUTES`, rounded down to a multiple of 20 kimg, so the
  whole run (training + evaluation on :func:`degan.config` ``eval.num_gen`` auto = 1,000 samples) fits in about
  30 minutes on 2 cores; the run length does not depend on timing, so the same command maps to the same run folder.

On CUDA the recipe takes FastGAN (Liu et al., ICLR 2021), the family designed for few-shot training on one GPU, at
the folder's resolution (128 or 256 px), with the ``fastgan`` preset's settings; those GPU choices are not timed here.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from .errors import DataError

__all__ = ["DataSummary", "Recipe", "inspect_source", "choose", "CPU_KIMG_PER_MIN", "CPU_TRAIN_MINUTES"]

#: kimg per minute of ``dcgan`` training at batch 32 on 2 CPU cores, by (resolution, width): 2.16 s/kimg measured
#: at 32 px width 0.5 (benchmarks/results/mask_overhead_cpu.json, 69 ms per iteration of 32 images) with 20 %
#: allowed for the loop's logging, snapshots and grids; other sizes scaled by their measured step-time ratios.
CPU_KIMG_PER_MIN = {(32, 0.5): 22.0, (64, 0.25): 12.6, (64, 0.5): 5.4}
#: Minutes of training the CPU recipe plans for at most (the rest of the 30 minutes: start-up and evaluation).
CPU_TRAIN_MINUTES = 20.0
#: Inception feature extraction on 2 CPU cores, images/s (benchmarks/metrics_throughput.py, rounded down).
CPU_FEATURES_PER_S = 12.0
#: Samples the CPU recipe evaluates (KID is unbiased at this size; FID is reported beside it with its N).
CPU_NUM_GEN = 1000
_EXTS = (".bmp", ".jpeg", ".jpg", ".png", ".webp")


@dataclass(frozen=True)
class DataSummary:
    """What the recipe knows about a source: ``num_images`` files, ``median_side`` (median of min(width, height)
    over the inspected files, pixels), ``has_alpha`` (any inspected file has an alpha channel or transparency)."""

    num_images: int
    median_side: int
    has_alpha: bool


@dataclass(frozen=True)
class Recipe:
    """Settings (a nested partial config, applied after the preset) and one reason per choice."""

    settings: dict
    reasons: list[str] = field(default_factory=list)

    def lines(self, summary: DataSummary, device: str) -> list[str]:
        head = (f"[degan] recipe for {summary.num_images} images (median side {summary.median_side} px"
                f"{', with alpha' if summary.has_alpha else ''}) on {device}; override any choice with its flag, "
                "or --recipe none:")
        return [head] + [f"[degan]   {r}" for r in self.reasons]


def _image_files(path: Path) -> list[str]:
    files = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        files += [os.path.join(dirpath, f) for f in sorted(filenames)
                  if not f.startswith(".") and f.lower().endswith(_EXTS)]
    return files


def inspect_source(source: str | os.PathLike) -> DataSummary | None:
    """Count the images of a folder or zip and read the headers of up to 64 of them (evenly spread).

    Returns:
        The summary, or None for a source the recipe does not inspect (a builtin name, an archive format with its
        own presets such as CIFAR/npz/idx) or a folder without images (loading it gives the clear error).
    """
    from PIL import Image

    p = Path(source).expanduser()
    if p.is_dir():
        files = _image_files(p)
        opener = lambda f: Image.open(f)  # noqa: E731
    elif p.is_file() and zipfile.is_zipfile(p):
        zf = zipfile.ZipFile(p)
        files = sorted(n for n in zf.namelist() if n.lower().endswith(_EXTS) and not Path(n).name.startswith("."))
        opener = lambda f: Image.open(zf.open(f))  # noqa: E731
    else:
        return None
    if not files:
        return None
    step = max(1, len(files) // 64)
    sides, alpha = [], False
    for f in files[::step][:64]:
        try:
            with opener(f) as im:
                sides.append(min(im.size))
                alpha = alpha or im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info
        except Exception:  # noqa: BLE001 - an unreadable file is reported by the loader, not here
            continue
    if not sides:
        return None
    sides.sort()
    return DataSummary(num_images=len(files), median_side=int(sides[len(sides) // 2]), has_alpha=alpha)


def eval_minutes(num_images: int) -> float:
    """Predicted minutes of the final evaluation on 2 CPU cores: features of the samples and of the reals."""
    return (CPU_NUM_GEN + num_images) / CPU_FEATURES_PER_S / 60.0


def _kimg(resolution: int, width: float, minutes: float) -> float:
    rate = CPU_KIMG_PER_MIN.get((resolution, width))
    if rate is None:  # an unmeasured size: scale the 32 px / 0.5 rate by pixels x width^2
        rate = CPU_KIMG_PER_MIN[(32, 0.5)] / ((resolution / 32) ** 2 * (width / 0.5) ** 2)
    return max(20.0, 20.0 * int(rate * minutes // 20))


def choose(summary: DataSummary, device: str = "cpu", given: dict | None = None) -> Recipe:
    """Settings for ``summary`` on ``device`` (``"cpu"`` or ``"cuda"``), respecting what the user fixed.

    Args:
        summary: from :func:`inspect_source`.
        device: ``"cpu"`` or ``"cuda"`` (any ``cuda:N``).
        given: the user's explicit settings as a nested partial config (``{"data": {"resolution": 64}}``); the
            recipe leaves those keys alone and sizes the rest around them.

    Returns:
        A :class:`Recipe`; its ``settings`` never contain a key of ``given``.

    Raises:
        DataError: ``summary.num_images < 2``.
    """
    if summary.num_images < 2:
        raise DataError(f"the folder holds {summary.num_images} image(s); GAN training needs at least 2")
    given = given or {}
    g_data, g_model = given.get("data", {}), given.get("model", {})
    n = summary.num_images
    s: dict = {"data": {}, "model": {}, "train": {}, "eval": {}}
    why: list[str] = []
    if str(device).startswith("cuda"):
        res = g_data.get("resolution") or (256 if summary.median_side >= 256 else 128)
        s["model"] = {"name": "fastgan", "width": 0.5 if res <= 128 else 1.0, "spectral_norm": True}
        s["data"] = {"mirror": True}
        s["train"] = {"batch_D": 8, "batch_G": 8, "n_dis": 1, "loss": "hinge", "ema_decay": 0.999,
                      "total_kimg": 400, "snap_kimg": 50, "augment": "diffaug:color,translation"}
        s["optim"] = {"lr_G": 2e-4, "lr_D": 2e-4, "beta1": 0.5, "beta2": 0.999}
        s["recon"] = {"weight": 1.0}
        why += ["family fastgan: built for few-shot training on one GPU (Liu et al., ICLR 2021); batch 8, "
                "400 kimg, DiffAugment color,translation (the FastGAN paper's settings; GPU time not measured here)"]
        if "resolution" not in g_data:
            s["data"]["resolution"] = res
            why.append(f"resolution {res} px: from the images' median side {summary.median_side} px")
    else:
        res = int(g_data.get("resolution") or 32)
        width = g_model.get("width")
        if width is None:
            width = 0.5 if res <= 32 else 0.25
            s["model"]["width"] = width
        s["model"]["name"] = "dcgan"
        why.append(f"family dcgan (the CPU-sized one) at width {width}: a 32 px step at width 0.5 takes ~70 ms for "
                   "32 images on 2 cores")
        if "resolution" not in g_data:
            s["data"]["resolution"] = 32
            why.append(f"resolution 32 px: a 64 px step costs ~4x (measured), so the images are shown to D 4x less "
                       f"often in the same time; --resolution 64 asks for detail (the recipe then uses width 0.25)"
                       + (f" (images are {summary.median_side} px)" if summary.median_side != 32 else ""))
        minutes_eval = eval_minutes(n)
        minutes = max(5.0, min(CPU_TRAIN_MINUTES, 28.0 - minutes_eval))
        g_train = given.get("train", {})
        kimg = g_train.get("total_kimg") or _kimg(res, float(width), minutes)
        s["train"] = {"batch_D": 32, "batch_G": 32, "n_dis": 1, "total_kimg": kimg, "snap_kimg": kimg / 4,
                      "augment": "diffaug:color,translation,cutout"}
        s["data"]["mirror"] = True
        if "total_kimg" in g_train:
            why.append(f"{kimg:g} kimg as given; checkpoints every {kimg / 4:g} kimg")
        else:
            why.append(f"{kimg:g} kimg (~{kimg * 1000 / n:.0f} passes over the {n} images): about "
                       f"{minutes:.0f} min of training on 2 cores, checkpoints every {kimg / 4:g} kimg")
        why.append("DiffAugment color,translation,cutout and x-flips: the DiffAugment paper's policy for 100-shot "
                   "and 10-20 % data, where D otherwise memorises the few reals")
        s["eval"] = {"metrics": "fid_train,kid_train", "num_gen": CPU_NUM_GEN}
        why.append(f"evaluation: KID (unbiased at small N) and FID against the training images on {CPU_NUM_GEN:,} "
                   f"samples (about {max(1, round(minutes_eval))} min); add --subset 0.85 --metrics kid_train,kid_test "
                   "to also score against 15 % held out")
    if summary.has_alpha and "background" not in g_data:
        why.append("transparent images are composited on black (data.background); use --background white, or "
                   "--background keep-alpha to generate alpha")
    for section, values in given.items():  # never override what the user fixed
        if isinstance(values, dict) and section in s:
            for k in values:
                s[section].pop(k, None)
    return Recipe(settings={k: v for k, v in s.items() if v}, reasons=why)
