"""Load any supported source into an :class:`ImageSet` (uint8 NCHW at one resolution) and pick subsets.

Resizing (recorded in ``info``):

- ``"center_crop"`` (default): crop the centred square of side ``min(H, W)``, then resize it to
  ``resolution x resolution``. (Same picture as "scale the shorter side to ``resolution``, then centre crop",
  without the intermediate rounding.)
- ``"stretch"``: resize ``H x W`` straight to ``resolution x resolution`` (aspect ratio not kept).
- ``"pad"``: pad the shorter side to a centred square of side ``max(H, W)`` with the image's background colour
  (``background``, converted to the output channels like the images; ``keep-alpha``: transparent, all channels 0),
  then resize it to ``resolution x resolution``. Nothing is cut off.
- ``"none"``: every image must already be ``resolution x resolution``; anything else is a :class:`DataError`.

Training images are square. A non-square request (``"WxH"`` with W != H, see :func:`parse_resolution`) is refused
with a :class:`DataError`: no model family here generates non-square images, so a non-square photo is brought to the
square with ``center_crop``, ``pad`` or ``stretch`` instead.

Images already at the target size are never resampled. Resampling is bicubic with antialiasing:
``torch.nn.functional.interpolate(mode="bicubic", antialias=True)`` on uint8 tensors, torch's port of PIL's
resampling (within ~2 grey levels of ``PIL.Image.resize(..., Image.BICUBIC)`` for a uniform scale), done batched
per source size so 60k small images take well under a second.

Channels: ``channels=3`` replicates grayscale; ``channels=1`` converts RGB with ITU-R 601-2 luma
(``L = (19595 R + 38470 G + 7471 B + 2**15) >> 16``, i.e. 0.299/0.587/0.114, the same fixed-point formula as
PIL's ``convert("L")``).

Transparency: images with alpha (RGBA/LA/palette PNGs, 4-channel arrays) are composited on ``background`` first, at
their stored size, before channels, cropping and resampling (``keep-alpha`` keeps alpha instead, below): ``out = (rgb * a + bg * (255 - a) + 127) // 255``, the
rounded ``rgb * a/255 + bg * (1 - a/255)``. ``black`` (default) is exactly the historical ``(rgb * a + 127) // 255``;
``white``, ``gray`` (128), a hex colour ``#rrggbb``, or ``random``: one colour per image, the first three bytes of
``SHA-256("0:<i>")`` for the i-th image in load order (fixed for the run, not redrawn per epoch). Generators learn
these composited images, so their samples are opaque RGB (or grayscale) on that background.

``background="keep-alpha"`` composites nothing: every image gets an alpha channel after its ``channels`` colour
channels (``[N, 4, R, R]`` RGBA for ``channels=3``, ``[N, 2, R, R]`` gray + alpha for ``channels=1``; images without
alpha get alpha 255). The colour under fully transparent pixels is set to 0 (it is invisible, and whatever a paint
program left there would otherwise be training signal). Images that are cropped/padded only keep their pixels
exactly; images that are resampled are resampled premultiplied (colour * alpha), then un-premultiplied, so
transparent pixels do not bleed colour into the edges. G is built with ``img_channels = channels + 1`` and generates
alpha; grids and ``degan generate`` write RGBA (or LA) PNGs.

Mixed folders (some grayscale, some RGB, some with alpha) all become ``channels`` colour channels by the rules
above: alpha composited on ``background`` (or kept with ``keep-alpha``, alpha 255 for opaque images), grayscale
replicated for ``channels=3``, RGB converted to luma for ``channels=1``.

Subsets follow SPEC section 7: a fraction or count of the training set, chosen with a recorded seed by
``torch.randperm`` (or the first N, as in the reference ticket code), optionally class-balanced.
"""

from __future__ import annotations

import copy
import hashlib
import math
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from degan.data.formats import (BUILTINS, KEEP_ALPHA, RawData, alpha_policy, background_colors, composite,
                                 detect_format, parse_background)
from degan.errors import DataError

RESAMPLE = ("bicubic, antialiased: torch.nn.functional.interpolate(mode='bicubic', antialias=True) on uint8, "
            "which follows PIL's Image.BICUBIC resize (within ~2 grey levels for a uniform scale)")
LUMA = "ITU-R 601-2 luma: L = (19595 R + 38470 G + 7471 B + 32768) >> 16 (as PIL convert('L'))"
SUBSET_MODES = ("random", "first")
_CHUNK = 4096  # images per interpolate call (bounds float32 memory)


@dataclass
class ImageSet:
    """A loaded dataset.

    Attributes:
        images: uint8 ``[N, C, H, W]`` in [0, 255], ``H == W == resolution``; ``C`` in {1, 3}, or {2, 4} (alpha
            last, straight, not premultiplied) when loaded with ``background="keep-alpha"``.
        labels: int64 ``[N]`` class indices, or None when the source has no labels.
        class_names: class names indexed by label, or None.
        info: JSON-serialisable record of what was loaded and how: ``source``, ``path``, ``format``,
            ``split``, ``num_found``, ``num_usable``, ``skipped`` (list of ``{"path", "reason"}``), ``resolution``,
            ``resize``, ``resample``, ``channels``, ``channel_policy``, ``alpha`` (how transparency was
            composited), ``background``, ``num_alpha`` / ``num_transparent`` (images with an alpha channel / with
            any pixel not fully opaque), ``original_sizes``
            (``"WxH" -> count``), ``original_modes``, ``num_resampled``, ``num_upscaled`` and format notes.
    """

    images: np.ndarray
    labels: np.ndarray | None
    class_names: list[str] | None
    info: dict

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def resolution(self) -> int:
        """Side length H (== W) of every image."""
        return int(self.images.shape[-1])

    @property
    def num_classes(self) -> int:
        """Number of classes (0 when unlabeled)."""
        return 0 if self.class_names is None else len(self.class_names)

    def subset(self, indices: np.ndarray) -> "ImageSet":
        """A new ImageSet with the images at ``indices`` (int64 ``[M]``, e.g. from :func:`select_subset`).

        ``info`` is copied and gains ``subset_size`` (M) and ``full_size`` (N).
        """
        idx = np.asarray(indices, dtype=np.int64)
        info = copy.deepcopy(self.info)
        info["full_size"] = len(self)
        info["subset_size"] = int(idx.size)
        return ImageSet(self.images[idx], None if self.labels is None else self.labels[idx],
                        None if self.class_names is None else list(self.class_names), info)


# --------------------------------------------------------------------------- channels and geometry


def _to_channels(x: np.ndarray, channels: int) -> np.ndarray:
    """uint8 ``[..., C, H, W]`` (C in {1, 3}) -> same with ``channels``."""
    c = x.shape[-3]
    if c == channels:
        return x
    if channels == 3:
        return np.repeat(x, 3, axis=-3)
    r, g, b = (x[..., i, :, :].astype(np.uint32) for i in range(3))
    y = (19595 * r + 38470 * g + 7471 * b + 32768) >> 16
    return y.astype(np.uint8)[..., None, :, :]


def _center_square(x: np.ndarray, fill: np.ndarray | None = None) -> np.ndarray:
    h, w = x.shape[-2:]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return x[..., top:top + s, left:left + s]


def _resample(batch: np.ndarray, resolution: int) -> np.ndarray:
    """uint8 ``[N, C, H, W]`` -> uint8 ``[N, C, R, R]`` (bicubic, antialiased), chunked."""
    out = np.empty(batch.shape[:2] + (resolution, resolution), dtype=np.uint8)
    size = (resolution, resolution)
    for i in range(0, len(batch), _CHUNK):
        t = torch.from_numpy(np.array(batch[i:i + _CHUNK], dtype=np.uint8, order="C", copy=True))
        try:  # torch's uint8 CPU kernel: fast and PIL-matching
            r = F.interpolate(t, size=size, mode="bicubic", antialias=True, align_corners=False)
        except (RuntimeError, NotImplementedError):  # older torch: float path
            r = F.interpolate(t.float(), size=size, mode="bicubic", antialias=True, align_corners=False)
            r = r.round_().clamp_(0, 255).to(torch.uint8)
        out[i:i + _CHUNK] = r.numpy()
    return out


def _pad_square(x: np.ndarray, fill: np.ndarray) -> np.ndarray:
    """uint8 ``[N, C, H, W]`` -> ``[N, C, S, S]``, ``S = max(H, W)``, the image centred (top/left ``(S - H) // 2``,
    ``(S - W) // 2``) on per-image ``fill`` uint8 ``[N, C, 1, 1]``."""
    n, c, h, w = x.shape
    s = max(h, w)
    if h == w:
        return x
    out = np.empty((n, c, s, s), dtype=np.uint8)
    out[:] = fill
    top, left = (s - h) // 2, (s - w) // 2
    out[:, :, top:top + h, left:left + w] = x
    return out


_GEOMETRY: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "center_crop": _center_square,
    "stretch": lambda x, fill: x,
    "pad": _pad_square,
    "none": lambda x, fill: x,
}
RESIZE_POLICIES = tuple(_GEOMETRY)
_RESIZE_TEXT = {
    "center_crop": "center_crop: centred square of side min(H, W), then resized to R x R",
    "stretch": "stretch: H x W resized to R x R (aspect ratio not kept)",
    "pad": "pad: centred on a square of side max(H, W) filled with the background, then resized to R x R",
    "none": "none: images must already be R x R",
}


def parse_resolution(spec) -> int:
    """A training resolution: an int, ``"64"`` or ``"WxH"`` (``x`` or ``X``) -> the side R in pixels.

    ``"64x64"`` is 64 (the same run as ``64``). Training images are square, so ``W != H`` is refused.

    Raises:
        DataError: not a positive integer / ``WxH``, or ``W != H`` (the message says which families generate what and
            how to fit non-square images: ``data.resize=center_crop|pad|stretch``).
    """
    if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
        value = int(spec)
    elif isinstance(spec, str) and re.fullmatch(r"\s*\d+\s*", spec):
        value = int(spec)
    elif isinstance(spec, str) and re.fullmatch(r"\s*\d+\s*[xX]\s*\d+\s*", spec):
        w, h = (int(v) for v in re.split(r"[xX]", spec))
        if w != h:
            raise DataError(f"resolution {spec.strip()!r} is not square: every model family here (dcgan, sngan, "
                            f"biggan, stylegan2, fastgan, ...) generates square R x R images; train at a square "
                            f"resolution, e.g. {max(w, h)} or {min(w, h)}, and choose how your {w}x{h} images fit "
                            f"it with --set data.resize=center_crop (crop the centre), pad (pad with the "
                            f"background, nothing cut off) or stretch")
        value = w
    else:
        raise DataError(f"resolution must be a positive integer number of pixels or WxH with W = H (e.g. 64 or "
                        f"64x64), got {spec!r}")
    if value < 1:
        raise DataError(f"resolution must be a positive integer number of pixels, got {spec!r}")
    return value


def _add_alpha(x: np.ndarray, channels: int) -> np.ndarray:
    """uint8 ``[..., C, H, W]`` (C in 1..4; 2 and 4 have alpha last) -> ``[..., channels + 1, H, W]``: colour
    converted to ``channels``, alpha kept (255 where there was none), colour 0 under fully transparent pixels."""
    c = x.shape[-3]
    if c in (2, 4):
        colour, alpha = x[..., :-1, :, :], x[..., -1:, :, :]
    else:
        colour, alpha = x, np.full(x.shape[:-3] + (1,) + x.shape[-2:], 255, dtype=np.uint8)
    colour = _to_channels(colour, channels)
    out = np.concatenate([colour, alpha], axis=-3)
    out[..., :-1, :, :] *= (alpha > 0)  # invisible colour -> 0
    return out


def _resample_premultiplied(x: np.ndarray, resolution: int) -> np.ndarray:
    """Resample straight-alpha uint8 ``[N, C + 1, H, W]`` premultiplied: ``c * a``, resample, divide by ``a``."""
    a = x[:, -1:].astype(np.uint32)
    pre = x.astype(np.uint32)
    pre[:, :-1] = (pre[:, :-1] * a + 127) // 255
    r = _resample(pre.astype(np.uint8), resolution).astype(np.uint32)
    ra = r[:, -1:]
    colour = np.where(ra > 0, (r[:, :-1] * 255 + ra // 2) // np.maximum(ra, 1), 0)
    r[:, :-1] = np.minimum(colour, 255)
    return r.astype(np.uint8)


def _composite_alpha(items: np.ndarray | list[np.ndarray], background: str
                     ) -> tuple[np.ndarray | list[np.ndarray], dict]:
    """Composite every image with alpha (2 or 4 channels, alpha last) on ``background``; others are returned as they
    are (a list is updated in place). Returns (images with C in {1, 3}, ``{"num_alpha", "num_transparent"}``)."""
    n = len(items)
    has_alpha = [i for i in range(n) if items[i].shape[-3] in (2, 4)] if isinstance(items, list) else (
        list(range(n)) if items.shape[1] in (2, 4) else [])
    stats = {"num_alpha": len(has_alpha), "num_transparent": 0}
    if not has_alpha or background == KEEP_ALPHA:
        if has_alpha:
            stats["num_transparent"] = sum(int(items[i][-1].min() < 255) for i in has_alpha)
        return items, stats
    colors = background_colors(background, n)
    if isinstance(items, list):
        for i in has_alpha:
            stats["num_transparent"] += int(items[i][-1].min() < 255)
            items[i] = composite(items[i][None], colors[i:i + 1])[0]
        return items, stats
    rgb = items.shape[1] == 4 or not np.all(colors == colors[:, :1])  # one channel count for the whole array
    out = np.empty((n, 3 if rgb else 1) + items.shape[2:], dtype=np.uint8)
    for i in range(0, n, _CHUNK):
        chunk = items[i:i + _CHUNK]
        stats["num_transparent"] += int((chunk[:, -1].reshape(len(chunk), -1).min(axis=1) < 255).sum())
        out[i:i + _CHUNK] = composite(chunk, colors[i:i + _CHUNK], rgb=rgb)
    return out, stats


def _finish(raw: RawData, resolution: int, channels: int, resize: str,
            background: str = "black") -> tuple[np.ndarray, dict]:
    """Composite alpha on ``background`` (or keep it), then apply channel policy + geometry + resampling.

    Returns (uint8 [N, C, R, R], stats); C = ``channels``, plus 1 (alpha) for ``keep-alpha``."""
    geom = _GEOMETRY[resize]
    keep = background == KEEP_ALPHA
    items, alpha_stats = _composite_alpha(raw.images, background)
    n = len(items)
    if keep:  # every image: `channels` colour channels + alpha
        items = [_add_alpha(im, channels) for im in items] if isinstance(items, list) else _add_alpha(items, channels)
    out_c = channels + 1 if keep else channels
    fills = None
    if resize == "pad":  # per-image pad colour in the output channels
        fills = (np.zeros((n, out_c, 1, 1), np.uint8) if keep else
                 _to_channels(background_colors(background, n)[:, :, None, None], channels))
    sizes: dict[str, int] = {}
    if isinstance(items, np.ndarray):
        groups = {items.shape[-2:]: (np.arange(n), items)}
        sizes[f"{items.shape[-1]}x{items.shape[-2]}"] = n
    else:
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, im in enumerate(items):
            key = f"{im.shape[-1]}x{im.shape[-2]}"
            sizes[key] = sizes.get(key, 0) + 1
            by_size.setdefault(tuple(im.shape[-2:]), []).append(i)
        groups = {}
        for hw, idx in by_size.items():
            groups[hw] = (np.array(idx), None)
    if resize == "none":
        wrong = {k: v for k, v in sizes.items() if k != f"{resolution}x{resolution}"}
        if wrong:
            raise DataError(f"resize='none' needs every image to be {resolution}x{resolution}, but "
                            f"{sum(wrong.values())} are not (sizes WxH: {dict(list(wrong.items())[:10])}); "
                            f"use resize='center_crop' or 'stretch', or change the resolution")
    out = np.empty((n, out_c, resolution, resolution), dtype=np.uint8)
    resampled = upscaled = 0
    for hw, (idx, arr) in groups.items():
        # reduce channels before resampling, expand after (less work, same result); padding needs the final count
        pre = out_c if (keep or resize == "pad") else 1 if channels == 1 else None
        if arr is None:
            c = pre or max(items[i].shape[0] for i in idx)
            arr = np.stack([_to_channels(items[i], c) if not keep else items[i] for i in idx])
        elif pre and not keep:
            arr = _to_channels(arr, pre)
        arr = geom(arr, None if fills is None else fills[idx])
        if arr.shape[-2:] != (resolution, resolution):
            if arr.shape[-2] < resolution or arr.shape[-1] < resolution:
                upscaled += len(idx)
            resampled += len(idx)
            arr = _resample_premultiplied(arr, resolution) if keep else _resample(arr, resolution)
        if not keep:
            arr = _to_channels(arr, channels)
        if len(idx) == n:
            out = np.ascontiguousarray(arr)
            if not out.flags.writeable or out.base is not None:
                out = out.copy()
        else:
            out[idx] = arr
    top_sizes = dict(sorted(sizes.items(), key=lambda kv: -kv[1])[:20])
    return out, {"original_sizes": top_sizes, "num_distinct_sizes": len(sizes),
                 "num_resampled": resampled, "num_upscaled": upscaled, **alpha_stats}


# --------------------------------------------------------------------------- load


def _resolve(source: str) -> tuple[Path | None, str | None]:
    """(path, builtin name): exactly one is set."""
    if not isinstance(source, (str, os.PathLike)) or str(source) == "":
        raise DataError(f"data source must be a builtin name or a path, got {source!r}")
    s = str(source)
    p = Path(s).expanduser()
    if p.exists():
        return p, None
    if s in BUILTINS:
        return None, s
    raise DataError(f"data source {s!r} does not exist (no such file or folder) and is not a builtin name "
                    f"({', '.join(BUILTINS.names())}); check the path")


_WARNED_BLACK: set[str] = set()


def load_dataset(source: str, *, resolution: int, channels: int = 3, resize: str = "center_crop",
                 split: str = "train", min_images: int = 2, background: str = "black") -> ImageSet:
    """Load a dataset from a builtin name or a path, as uint8 NCHW at one square resolution (alpha kept as an extra
    channel with ``background="keep-alpha"``).

    The format is detected (see :mod:`degan.data.formats`): builtin ``faces100``; an image folder (recursive,
    labels from class subfolders or ``dataset.json``); a ``.zip`` of images; CIFAR-10/100 python archives
    (``.tar.gz`` or extracted folder); MNIST/Fashion-MNIST idx files (plain or ``.gz``, a file or a folder);
    a ``.npz`` with image/label arrays.

    Unreadable, truncated or zero-byte image files are skipped, listed in ``info["skipped"]`` and summarised
    in a :class:`UserWarning`. A set whose images are all identical (after resizing) is loaded with a
    :class:`UserWarning` too, and so is one with transparent images composited on the default black (one line that
    names the other backgrounds, once per source and process).

    Args:
        source: builtin name (``"faces100"``) or a path to a file or folder (an existing path wins over a
            builtin name).
        resolution: output side length R in pixels (images become R x R); ``"R"`` and ``"RxR"`` are accepted too
            (see :func:`parse_resolution`).
        channels: colour channels: 1 (RGB -> ITU-R 601 luma) or 3 (grayscale replicated). ``keep-alpha`` adds
            alpha after them.
        resize: ``"center_crop"``, ``"pad"``, ``"stretch"`` or ``"none"`` (see the module docstring).
        split: ``"train"`` or ``"test"`` where the format has both; folders, zips and ``faces100`` have only
            ``"train"``. For a single idx file the file name decides (``t10k-*`` is the test split).
        min_images: fewest usable images accepted.
        background: what transparent pixels are composited on (``data.background``): ``"black"``, ``"white"``,
            ``"gray"``, ``"random"`` (a fixed colour per image) or ``"#rrggbb"``; or ``"keep-alpha"``: no
            compositing, alpha kept as the last channel (see the module docstring). Also the pad colour of
            ``resize="pad"``.

    Returns:
        ImageSet with ``images`` uint8 ``[N, C, R, R]`` in [0, 255], ``C = channels`` (``channels + 1`` with
        ``keep-alpha``: RGBA or gray + alpha), ``labels`` int64 ``[N]`` or None.

    Raises:
        DataError: missing path; no images found; unknown format (lists the supported ones); wrong split;
            corrupt archive or idx file; fewer than ``min_images`` usable images (one line listing the bad files);
            ``resize="none"`` with images of another size; invalid ``resolution`` (also a non-square ``"WxH"``)/
            ``channels``/``resize``/``background``.
    """
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer, str)):
        raise DataError(f"resolution must be a positive integer number of pixels, got {resolution!r}")
    resolution = parse_resolution(resolution)
    if channels not in (1, 3) or isinstance(channels, bool):
        hint = (" (for RGBA keep 3 and set background='keep-alpha': alpha is added as a 4th channel)"
                if channels in (2, 4) else "")
        raise DataError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}{hint}")
    if resize not in _GEOMETRY:
        raise DataError(f"unknown resize policy {resize!r}; choose one of {', '.join(RESIZE_POLICIES)}")
    if not isinstance(split, str):
        raise DataError(f"split must be 'train' or 'test', got {split!r}")
    if isinstance(min_images, bool) or not isinstance(min_images, (int, np.integer)) or min_images < 1:
        raise DataError(f"min_images must be a positive integer, got {min_images!r}")
    background = parse_background(background)

    path, builtin = _resolve(source)
    if builtin is not None:
        raw = BUILTINS.get(builtin).load(split)
    else:
        raw = detect_format(path).read(path, split)

    if len(raw) < min_images:  # one line: the unreadable files, then what to do
        bad = "; ".join(f"{s['path']}: {s['reason']}" for s in raw.skipped[:10])
        more = f" ... and {len(raw.skipped) - 10} more" if len(raw.skipped) > 10 else ""
        detail = f"; unreadable files: {bad}{more}" if raw.skipped else ""
        todo = "replace or remove the unreadable files, or add" if raw.skipped else "add"
        raise DataError(f"{str(source)!r} has only {len(raw)} usable image(s) of {raw.num_found} found, fewer than "
                        f"min_images={min_images}{detail}; {todo} images until at least {min_images} can be read")
    if raw.skipped:
        shown = "; ".join(f"{s['path']} ({s['reason']})" for s in raw.skipped[:3])
        more = f" and {len(raw.skipped) - 3} more" if len(raw.skipped) > 3 else ""
        warnings.warn(f"skipped {len(raw.skipped)} of {raw.num_found} image files in {str(source)!r} that could not "
                      f"be read: {shown}{more}; the full list is in info['skipped']", stacklevel=2)

    images, stats = _finish(raw, resolution, channels, resize, background)
    where = builtin if path is None else str(path.resolve())
    if background == "black" and stats["num_transparent"] and where not in _WARNED_BLACK:
        _WARNED_BLACK.add(where)  # once per source and process (evaluation and the D monitor load it again)
        warnings.warn(f"{stats['num_transparent']} of {len(images)} images in {str(source)!r} have transparency and "
                      "were composited on black; --background white|gray|random|#rrggbb (data.background) chooses "
                      "another, --background keep-alpha keeps alpha (G generates RGBA)", stacklevel=2)
    if len(images) > 1 and np.array_equal(images[0], images[-1]) and bool((images == images[0]).all()):
        warnings.warn(f"all {len(images)} images of {str(source)!r} are identical at {resolution}x{resolution}; a GAN "
                      "trained on them can only learn that one picture", stacklevel=2)
    info = {
        "source": str(source),
        "path": None if path is None else str(path.resolve()),
        "builtin": builtin,
        "format": raw.format,
        "split": raw.split,
        "num_found": int(raw.num_found),
        "num_usable": int(len(raw)),
        "skipped": list(raw.skipped),
        "resolution": resolution,
        "resize": resize,
        "resize_policy": _RESIZE_TEXT[resize],
        "resample": RESAMPLE,
        "channels": channels,
        "img_channels": int(images.shape[1]),
        "channel_policy": ("grayscale replicated to 3 channels" if channels == 3 else LUMA) + (
            "; alpha kept as the last channel" if background == KEEP_ALPHA else ""),
        "alpha": alpha_policy(background),
        "background": background,
        "original_modes": {str(k): int(v) for k, v in raw.modes.items()},
        **stats,
        "num_classes": 0 if raw.class_names is None else len(raw.class_names),
        "class_names": raw.class_names,
        "notes": raw.notes,
    }
    return ImageSet(images=images, labels=raw.labels, class_names=raw.class_names, info=info)


# --------------------------------------------------------------------------- dataset id


def dataset_id(source: str, background: str = "black") -> str:
    """A stable short id for cache keys (e.g. real-image statistics).

    A builtin name is its own id. A path gives ``"<name>-<10 hex>"``: the file or folder name (non
    ``[A-Za-z0-9_.-]`` characters replaced by ``_``, at most 40 characters) and a SHA-256 prefix of the absolute
    path plus, for a file, its size and mtime (ns); for a folder, the count, total size and latest mtime of all
    files below it. Editing, adding or removing files changes the id.

    A ``background`` other than black (the images' transparency composited on another colour: other pixels) is
    appended as ``"<id>|background=<background>"``, for caches of loaded pixels such as reference features; run
    folder names use the plain id (the config hash tells backgrounds apart there).

    Raises:
        DataError: if ``source`` is neither an existing path nor a builtin name, or ``background`` is invalid.
    """
    background = parse_background(background)
    suffix = "" if background == "black" else f"|background={background}"
    path, builtin = _resolve(source)
    if builtin is not None:
        return builtin + suffix
    path = path.resolve()
    h = hashlib.sha256(str(path).encode())
    if path.is_dir():
        count = total = latest = 0
        for dirpath, _, files in os.walk(path):
            for fn in files:
                try:
                    st = os.stat(os.path.join(dirpath, fn))
                except OSError:
                    continue
                count += 1
                total += st.st_size
                latest = max(latest, st.st_mtime_ns)
        h.update(f"|dir|{count}|{total}|{latest}".encode())
    else:
        st = path.stat()
        h.update(f"|file|{st.st_size}|{st.st_mtime_ns}".encode())
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", path.name)[:40] or "data"
    return f"{name}-{h.hexdigest()[:10]}{suffix}"


# --------------------------------------------------------------------------- subsets


def parse_subset(spec) -> tuple[str, float | int] | None:
    """Parse a subset request.

    ``None``, ``"all"``, ``"none"``, ``""``, ``1.0`` and ``"1.0"`` mean the whole set (``None``). A float or a
    string with a ``.``/exponent is a fraction in (0, 1]; ``"10%"`` is the fraction 0.1; an int or a digit
    string is a count >= 1 (so ``1`` is one image but ``1.0`` is everything).

    Returns:
        ``("fraction", f)`` with ``0 < f < 1``, ``("count", n)`` with ``n >= 1``, or None.

    Raises:
        DataError: non-numeric string, fraction <= 0 or > 1, count < 1, NaN/inf, or a bool.
    """
    if spec is None:
        return None
    if isinstance(spec, (bool, np.bool_)):
        raise DataError(f"subset must be a fraction in (0, 1], a count >= 1, or 'all'; got {spec!r}")
    if isinstance(spec, str):
        s = spec.strip().lower()
        if s in ("", "all", "none", "full"):
            return None
        try:
            if s.endswith("%"):
                value: float | int = float(s[:-1]) / 100.0
            elif re.fullmatch(r"[+-]?\d+", s):
                value = int(s)
            else:
                value = float(s)
        except ValueError:
            raise DataError(f"subset {spec!r} is not a number: give a fraction like 0.1 or 10%, a count like 500, "
                            f"or 'all'") from None
    elif isinstance(spec, (int, np.integer)):
        value = int(spec)
    elif isinstance(spec, (float, np.floating)):
        value = float(spec)
    else:
        raise DataError(f"subset must be a fraction, a count or 'all'; got {type(spec).__name__} {spec!r}")
    if isinstance(value, int):
        if value < 1:
            raise DataError(f"subset count must be >= 1, got {value}")
        return ("count", value)
    if not math.isfinite(value) or value <= 0 or value > 1:
        hint = " (for a count of images write an integer, e.g. 500)" if math.isfinite(value) and value > 1 else ""
        raise DataError(f"subset fraction must be in (0, 1], got {value!r}{hint}")
    if value == 1.0:
        return None
    return ("fraction", value)


def _quotas(n: int, k: int) -> np.ndarray:
    """Per-class counts for a balanced subset of n over k classes: n // k each, +1 for the first n % k classes."""
    q = np.full(k, n // k, dtype=np.int64)
    q[: n % k] += 1
    return q


def select_subset(num_images: int, spec: str | float | int | None, *, seed: int = 0, mode: str = "random",
                  labels: np.ndarray | None = None, balance: bool = False) -> np.ndarray:
    """Choose which images form the limited-data training set (SPEC section 7).

    The size comes from :func:`parse_subset`: a count n, or a fraction f giving ``n = max(1, floor(f * N + 0.5))``
    (rounded half up); None keeps all N. ``mode="random"`` draws with ``torch.randperm(N, generator=
    torch.Generator().manual_seed(seed))`` and keeps the first n of the permutation; ``mode="first"`` takes
    indices ``0..n-1`` (what the reference ticket code did).

    With ``balance=True`` each class present in ``labels`` (sorted by label value, K classes) gets ``n // K``
    images and the first ``n % K`` classes in that order get one more, so the total is exactly n. Within a class,
    ``"random"`` takes that class's first images in the seeded permutation, ``"first"`` its lowest indices.

    Same arguments give the same indices on every machine (torch's CPU generator is platform independent).

    Args:
        num_images: N, the size of the full training set.
        spec: fraction, count, or None/"all" (see :func:`parse_subset`).
        seed: seed of the permutation (recorded with the run).
        mode: ``"random"`` or ``"first"``.
        labels: int ``[N]`` class labels; required when ``balance``.
        balance: pick (almost) the same number of images per class.

    Returns:
        int64 ``[n]`` sorted unique indices into ``[0, N)``.

    Raises:
        DataError: bad ``spec`` (see :func:`parse_subset`), a count larger than N, an unknown mode,
            ``balance`` without labels or with labels of the wrong length, or a balanced count that a too-small
            class cannot supply (the message gives the largest reachable count).
    """
    if isinstance(num_images, bool) or not isinstance(num_images, (int, np.integer)) or num_images < 1:
        raise DataError(f"cannot take a subset of {num_images!r} images; the dataset is empty")
    n_all = int(num_images)
    if mode not in SUBSET_MODES:
        raise DataError(f"unknown subset mode {mode!r}; choose one of {', '.join(SUBSET_MODES)}")
    if balance and labels is None:
        raise DataError("balance=True needs class labels, but this dataset has none; use balance=False or a "
                        "labelled source (class subfolders, CIFAR, idx, npz with labels)")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (n_all,):
            raise DataError(f"labels have shape {labels.shape}, expected ({n_all},)")
    parsed = parse_subset(spec)
    if parsed is None:
        return np.arange(n_all, dtype=np.int64)
    kind, value = parsed
    n = max(1, int(math.floor(value * n_all + 0.5))) if kind == "fraction" else int(value)
    if n > n_all:
        raise DataError(f"subset of {n} images requested but the dataset has only {n_all}; ask for at most "
                        f"{n_all} or a fraction")

    if mode == "random":
        g = torch.Generator().manual_seed(int(seed))
        order = torch.randperm(n_all, generator=g).numpy().astype(np.int64)
    else:
        order = np.arange(n_all, dtype=np.int64)

    if not balance:
        return np.sort(order[:n])

    classes, sizes = np.unique(labels, return_counts=True)
    k = len(classes)
    if np.any(_quotas(n, k) > sizes):
        lo, hi = 0, n  # feasibility is monotone in n: find the largest feasible count
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if np.all(_quotas(mid, k) <= sizes):
                lo = mid
            else:
                hi = mid - 1
        small = classes[np.argmin(sizes)]
        raise DataError(f"a class-balanced subset of {n} images needs up to {int(_quotas(n, k).max())} per class "
                        f"over {k} classes, but class {small} has only {int(sizes.min())}; the largest reachable "
                        f"balanced subset is {lo} images (or use balance=False)")
    quota = dict(zip(classes.tolist(), _quotas(n, k).tolist()))
    ordered_labels = labels[order]
    chosen = []
    for c, q in quota.items():
        if q:
            chosen.append(order[ordered_labels == c][:q])
    return np.sort(np.concatenate(chosen)).astype(np.int64)
