"""Image grids written with Pillow (no torchvision needed)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..fileio import atomic_path


def make_grid(images: torch.Tensor | np.ndarray, nrow: int | None = None, pad: int = 1) -> np.ndarray:
    """Tile uint8 images [N, C, H, W] into one uint8 array [H', W', C] with ``pad`` pixels of zeros apart (black;
    transparent for images with alpha). C: 1 (gray), 3 (RGB), 2 / 4 (gray + alpha / RGBA, alpha last).

    Raises:
        ValueError: not uint8 NCHW with 1 to 4 channels, or N == 0.
    """
    x = images.cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1] not in (1, 2, 3, 4) or x.shape[0] == 0:
        raise ValueError(f"make_grid expects uint8 [N, 1|2|3|4, H, W] with N > 0, got {x.dtype} {x.shape}")
    n, c, h, w = x.shape
    nrow = nrow or int(math.ceil(math.sqrt(n)))
    ncol = int(math.ceil(n / nrow))
    grid = np.zeros((ncol * (h + pad) + pad, nrow * (w + pad) + pad, c), dtype=np.uint8)
    for i in range(n):
        r, q = divmod(i, nrow)
        y0, x0 = pad + r * (h + pad), pad + q * (w + pad)
        grid[y0:y0 + h, x0:x0 + w] = x[i].transpose(1, 2, 0)
    return grid


def save_grid(images: torch.Tensor | np.ndarray, path: str | Path, nrow: int | None = None,
              upscale: int = 1) -> Path:
    """Write a PNG grid of uint8 images [N, C, H, W] atomically (mode L, LA, RGB or RGBA for C = 1, 2, 3, 4: images
    with alpha give a PNG with alpha); ``upscale`` enlarges by nearest neighbour."""
    grid = make_grid(images, nrow)
    img = Image.fromarray(grid[..., 0] if grid.shape[2] == 1 else grid)
    if upscale > 1:
        img = img.resize((img.width * upscale, img.height * upscale), Image.NEAREST)
    path = Path(path)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return path
