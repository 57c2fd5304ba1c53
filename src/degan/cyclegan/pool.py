"""The image pool of generated images D trains on (Shrivastava et al. 2017, arXiv:1612.07828; CycleGAN §4)."""

from __future__ import annotations

import torch
from torch import Tensor


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
