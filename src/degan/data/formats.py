"""Format readers: each turns one kind of source into raw uint8 images plus labels.

Every reader is a :class:`Reader` in the :data:`FORMATS` registry with a ``detect(path)`` function;
:func:`detect_format` asks the readers in ``priority`` order and takes the first that claims the path
(no ``if``/``elif`` ladder over formats). Builtin datasets (``faces100``) live in :data:`BUILTINS`.

Readers do *not* resize or change the channel count; they only decode and normalise every image to
uint8 with 1 channel (grayscale modes) or 3 channels (colour modes), plus the alpha channel where the image has
one (2 = gray + alpha, 4 = RGB + alpha). Decisions made here, recorded in ``RawData.notes``:

- Alpha (``RGBA``, ``LA``, ``PA``, palette images with transparency, premultiplied ``RGBa``/``La``, 4-channel
  arrays) is **kept**; :func:`degan.data.load_dataset` composites it on the background its ``background``
  argument names (``data.background``, default black: ``rgb * alpha / 255``, as before), so fully transparent
  pixels never show whatever colour happens to be stored under them. See :func:`parse_background`.
- 16/32-bit integer images (``I;16``, ``I``) are scaled from [0, 65535] to [0, 255] when any value exceeds
  255; float images (``F``) are scaled by 255 when all values are in [0, 1], else clipped to [0, 255].
- Bilevel (``1``) becomes ``L``; ``CMYK``/``YCbCr``/``LAB``/``HSV`` and any other colour mode become ``RGB``.
- JPEG/WebP EXIF orientation is applied.

CIFAR python archives are pickles. They are read with a *restricted* unpickler that only allows the numpy
array-reconstruction globals the canonical files use (equivalent to ``pickle.load(f, encoding="bytes")``
for genuine files, but an archive that tries to call anything else is refused with a :class:`DataError`).
Only load archives you trust all the same.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import re
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Iterator

import numpy as np

from degan.errors import DataError, SplitUnavailableError
from degan.registry import Registry

IMAGE_EXTENSIONS: tuple[str, ...] = (".bmp", ".jpeg", ".jpg", ".png", ".webp")
"""File extensions read from image folders and zips (matched case-insensitively)."""

ALPHA_POLICY = "composited on black (rgb * alpha / 255)"
"""``info["alpha"]`` of the default background (the behaviour of every release so far)."""
BACKGROUNDS: tuple[str, ...] = ("black", "white", "gray", "random", "keep-alpha")
"""Named backgrounds for alpha compositing; a hex colour ``#rrggbb`` is accepted too. ``keep-alpha`` composites
nothing: the alpha channel is kept as the last image channel (RGBA / gray + alpha) and G learns to generate it."""
KEEP_ALPHA = "keep-alpha"
METRIC_BACKGROUND = "black"
"""What images with alpha (2 or 4 channels) are composited on before Inception features, reals and fakes alike:
black, ``(rgb * a + 127) // 255``, the same pixels as ``data.background=black`` at the stored size."""
BACKGROUND_COLORS: dict[str, tuple[int, int, int]] = {"black": (0, 0, 0), "white": (255, 255, 255),
                                                      "gray": (128, 128, 128)}
RANDOM_BACKGROUND_SEED = 0
"""Fixed seed of ``background="random"``: image i gets the first three bytes of ``SHA-256("<seed>:<i>")``."""
SPLITS: tuple[str, ...] = ("train", "test")

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]


@dataclass
class RawData:
    """What a reader returns, before resizing and the channel policy.

    Attributes:
        images: either one uint8 array ``[N, C, H, W]`` (all images the same size) or a list of N uint8
            arrays ``[C, H, W]`` of varying sizes; ``C`` is 1 (grayscale) or 3 (RGB), or 2 / 4 with the alpha
            channel last (composited by :func:`degan.data.load_dataset`), values in [0, 255].
        labels: int64 ``[N]`` class indices in ``[0, len(class_names))``, or None.
        class_names: names of the classes (index = label), or None when unknown.
        format: the reader's registry name.
        split: the split actually read.
        num_found: image files/records found (usable + skipped).
        skipped: ``{"path", "reason"}`` for every image file that could not be read.
        modes: original PIL mode (or array layout) -> count.
        notes: extra JSON-serialisable facts to record in ``ImageSet.info``.
    """

    images: np.ndarray | list[np.ndarray]
    labels: np.ndarray | None
    class_names: list[str] | None
    format: str
    split: str
    num_found: int
    skipped: list[dict] = field(default_factory=list)
    modes: dict[str, int] = field(default_factory=dict)
    notes: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)


@dataclass(frozen=True)
class Reader:
    """One data format.

    Attributes:
        name: registry name, recorded as ``info["format"]``.
        description: one line for error messages listing the supported formats.
        detect: ``detect(path) -> bool``, cheap; True when this reader handles ``path``.
        read: ``read(path, split) -> RawData``; raises :class:`DataError` for bad content or a wrong split.
        priority: lower is asked first (specific formats before the generic image folder).
    """

    name: str
    description: str
    detect: Callable[[Path], bool]
    read: Callable[[Path, str], RawData]
    priority: int = 50


@dataclass(frozen=True)
class Builtin:
    """A dataset known by name. ``load(split) -> RawData``."""

    name: str
    description: str
    load: Callable[[str], RawData]


FORMATS: Registry[Reader] = Registry("data format")
BUILTINS: Registry[Builtin] = Registry("builtin dataset")


def _add(reader: Reader) -> Reader:
    FORMATS.register(reader.name)(reader)
    return reader


def supported_formats() -> str:
    """A human-readable list of the builtin names and file formats, for error messages."""
    lines = [f"builtin names: {', '.join(BUILTINS.names())}"]
    lines += [f"{r.name}: {r.description}" for r in iter_readers()]
    return "; ".join(lines)


def detect_format(path: Path) -> Reader:
    """Return the first reader (by priority) whose ``detect`` claims the existing ``path``.

    Raises:
        DataError: if no reader recognises it; the message lists the supported formats.
    """
    for reader in iter_readers():
        try:
            if reader.detect(path):
                return reader
        except OSError:
            continue
    raise DataError(f"unrecognised data source {str(path)!r}: not a format degan can read. "
                    f"Supported: {supported_formats()}")


def _check_split(split: str, allowed: Iterable[str], what: str) -> None:
    allowed = tuple(allowed)
    if split not in allowed:
        raise SplitUnavailableError(f"split {split!r} is not available for {what}; choose one of "
                                    f"{', '.join(allowed)}")


def _has_ext(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


# --------------------------------------------------------------------------- PIL decoding


def parse_background(spec) -> str:
    """Check a background for alpha compositing; returns it normalised (names and hex digits lower case).

    ``black`` (the default: ``rgb * a / 255``), ``white``, ``gray`` (128), ``random`` (one colour per image, fixed:
    see :data:`RANDOM_BACKGROUND_SEED`), a hex colour ``#rrggbb``, or ``keep-alpha`` (no compositing: alpha stays an
    image channel).

    Raises:
        DataError: anything else; the message names the valid values.
    """
    s = spec.strip().lower() if isinstance(spec, str) else None
    if s in BACKGROUNDS or (s is not None and re.fullmatch(r"#[0-9a-f]{6}", s)):
        return s
    raise DataError(f"background {spec!r} is not valid; choose black, white, gray, random, keep-alpha or a hex "
                    f"colour #rrggbb (e.g. #ff8800)")


def background_colors(background: str, n: int) -> np.ndarray:
    """uint8 ``[n, 3]``: the RGB colour image i (0-based, in load order) is composited on (``keep-alpha``: black,
    the colour stored under fully transparent pixels)."""
    bg = parse_background(background)
    if bg == KEEP_ALPHA:
        bg = "black"
    if bg == "random":
        import hashlib

        return np.array([list(hashlib.sha256(f"{RANDOM_BACKGROUND_SEED}:{i}".encode()).digest()[:3])
                         for i in range(n)], dtype=np.uint8).reshape(n, 3)
    rgb = BACKGROUND_COLORS.get(bg) or tuple(int(bg[i:i + 2], 16) for i in (1, 3, 5))
    return np.tile(np.array(rgb, dtype=np.uint8), (n, 1))


def alpha_policy(background: str) -> str:
    """The ``info["alpha"]`` text of a background."""
    bg = parse_background(background)
    if bg == "black":
        return ALPHA_POLICY
    if bg == KEEP_ALPHA:
        return ("kept as the last channel (RGBA or gray + alpha; opaque images get alpha 255); colour under fully "
                "transparent pixels set to 0; resampled premultiplied")
    what = {"random": "a random colour per image (fixed: SHA-256 of the image index)",
            "gray": "gray (#808080)", "white": "white (#ffffff)"}.get(bg, bg)
    return f"composited on {what} (rgb * alpha / 255 + background * (1 - alpha / 255))"


def composite(x: np.ndarray, colors: np.ndarray, rgb: bool | None = None) -> np.ndarray:
    """uint8 ``[N, C+1, H, W]`` (alpha last, C in {1, 3}) on per-image colours uint8 ``[N, 3]`` -> ``[N, C', H, W]``.

    ``out = (color * a + bg * (255 - a) + 127) // 255``: the exact rounding of ``color * a/255 + bg * (1 - a/255)``,
    and on black bit-identical to the old ``(color * a + 127) // 255``. Gray + alpha stays 1 channel (C' = 1) when
    every colour is a gray (r = g = b), else the gray is replicated to RGB first (C' = 3); ``rgb=True`` forces RGB.
    """
    alpha = x[:, -1:].astype(np.uint16)
    color = x[:, :-1].astype(np.uint16)
    bg = colors.astype(np.uint16)[:, :, None, None]  # [N, 3, 1, 1]
    if color.shape[1] == 1:
        if rgb or not np.all(bg == bg[:, :1]):
            color = np.repeat(color, 3, axis=1)
        else:
            bg = bg[:, :1]
    return ((color * alpha + bg * (255 - alpha) + 127) // 255).astype(np.uint8)


def pil_to_array(img) -> np.ndarray:
    """Decoded PIL image -> uint8 ``[C, H, W]`` following the module's mode policy: C in {1, 3}, or 2 / 4 for an
    image with alpha (gray / RGB + alpha last)."""
    mode = img.mode
    if mode == "P" or mode == "PA":
        img = img.convert("RGBA" if (mode == "PA" or "transparency" in img.info) else "RGB")
    elif mode in ("La", "RGBa"):
        img = img.convert("LA" if mode == "La" else "RGBA")
    elif mode == "1":
        img = img.convert("L")
    mode = img.mode
    if mode in ("L", "RGB"):
        arr = np.asarray(img, dtype=np.uint8)
    elif mode in ("LA", "RGBA"):
        arr = np.asarray(img, dtype=np.uint8)
    elif mode.startswith("I") or mode == "F":
        a = np.asarray(img)
        if mode == "F":
            a = a.astype(np.float64)
            a = a * 255.0 if (a.size and np.nanmin(a) >= 0 and np.nanmax(a) <= 1.0) else a
        else:
            a = a.astype(np.float64)
            if a.size and a.max() > 255:
                a = a * (255.0 / 65535.0)
        arr = np.clip(np.nan_to_num(np.rint(a)), 0, 255).astype(np.uint8)
    else:  # CMYK, YCbCr, LAB, HSV, ...
        arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def decode_image(data: bytes) -> tuple[np.ndarray, str]:
    """Decode image bytes fully (truncation raises) -> (uint8 ``[C, H, W]``, C in {1, 2, 3, 4}; original mode)."""
    from PIL import Image, ImageOps

    if len(data) == 0:
        raise OSError("empty file (0 bytes)")
    with Image.open(io.BytesIO(data)) as img:
        img.load()  # raises on truncated/corrupt data (LOAD_TRUNCATED_IMAGES stays off)
        mode = img.mode
        if img.format in ("JPEG", "WEBP", "TIFF", "MPO"):
            try:
                img = ImageOps.exif_transpose(img)
            except Exception:  # odd EXIF: keep the stored orientation
                pass
        return pil_to_array(img), mode


# --------------------------------------------------------------------------- image folder / zip


def _label_parts(names: list[str]) -> tuple[list[str], str]:
    """Strip the folder prefix common to all ``names`` (posix relative paths); return (stripped, prefix)."""
    parts = [PurePosixPath(n).parts for n in names]
    prefix: list[str] = []
    while parts and all(len(p) > 1 for p in parts) and len({p[0] for p in parts}) == 1:
        prefix.append(parts[0][0])
        parts = [p[1:] for p in parts]
    return ["/".join(p) for p in parts], "/".join(prefix)


def _read_image_entries(entries: list[tuple[str, Callable[[], bytes]]], fmt: str, where: str,
                        dataset_json: Callable[[], bytes] | None) -> RawData:
    """Shared folder/zip logic. ``entries`` are (posix relative path, byte loader), any order."""
    if not entries:
        raise DataError(f"no images found in {where}: looked recursively for files ending in "
                        f"{', '.join(IMAGE_EXTENSIONS)} (any case). Point the data option at a folder or zip "
                        f"that contains images")
    entries = sorted(entries, key=lambda e: e[0])
    names = [e[0] for e in entries]
    images: list[np.ndarray] = []
    kept: list[str] = []
    skipped: list[dict] = []
    modes: dict[str, int] = {}
    for name, load in entries:
        try:
            arr, mode = decode_image(load())
        except Exception as e:  # noqa: BLE001 - any decode failure means "skip this file"
            msg = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "", str(e))
            if type(e).__name__ == "UnidentifiedImageError":
                msg = "not a recognised image (unknown format or corrupt header)"
            reason = f"{type(e).__name__}: {msg}"
            skipped.append({"path": name, "reason": reason})
            continue
        images.append(arr)
        kept.append(name)
        modes[mode] = modes.get(mode, 0) + 1

    notes: dict = {}
    labels = class_names = None
    if dataset_json is not None:
        labels, class_names = _labels_from_dataset_json(dataset_json(), kept, where)
        notes["labels_from"] = "dataset.json"
    else:
        stripped, prefix = _label_parts(names)
        if all("/" in s for s in stripped):
            first = [s.split("/", 1)[0] for s in stripped]
            class_names = sorted(set(first))
            index = {c: i for i, c in enumerate(class_names)}
            by_name = dict(zip(names, first))
            labels = np.array([index[by_name[n]] for n in kept], dtype=np.int64)
            notes["labels_from"] = f"first-level subfolders of {prefix or '.'!s}"
        else:
            notes["labels_from"] = None
    return RawData(images=images, labels=labels, class_names=class_names, format=fmt, split="train",
                   num_found=len(entries), skipped=skipped, modes=modes, notes=notes)


def _labels_from_dataset_json(data: bytes, kept: list[str], where: str):
    """StyleGAN-style ``dataset.json``: ``{"labels": [["rel/path.png", int], ...]}`` or ``{"labels": null}``."""
    import json

    try:
        table = json.loads(data.decode("utf-8")).get("labels")
    except Exception as e:  # noqa: BLE001
        raise DataError(f"dataset.json in {where} is not valid JSON with a 'labels' key: {e}") from None
    if table is None:
        return None, None
    lookup = {str(k).replace("\\", "/"): v for k, v in table}
    missing = [n for n in kept if n not in lookup]
    if missing:
        raise DataError(f"dataset.json in {where} has no label for {len(missing)} image(s), e.g. {missing[:5]}; "
                        f"add them or delete dataset.json to take labels from subfolders")
    try:
        labels = np.array([int(lookup[n]) for n in kept], dtype=np.int64)
    except (TypeError, ValueError):
        raise DataError(f"dataset.json in {where}: labels must be integers (class indices)") from None
    if labels.size and labels.min() < 0:
        raise DataError(f"dataset.json in {where}: labels must be >= 0")
    n_classes = int(labels.max()) + 1 if labels.size else 0
    return labels, [str(i) for i in range(n_classes)]


def _is_hidden(rel: str) -> bool:
    return any(p.startswith(".") or p == "__MACOSX" for p in PurePosixPath(rel).parts)


#: Files that together mark a degan run folder and a stage (level) folder: their PNGs are sample grids, not data.
_RUN_MARKERS = ({"config.yaml", "subset.json"}, {"masks.safetensors", "density.json"})


def _read_folder(path: Path, split: str) -> RawData:
    """Images below ``path`` (recursive, hidden entries skipped, symlink loops walked once).

    Raises:
        DataError: ``path`` is or holds a degan run or level folder (its PNGs are sample grids); see also
            :func:`_read_image_entries`.
    """
    _check_split(split, ("train",), f"image folder {str(path)!r} (a folder is one split; point at another "
                                    f"folder for test images)")
    entries = []
    seen_dirs: set[str] = set()  # real paths: a symlink back into the tree (a loop) is walked once, not forever
    for dirpath, dirnames, filenames in os.walk(path, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen_dirs:
            dirnames[:] = []
            continue
        seen_dirs.add(real)
        if any(marker <= set(filenames) for marker in _RUN_MARKERS):
            inner = Path(os.path.relpath(dirpath, path)).as_posix()
            where = "" if inner == "." else f" (it holds one: {inner})"
            raise DataError(f"{str(path)!r} is a degan run folder, not a dataset{where}: its images are sample "
                            "grids. Pass the image folder the run was trained on (data.json in the run names it)")
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d != "__MACOSX"
                       and os.path.realpath(os.path.join(dirpath, d)) not in seen_dirs]
        for fn in filenames:
            if fn.startswith(".") or not _has_ext(fn):
                continue
            full = os.path.join(dirpath, fn)
            rel = Path(os.path.relpath(full, path)).as_posix()
            entries.append((rel, lambda full=full: Path(full).read_bytes()))
    dj = path / "dataset.json"
    return _read_image_entries(entries, "image_folder", f"folder {str(path)!r}",
                               (lambda: dj.read_bytes()) if dj.is_file() else None)


def _escapes(name: str) -> bool:
    """Whether a zip member name is absolute or climbs out of the archive (``..``), also with backslashes."""
    p = PurePosixPath(name.replace("\\", "/"))
    return p.is_absolute() or ".." in p.parts or bool(re.match(r"^[A-Za-z]:", name))


def _read_zip(path: Path, split: str) -> RawData:
    """Images in a zip (same rules as a folder); nothing is extracted to disk.

    Raises:
        DataError: not a readable zip; a member name that is absolute or contains ``..`` (zip slip).
    """
    _check_split(split, ("train",), f"zip {str(path)!r} (a zip is one split)")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(f"{str(path)!r} is not a readable zip file ({e}); re-create the archive") from None
    with zf:
        unsafe = [i.filename for i in zf.infolist() if _escapes(i.filename)]
        if unsafe:
            raise DataError(f"zip {str(path)!r} has member names that point outside the archive (e.g. "
                            f"{', '.join(repr(n) for n in unsafe[:3])}): absolute paths or '..' parts, as in a "
                            "zip-slip attack. Re-create the archive with relative names inside it")
        infos = [i for i in zf.infolist() if not i.is_dir() and _has_ext(i.filename) and not _is_hidden(i.filename)]
        entries = [(i.filename, lambda i=i: zf.read(i)) for i in infos]
        dj = [i for i in zf.infolist() if i.filename == "dataset.json"]
        return _read_image_entries(entries, "zip", f"zip {str(path)!r}",
                                   (lambda: zf.read(dj[0])) if dj else None)


_add(Reader("image_folder", f"a folder of images ({', '.join(IMAGE_EXTENSIONS)}, recursive; "
            "labels from class subfolders or dataset.json)", detect=lambda p: p.is_dir(), read=_read_folder,
            priority=90))
_add(Reader("zip", "a .zip of images (same rules as a folder)",
            detect=lambda p: p.is_file() and p.suffix.lower() == ".zip", read=_read_zip, priority=40))


# --------------------------------------------------------------------------- CIFAR python archives


class _CifarUnpickler(pickle.Unpickler):
    """Unpickler that only resolves the numpy globals genuine CIFAR pickles need."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"), ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR archive")


def _unpickle(data: bytes, name: str) -> dict:
    try:
        obj = _CifarUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as e:  # noqa: BLE001
        raise DataError(f"cannot read CIFAR pickle {name!r}: {type(e).__name__}: {e}; "
                        f"re-download the archive") from None
    if not isinstance(obj, dict):
        raise DataError(f"CIFAR pickle {name!r} does not hold a dict")
    return obj


def _key(d: dict, key: str, name: str):
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    raise DataError(f"CIFAR pickle {name!r} has no {key!r} entry; is it a CIFAR python-version file?")


_CIFAR10_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
_CIFAR100_FILES = {"train": ["train"], "test": ["test"]}


def _cifar_variant(names: set[str]) -> str | None:
    if "batches.meta" in names and ({"test_batch", "data_batch_1"} & names):
        return "cifar10"
    if "meta" in names and ({"train", "test"} & names):
        return "cifar100"
    return None


def _cifar_from_files(files: dict[str, Callable[[], bytes]], split: str, where: str) -> RawData:
    variant = _cifar_variant(set(files))
    _check_split(split, SPLITS, f"CIFAR archive {where}")
    wanted = (_CIFAR10_FILES if variant == "cifar10" else _CIFAR100_FILES)[split]
    missing = [w for w in wanted if w not in files]
    if missing:
        raise DataError(f"CIFAR archive {where} is incomplete: missing {', '.join(missing)} for split {split!r}")
    meta_name = "batches.meta" if variant == "cifar10" else "meta"
    meta = _unpickle(files[meta_name](), meta_name)
    names_key = "label_names" if variant == "cifar10" else "fine_label_names"
    label_key = "labels" if variant == "cifar10" else "fine_labels"
    class_names = [n.decode() if isinstance(n, bytes) else str(n) for n in _key(meta, names_key, meta_name)]
    xs, ys = [], []
    for w in wanted:
        d = _unpickle(files[w](), w)
        x = np.asarray(_key(d, "data", w))
        y = np.asarray(_key(d, label_key, w), dtype=np.int64)
        if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072 or len(x) != len(y):
            raise DataError(f"CIFAR pickle {w!r} has data {x.dtype} {x.shape} and {len(y)} labels; expected "
                            f"uint8 rows of 3072 (3x32x32) with one label each")
        xs.append(x.reshape(-1, 3, 32, 32))
        ys.append(y)
    images = np.concatenate(xs)
    labels = np.concatenate(ys)
    if labels.size and (labels.min() < 0 or labels.max() >= len(class_names)):
        raise DataError(f"CIFAR archive {where}: labels outside [0, {len(class_names)})")
    return RawData(images=images, labels=labels, class_names=class_names, format=variant, split=split,
                   num_found=len(images), modes={"RGB": len(images)},
                   notes={"pickle": "restricted unpickler (numpy arrays only), encoding='bytes'",
                          "files": wanted})


def _cifar_dir(path: Path) -> Path | None:
    if not path.is_dir():
        return None
    for cand in (path, path / "cifar-10-batches-py", path / "cifar-100-python"):
        if cand.is_dir() and _cifar_variant({p.name for p in cand.iterdir() if p.is_file()}):
            return cand
    return None


def _read_cifar_dir(path: Path, split: str) -> RawData:
    d = _cifar_dir(path)
    assert d is not None
    files = {p.name: (lambda p=p: p.read_bytes()) for p in d.iterdir() if p.is_file()}
    raw = _cifar_from_files(files, split, repr(str(d)))
    raw.format += "_folder"
    return raw


def _is_cifar_tar(path: Path) -> bool:
    name = path.name.lower()
    if not path.is_file() or not name.endswith((".tar.gz", ".tgz", ".tar")):
        return False
    if "cifar" in name:
        return True
    try:
        with tarfile.open(path) as tf:
            first = tf.next()
            return first is not None and first.name.lstrip("./").startswith("cifar-")
    except (tarfile.TarError, OSError, EOFError):
        return False


def _read_cifar_tar(path: Path, split: str) -> RawData:
    _check_split(split, SPLITS, f"CIFAR archive {str(path)!r}")
    try:
        with tarfile.open(path) as tf:
            blobs = {}
            for m in tf.getmembers():
                base = PurePosixPath(m.name).name
                if m.isfile() and base in {"batches.meta", "meta", "train", "test", "test_batch",
                                           *_CIFAR10_FILES["train"]}:
                    f = tf.extractfile(m)
                    blobs[base] = f.read() if f is not None else b""
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"cannot read tar archive {str(path)!r}: {e}; re-download it") from None
    if _cifar_variant(set(blobs)) is None:
        raise DataError(f"{str(path)!r} is a tar archive but holds no CIFAR-10/100 python batches "
                        f"(batches.meta + data_batch_N, or meta + train/test)")
    raw = _cifar_from_files({k: (lambda v=v: v) for k, v in blobs.items()}, split, repr(str(path)))
    raw.format += "_tar"
    return raw


_add(Reader("cifar_folder", "an extracted CIFAR-10/100 python folder (batches.meta + data_batch_1..5/test_batch, "
            "or meta + train/test)", detect=lambda p: _cifar_dir(p) is not None, read=_read_cifar_dir, priority=10))
_add(Reader("cifar_tar", "cifar-10-python.tar.gz / cifar-100-python.tar.gz", detect=_is_cifar_tar,
            read=_read_cifar_tar, priority=11))


# --------------------------------------------------------------------------- MNIST-style idx files

_IDX_IMAGES = re.compile(r"images[-.]idx3[-.]ubyte(\.gz)?$", re.IGNORECASE)


def _open_maybe_gz(path: Path) -> bytes:
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise DataError(f"{str(path)!r} is a damaged gzip file ({e}); re-download it") from None
    return data


def _parse_idx(path: Path, ndim: int) -> np.ndarray:
    data = _open_maybe_gz(path)
    magic = 0x0800 | ndim
    if len(data) < 4 + 4 * ndim or int.from_bytes(data[:4], "big") != magic:
        got = data[:4].hex() if len(data) >= 4 else f"{len(data)} bytes"
        raise DataError(f"{str(path)!r} is not an idx file with {ndim} dimension(s): magic number "
                        f"{got}, expected {magic:08x}; is it the right (un-renamed) MNIST file?")
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    start = 4 + 4 * ndim
    n = int(np.prod(dims)) if dims else 0
    if len(data) - start != n:
        raise DataError(f"{str(path)!r} is truncated or padded: header says {dims} = {n} bytes of data, "
                        f"file holds {len(data) - start}; re-download it")
    return np.frombuffer(data, dtype=np.uint8, offset=start).reshape(dims).copy()


def _labels_path(images: Path) -> Path | None:
    name = re.sub(r"images([-.])idx3", r"labels\1idx1", images.name, flags=re.IGNORECASE)
    for cand in (name, name[:-3] if name.endswith(".gz") else name + ".gz"):
        if (images.parent / cand).is_file():
            return images.parent / cand
    return None


def _read_idx_images(img_path: Path, split: str, fmt: str) -> RawData:
    x = _parse_idx(img_path, 3)
    lab_path = _labels_path(img_path)
    labels = class_names = None
    if lab_path is not None:
        labels = _parse_idx(lab_path, 1).astype(np.int64)
        if len(labels) != len(x):
            raise DataError(f"{str(lab_path)!r} has {len(labels)} labels for {len(x)} images in "
                            f"{str(img_path)!r}; the files do not belong together")
        if "fashion" in str(img_path.resolve()).lower() and labels.size and labels.max() < 10:
            class_names = list(FASHION_MNIST_CLASSES)
        elif labels.size:
            class_names = [str(i) for i in range(int(labels.max()) + 1)]
    return RawData(images=x[:, None], labels=labels, class_names=class_names, format=fmt, split=split,
                   num_found=len(x), modes={"L": len(x)},
                   notes={"files": [img_path.name] + ([lab_path.name] if lab_path else [])})


def _idx_in_dir(path: Path, split: str) -> Path | None:
    prefix = {"train": "train", "test": "t10k"}[split]
    for suffix in ("-images-idx3-ubyte", "-images-idx3-ubyte.gz", "-images.idx3-ubyte", "-images.idx3-ubyte.gz"):
        if (path / (prefix + suffix)).is_file():
            return path / (prefix + suffix)
    return None


def _read_idx_dir(path: Path, split: str) -> RawData:
    _check_split(split, SPLITS, f"idx folder {str(path)!r}")
    f = _idx_in_dir(path, split)
    if f is None:
        raise DataError(f"idx folder {str(path)!r} has no {split} images "
                        f"({'train' if split == 'train' else 't10k'}-images-idx3-ubyte[.gz])")
    return _read_idx_images(f, split, "idx_folder")


def _read_idx_file(path: Path, split: str) -> RawData:
    _check_split(split, SPLITS, f"idx file {str(path)!r}")
    low = path.name.lower()
    inferred = "test" if low.startswith(("t10k", "test")) else "train" if low.startswith("train") else split
    return _read_idx_images(path, inferred, "idx")


_add(Reader("idx_folder", "a folder with MNIST/Fashion-MNIST train-/t10k-images-idx3-ubyte[.gz] (+ labels)",
            detect=lambda p: p.is_dir() and any(_idx_in_dir(p, s) for s in SPLITS), read=_read_idx_dir,
            priority=20))
_add(Reader("idx", "an MNIST-style *-images-idx3-ubyte[.gz] file (labels from the matching "
            "*-labels-idx1-ubyte[.gz] beside it)", detect=lambda p: p.is_file() and bool(_IDX_IMAGES.search(p.name)),
            read=_read_idx_file, priority=21))


# --------------------------------------------------------------------------- numpy .npz

_NPZ_KEYS = {"x_train": ("x_train", "y_train", "train"), "x_test": ("x_test", "y_test", "test"),
             "images": ("images", "labels", "train"), "x": ("x", "y", "train")}


def array_to_nchw(x: np.ndarray, what: str) -> tuple[np.ndarray, str]:
    """An image array (NHWC, NCHW or NHW; uint8, integer in [0, 255], or float in [0, 1]) -> uint8 NCHW, C in {1, 3, 4}.

    Returns the array and the layout name. 4-channel arrays are RGBA; their alpha is kept (composited by
    :func:`degan.data.load_dataset` on ``data.background``). When both NHWC and
    NCHW readings are possible (the sizes of axes 1 and 3 are both channel counts), the one with square images wins.

    Raises:
        DataError: for another rank, an unsupported channel count, a layout that stays ambiguous (both or neither
            reading square), a 3-D array that looks like one HxWxC image, NaN/inf or out-of-range values.
    """
    shape, ch = tuple(x.shape), (1, 3, 4)
    if x.ndim == 3 and shape[2] in (3, 4) and shape[1] > shape[2]:
        raise DataError(f"{what} has shape {shape}: read as NHW it would be {shape[0]} grayscale images of "
                        f"{shape[1]}x{shape[2]} pixels; if it is one HxWxC image, store it as NHWC with a leading "
                        f"image axis, shape (1, {shape[0]}, {shape[1]}, {shape[2]})")
    if x.ndim == 4 and shape[-1] in ch and shape[1] in ch and (shape[1] == shape[2]) == (shape[2] == shape[3]):
        raise DataError(f"{what} has shape {shape}, ambiguous between NHWC ({shape[1]}x{shape[2]} images with "
                        f"{shape[3]} channels) and NCHW ({shape[2]}x{shape[3]} images with {shape[1]} channels); "
                        f"store square images as NHWC (N, H, W, C) or NCHW (N, C, H, W) with H = W")
    if x.ndim == 3:
        x, layout = x[:, None], "NHW"
    elif x.ndim == 4 and shape[-1] in ch and not (shape[1] in ch and shape[2] == shape[3]):
        x, layout = x.transpose(0, 3, 1, 2), "NHWC"
    elif x.ndim == 4 and shape[1] in ch:
        layout = "NCHW"
    else:
        raise DataError(f"{what} has shape {x.shape}; expected images as NHWC or NCHW with 1, 3 or 4 channels, "
                        f"or NHW grayscale")
    if x.dtype == np.uint8:
        pass
    elif np.issubdtype(x.dtype, np.floating):
        bad = int(x.size - np.count_nonzero(np.isfinite(x)))
        if bad:
            raise DataError(f"{what} holds {bad} NaN/inf value(s) (e.g. {x[~np.isfinite(x)].flat[0]}); images must "
                            "be finite: fix or drop those images, floats in [0, 1] or uint8 in [0, 255]")
        lo, hi = (float(np.min(x)), float(np.max(x))) if x.size else (0.0, 1.0)
        if lo < -1e-6 or hi > 1 + 1e-6:
            raise DataError(f"{what} is float with values in [{lo:.4g}, {hi:.4g}]; float images must be in "
                            f"[0, 1] (or store uint8 in [0, 255])")
        x = np.rint(np.clip(x, 0, 1) * 255).astype(np.uint8)
    elif np.issubdtype(x.dtype, np.integer):
        if x.size and (x.min() < 0 or x.max() > 255):
            raise DataError(f"{what} is {x.dtype} with values in [{x.min()}, {x.max()}]; integer images must be "
                            f"in [0, 255]")
        x = x.astype(np.uint8)
    else:
        raise DataError(f"{what} has dtype {x.dtype}; expected uint8, integers in [0, 255] or floats in [0, 1]")
    return np.ascontiguousarray(x), layout


def _read_npz(path: Path, split: str) -> RawData:
    _check_split(split, SPLITS, f"npz {str(path)!r}")
    try:
        z = np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001
        raise DataError(f"cannot read {str(path)!r} as a numpy .npz ({type(e).__name__}: {e}); it may be truncated "
                        "or not an .npz: re-create it with numpy.savez") from None
    with z:
        keys = set(z.files)
        cands = [(k, lk) for k, (_, lk, s) in _NPZ_KEYS.items() if k in keys and s == split]
        if not cands:
            available = sorted({s for k, (_, _, s) in _NPZ_KEYS.items() if k in keys})
            if available:
                raise DataError(f"npz {str(path)!r} has no {split!r} split (it has {', '.join(available)}; "
                                f"keys: {', '.join(sorted(keys))})")
            raise DataError(f"npz {str(path)!r} has no image array: expected keys x_train/y_train (+ x_test/y_test), "
                            f"images/labels, or x/y; found {', '.join(sorted(keys)) or 'none'}")
        key, lkey = cands[0]
        try:
            x = z[key]
            y = z[lkey] if lkey in keys else None
            names = z["label_names"] if "label_names" in keys else None
        except ValueError as e:  # object arrays need pickle
            raise DataError(f"npz {str(path)!r}: {e}; store plain numeric/string arrays (no pickled objects)") from None
    x, layout = array_to_nchw(x, f"npz {str(path)!r} key {key!r}")
    labels = class_names = None
    if y is not None:
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"npz {str(path)!r}: {lkey!r} must be integer class indices of shape ({len(x)},), "
                            f"got {y.dtype} {y.shape}")
        labels = y.astype(np.int64)
        if labels.size and labels.min() < 0:
            raise DataError(f"npz {str(path)!r}: {lkey!r} has negative labels")
    if names is not None:
        class_names = [n.decode() if isinstance(n, bytes) else str(n) for n in names.reshape(-1).tolist()]
    elif labels is not None and labels.size:
        class_names = [str(i) for i in range(int(labels.max()) + 1)]
    if labels is not None and class_names is not None and labels.size and labels.max() >= len(class_names):
        raise DataError(f"npz {str(path)!r}: labels go up to {labels.max()} but label_names has {len(class_names)}")
    return RawData(images=x, labels=labels, class_names=class_names, format="npz", split=split,
                   num_found=len(x), modes={layout: len(x)}, notes={"keys": [key] + ([lkey] if y is not None else [])})


_add(Reader("npz", "a numpy .npz with x_train/y_train (+ x_test/y_test), images/labels or x/y; "
            "optional label_names", detect=lambda p: p.is_file() and p.suffix.lower() == ".npz", read=_read_npz,
            priority=30))


# --------------------------------------------------------------------------- builtins


def _faces100(split: str) -> RawData:
    """The first 100 images of scikit-image's ``lfw_subset.npy`` (real LFW face crops, 25x25 grayscale)."""
    import importlib.util

    _check_split(split, ("train",), "builtin 'faces100' (100 images, one split)")
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("builtin 'faces100' needs the file lfw_subset.npy from scikit-image: "
                        "pip install scikit-image")
    f = Path(list(spec.submodule_search_locations)[0]) / "data" / "lfw_subset.npy"
    if not f.is_file():
        raise DataError(f"builtin 'faces100': {str(f)!r} is missing; reinstall with pip install scikit-image")
    a = np.load(f, allow_pickle=False)
    if a.ndim != 3 or len(a) < 100:
        raise DataError(f"builtin 'faces100': {str(f)!r} has shape {a.shape}, expected (200, 25, 25)")
    x = np.rint(np.clip(a[:100].astype(np.float64), 0, 1) * 255).astype(np.uint8)[:, None]
    return RawData(images=x, labels=None, class_names=None, format="builtin", split="train", num_found=100,
                   modes={"L": 100}, notes={"file": str(f), "builtin": "faces100: first 100 of lfw_subset.npy, "
                                                                       "uint8 = round(x * 255)"})


BUILTINS.register("faces100")(Builtin("faces100", "100 real 25x25 grayscale LFW faces from scikit-image", _faces100))


def iter_readers() -> Iterator[Reader]:
    """The registered readers in detection order."""
    return iter(sorted((FORMATS.get(n) for n in FORMATS.names()), key=lambda r: r.priority))
