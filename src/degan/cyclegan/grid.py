"""Translations as images: batched translation of uint8 images, the translation grid, and the snapshot callback that
writes checkpoints and grids while a level trains."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from ..lottery.layout import StageLayout
from ..report.grid import save_grid
from ..train.checkpoint import checkpoint_name, prune_old, save_checkpoint
from ..train.loop import float_to_images, images_to_float

if TYPE_CHECKING:
    from .trainer import CycleTrainer


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
