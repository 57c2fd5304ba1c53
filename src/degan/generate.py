"""Images from a trained generator: seed grids, single PNGs, class rows, latent interpolations and videos.

Every image is a function of its seed: ``z = torch.randn(1, z_dim, generator=torch.Generator().manual_seed(seed))``,
so seed 7 gives the same image alone, in a grid or in a batch of any size (``degan generate RUN --seeds 0-63``).
Interpolations walk through the seeds' latents by spherical linear interpolation (slerp), which keeps the
in-between latents at the norm Gaussian latents have (White, *Sampling Generative Networks*, 2016,
arXiv:1609.04468); ``mode="lerp"`` gives the straight line. A conditional G (``G.num_classes > 0``) takes integer
labels: one class for every image, one grid row per class, or classes cycling over the images.

Videos: MP4 (H.264) through imageio with the ffmpeg binary of ``imageio-ffmpeg``; GIF through Pillow.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .fileio import atomic_path
from .report.grid import save_grid
from .train.loop import float_to_images

__all__ = ["seed_latents", "class_labels", "generate_images", "slerp", "interpolation_latents",
           "interpolation_images", "class_rows", "save_images", "write_video", "write_outputs", "VIDEO_SUFFIXES"]

VIDEO_SUFFIXES = (".mp4", ".gif")
"""Video formats :func:`write_video` writes."""


# ---------------------------------------------------------------------------------------------------------------------
# latents and labels


def seed_latents(seeds: Sequence[int], z_dim: int) -> Tensor:
    """One latent per seed, float32 ``[len(seeds), z_dim]``: row i = ``randn(1, z_dim)`` from
    ``torch.Generator().manual_seed(seeds[i])`` (independent of the other seeds).

    Raises:
        ValueError: no seeds, a negative seed or ``z_dim < 1``.
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("need at least one seed")
    if any(s < 0 for s in seeds):
        raise ValueError(f"seeds must be >= 0, got {min(seeds)}")
    if z_dim < 1:
        raise ValueError(f"z_dim must be >= 1, got {z_dim}")
    return torch.cat([torch.randn(1, z_dim, generator=torch.Generator().manual_seed(s)) for s in seeds])


def num_classes_of(G: nn.Module) -> int:
    """``G.num_classes`` (0 = unconditional, also for generators without the attribute)."""
    return int(getattr(G, "num_classes", 0) or 0)


def class_labels(G: nn.Module, n: int, class_index: int | None = None) -> Tensor | None:
    """Labels for ``n`` images of ``G``: None for an unconditional G; else long ``[n]`` all ``class_index``, or
    cycling ``0, 1, ..., K-1, 0, ...`` when ``class_index`` is None.

    Raises:
        ValueError: a class for an unconditional G, or a class outside ``[0, K)``.
    """
    k = num_classes_of(G)
    if k == 0:
        if class_index is not None:
            raise ValueError(f"this generator is unconditional (num_classes=0); --class {class_index} needs a "
                             "class-conditional run")
        return None
    if class_index is None:
        return torch.arange(n) % k
    if not 0 <= class_index < k:
        raise ValueError(f"class {class_index} is out of range: this generator has classes 0..{k - 1}")
    return torch.full((n,), int(class_index), dtype=torch.int64)


@torch.no_grad()
def generate_images(G: nn.Module, z: Tensor, labels: Tensor | None = None, batch_size: int = 64) -> Tensor:
    """``G(z)`` (or ``G(z, labels)``) in eval mode as uint8 ``[N, C, H, W]`` in [0, 255] on the CPU.

    Args:
        G: the generator (normally G_ema); its device is used.
        z: float ``[N, z_dim]``.
        labels: long ``[N]`` for a conditional G, else None.
        batch_size: latents per forward pass (the images do not depend on it).

    Raises:
        ValueError: ``z`` not ``[N, G.z_dim]``, or labels of another length.
    """
    if z.ndim != 2 or z.shape[1] != G.z_dim:
        raise ValueError(f"z must be [N, {G.z_dim}], got {tuple(z.shape)}")
    if labels is not None and labels.shape != (z.shape[0],):
        raise ValueError(f"labels must be long [{z.shape[0]}], got {tuple(labels.shape)}")
    device = next(iter(G.parameters()), torch.empty(0)).device
    was = G.training
    G.eval()
    try:
        out = []
        for i in range(0, z.shape[0], batch_size):
            zi = z[i:i + batch_size].to(device)
            x = G(zi) if labels is None else G(zi, labels[i:i + batch_size].to(device))
            out.append(float_to_images(x).cpu())
        return torch.cat(out)
    finally:
        G.train(was)


# ---------------------------------------------------------------------------------------------------------------------
# interpolation


def slerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """Spherical interpolation between latents ``a`` and ``b`` (float ``[z_dim]``) at ``t`` (float ``[T]`` in
    [0, 1]) -> ``[T, z_dim]``; exactly ``a`` at t = 0 and ``b`` at t = 1; falls back to lerp for (anti)parallel
    vectors."""
    t = t.to(a.dtype)[:, None]
    cos = torch.dot(a / a.norm(), b / b.norm()).clamp(-1.0, 1.0)
    omega = torch.arccos(cos)
    if float(torch.sin(omega).abs()) < 1e-6:
        out = (1 - t) * a + t * b
    else:
        out = (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)
    out[t[:, 0] == 0] = a
    out[t[:, 0] == 1] = b
    return out


def interpolation_latents(keys: Tensor, steps: int, mode: str = "slerp") -> Tensor:
    """Latents walking through ``keys`` (float ``[K, z_dim]``, K >= 2): ``[K - 1, steps, z_dim]``, row i going from
    ``keys[i]`` (first column) to ``keys[i + 1]`` (last column).

    Raises:
        ValueError: fewer than 2 keys, ``steps < 2`` or an unknown mode (``slerp``, ``lerp``).
    """
    if keys.ndim != 2 or keys.shape[0] < 2:
        raise ValueError(f"interpolation needs at least 2 latents (2 seeds), got {tuple(keys.shape)}")
    if steps < 2:
        raise ValueError(f"steps must be >= 2 (the two endpoints), got {steps}")
    if mode not in ("slerp", "lerp"):
        raise ValueError(f"unknown interpolation mode {mode!r}; choose slerp or lerp")
    t = torch.linspace(0, 1, steps)
    rows = []
    for a, b in zip(keys[:-1], keys[1:]):
        rows.append(slerp(a, b, t) if mode == "slerp" else (1 - t[:, None]) * a + t[:, None] * b)
    return torch.stack(rows)


def interpolation_images(G: nn.Module, seeds: Sequence[int], steps: int, class_index: int | None = None,
                         mode: str = "slerp") -> Tensor:
    """Images along the interpolation through the seeds' latents, uint8 ``[(len(seeds) - 1) * steps, C, H, W]``,
    row-major (row i: seed i -> seed i + 1). A conditional G uses ``class_index`` (default class 0) throughout.

    Raises:
        ValueError: as :func:`interpolation_latents` and :func:`class_labels`.
    """
    z = interpolation_latents(seed_latents(seeds, G.z_dim), steps, mode).reshape(-1, G.z_dim)
    if num_classes_of(G) > 0 and class_index is None:
        class_index = 0
    return generate_images(G, z, class_labels(G, z.shape[0], class_index))


def class_rows(G: nn.Module, seeds: Sequence[int]) -> Tensor:
    """One row per class, one column per seed (the same latent down a column): uint8 ``[K * len(seeds), C, H, W]``.

    Raises:
        ValueError: an unconditional G.
    """
    k = num_classes_of(G)
    if k == 0:
        raise ValueError("one row per class needs a class-conditional generator; this one has num_classes=0")
    z = seed_latents(seeds, G.z_dim).repeat(k, 1)
    labels = torch.arange(k).repeat_interleave(len(seeds))
    return generate_images(G, z, labels)


# ---------------------------------------------------------------------------------------------------------------------
# writing


def save_images(images: Tensor, names: Sequence[str], out_dir: str | Path) -> list[Path]:
    """One PNG per image (``out_dir/<name>.png``, written atomically): gray (``L``), RGB, or with alpha (C = 2: ``LA``,
    C = 4: ``RGBA``, a model trained with ``data.background=keep-alpha``).

    Raises:
        ValueError: not uint8 NCHW with 1 to 4 channels, or a different number of names.
    """
    from PIL import Image

    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 2, 3, 4):
        raise ValueError(f"images must be uint8 [N, 1|2|3|4, H, W], got {images.dtype} {tuple(images.shape)}")
    if len(names) != images.shape[0]:
        raise ValueError(f"{len(names)} names for {images.shape[0]} images")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, img in zip(names, images):
        arr = img.permute(1, 2, 0).numpy()
        path = out_dir / f"{name}.png"
        with atomic_path(path) as tmp:
            Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr).save(tmp, format="PNG")
        paths.append(path)
    return paths


def _frame_scale(size: int, target: int = 256) -> int:
    return max(1, math.ceil(target / size))


def write_video(frames: Tensor, path: str | Path, fps: int = 24, upscale: int | None = None) -> Path:
    """Write uint8 frames ``[T, C, H, W]`` as an MP4 (H.264, imageio-ffmpeg) or a looping GIF (Pillow), by suffix.

    Args:
        frames: uint8 ``[T, C, H, W]``, T >= 1, C in {1, 3}; C in {2, 4} (alpha last) is composited on black
            first (MP4 and GIF here carry no alpha).
        path: ``.mp4`` or ``.gif`` (written to a temporary file beside it, then renamed).
        fps: frames per second (>= 1).
        upscale: nearest-neighbour enlargement; None = to at least 256 px.

    Raises:
        ValueError: bad frames, fps or suffix.
        DeganError: MP4 asked but imageio / imageio-ffmpeg are not installed (the message suggests ``.gif``).
    """
    from PIL import Image

    from .errors import DeganError

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        raise ValueError(f"video file must end in {' or '.join(VIDEO_SUFFIXES)}, got {path.name!r}")
    if frames.dtype == torch.uint8 and frames.ndim == 4:
        from .metrics.inception import composite_on_black

        frames = composite_on_black(frames)
    if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[1] not in (1, 3) or frames.shape[0] == 0:
        raise ValueError(f"frames must be uint8 [T >= 1, 1|3, H, W], got {frames.dtype} {tuple(frames.shape)}")
    if fps < 1:
        raise ValueError(f"fps must be >= 1, got {fps}")
    scale = upscale or _frame_scale(max(frames.shape[2:]))
    arr = frames.repeat(1, 3 // frames.shape[1], 1, 1).permute(0, 2, 3, 1).numpy()  # [T, H, W, 3]
    arr = arr.repeat(scale, axis=1).repeat(scale, axis=2)
    if suffix == ".mp4":
        try:
            import imageio.v2 as imageio
            import imageio_ffmpeg  # noqa: F401
        except ImportError as e:
            raise DeganError(f"MP4 needs imageio and imageio-ffmpeg (pip install imageio imageio-ffmpeg; {e}); "
                             "or write a .gif") from None
        h, w = arr.shape[1:3]
        arr = np.pad(arr, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))  # H.264 / yuv420p wants even sizes
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".mp4", dir=path.parent)  # ffmpeg wants .mp4
        os.close(fd)
        try:
            writer = imageio.get_writer(tmp, format="FFMPEG", mode="I", fps=fps, codec="libx264",
                                        macro_block_size=1, quality=8, pixelformat="yuv420p")
            try:
                for frame in arr:
                    writer.append_data(frame)
            finally:
                writer.close()
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
    else:
        images = [Image.fromarray(f) for f in arr]
        with atomic_path(path) as tmp:
            images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:],
                           duration=max(1, round(1000 / fps)), loop=0)
    return path


def write_outputs(G: nn.Module, seeds: Sequence[int], *, grid: str | Path | None = None,
                  image_dir: str | Path | None = None, interp: bool = False, steps: int = 8,
                  video: str | Path | None = None, fps: int = 24, class_spec: str | None = None,
                  upscale: int = 1) -> list[Path]:
    """Everything ``degan generate`` writes, from one generator and a list of seeds.

    Args:
        G: the generator (G_ema of a finished stage).
        seeds: the seeds (one image each; the keyframes of interpolations).
        grid: PNG of all images (with ``interp``: the interpolation grid, one row per consecutive pair of seeds and
            ``steps`` columns; with ``class_spec="all"``: one row per class, one column per seed); None = none.
        image_dir: one PNG per seed here (``seed0007.png``; ``seed0007-class3.png`` with ``class_spec="all"``).
        interp: make ``grid`` an interpolation grid.
        steps: columns of the interpolation grid, endpoints included (>= 2).
        video: ``.mp4`` / ``.gif`` of the interpolation through the seeds, ``fps`` frames per pair of seeds (and a
            last frame on the last seed); None = none.
        fps: video frames per second.
        class_spec: conditional G only: ``"3"`` = class 3 for every image, ``"all"`` = one row per class; None =
            classes cycle over the images (interpolations: class 0).
        upscale: nearest-neighbour enlargement of the grid PNG.

    Returns:
        The paths written (grid, video, then the single images).

    Raises:
        ValueError: a class spec for an unconditional G, a class out of range, fewer than 2 seeds for an
            interpolation or video, or other bad values.
    """
    seeds = list(seeds)
    class_all = class_spec is not None and str(class_spec).strip().lower() == "all"
    class_index = None
    if class_spec is not None and not class_all:
        try:
            class_index = int(class_spec)
        except ValueError:
            raise ValueError(f"--class expects a class index or 'all', got {class_spec!r}") from None
    if class_all and num_classes_of(G) == 0:
        raise ValueError("--class all needs a class-conditional generator; this one has num_classes=0")
    class_labels(G, 1, class_index)  # checks the class early
    if (interp or video is not None) and len(seeds) < 2:
        raise ValueError(f"an interpolation needs at least 2 seeds, got {len(seeds)}")
    written: list[Path] = []
    single = None
    if grid is not None:
        if interp:
            imgs = interpolation_images(G, seeds, steps, class_index)
            written.append(save_grid(imgs, grid, nrow=steps, upscale=upscale))
        elif class_all:
            written.append(save_grid(class_rows(G, seeds), grid, nrow=len(seeds), upscale=upscale))
        else:
            single = generate_images(G, seed_latents(seeds, G.z_dim), class_labels(G, len(seeds), class_index))
            written.append(save_grid(single, grid, upscale=upscale))
    if video is not None:
        keys = seed_latents(seeds, G.z_dim)
        z = interpolation_latents(keys, fps + 1, "slerp")[:, :-1].reshape(-1, G.z_dim)  # fps frames per pair
        z = torch.cat([z, keys[-1:]])
        cls = class_index if class_index is not None or num_classes_of(G) == 0 else 0
        frames = generate_images(G, z, class_labels(G, z.shape[0], cls))
        written.append(write_video(frames, video, fps=fps))
    if image_dir is not None:
        if class_all:
            imgs = class_rows(G, seeds)
            k = num_classes_of(G)
            names = [f"seed{s:04d}-class{c}" for c in range(k) for s in seeds]
        else:
            imgs = single if single is not None else generate_images(
                G, seed_latents(seeds, G.z_dim), class_labels(G, len(seeds), class_index))
            names = [f"seed{s:04d}" for s in seeds]
        written += save_images(imgs, names, image_dir)
    return written
