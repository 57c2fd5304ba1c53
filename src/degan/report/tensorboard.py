"""Optional TensorBoard logging of a stage: the same scalars as ``stats.jsonl`` and ``monitor.jsonl``, and the G_ema
sample grid of every snapshot. JSONL stays the source of truth; this is a viewer's convenience
(``tensorboard --logdir runs/<run>``). Needs the ``tensorboard`` package (``pip install tensorboard``)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import DeganError
from ..train.loop import Callback, Trainer, float_to_images

__all__ = ["TensorBoardLogger"]

_MONITOR_KEYS = ("acc_train", "acc_heldout", "acc_fake", "logit_train", "logit_heldout", "logit_fake", "r_t", "gap")


class TensorBoardLogger(Callback):
    """Write scalars every ``log_kimg`` (means of the iteration stats, tag ``train/<name>``), the monitor's latest
    record (tag ``monitor/<name>``) and a G_ema grid on ``grid_z`` every ``snap_kimg`` (tag ``samples/G_ema``).
    The step axis is kimg x 1000 = ``cur_nimg`` (#RI).

    Args:
        log_dir: the event-file folder (``<stage>/tensorboard``).
        log_kimg: scalar period in kimg (> 0).
        snap_kimg: grid period in kimg (> 0).
        grid_z: fixed latents, float ``[n, z_dim]``.
        monitor: an :class:`~degan.train.monitor.OverfitMonitor` whose records are mirrored, or None.
        grid_c: long ``[n]`` class labels of the grid for a conditional G, or None.

    Raises:
        DeganError: the ``tensorboard`` package is not installed.
        ValueError: a non-positive period.
    """

    main_rank_only = True  # DDP: only rank 0 writes event files

    def __init__(self, log_dir: str | Path, log_kimg: float, snap_kimg: float, grid_z: torch.Tensor,
                 monitor=None, grid_c: torch.Tensor | None = None) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter  # noqa: F401
        except ImportError as e:
            raise DeganError("eval.tensorboard=true needs the tensorboard package: pip install tensorboard "
                             f"({e})") from None
        if not (log_kimg > 0 and snap_kimg > 0):
            raise ValueError(f"log_kimg and snap_kimg must be > 0, got {log_kimg}, {snap_kimg}")
        self.log_dir, self.grid_z, self.monitor = Path(log_dir), grid_z, monitor
        self.grid_c = grid_c
        self.log_nimg, self.snap_nimg = max(1, int(log_kimg * 1000)), max(1, int(snap_kimg * 1000))
        self.writer = None
        self._sums: dict[str, float] = {}
        self._count = 0
        self._monitor_seen = None

    def on_train_start(self, trainer: Trainer) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(self.log_dir))
        n = trainer.state.cur_nimg
        self._next_log = (n // self.log_nimg + 1) * self.log_nimg
        self._next_snap = (n // self.snap_nimg + 1) * self.snap_nimg
        if n == 0:
            self._grid(trainer)

    def _grid(self, trainer: Trainer) -> None:
        from .grid import make_grid

        G = trainer.state.G_ema
        was = G.training
        try:
            with torch.no_grad():
                z = self.grid_z.to(trainer.device)
                out = G.eval()(z) if self.grid_c is None else G.eval()(z, self.grid_c.to(trainer.device))
                imgs = float_to_images(out).cpu()
        finally:
            G.train(was)
        self.writer.add_image("samples/G_ema", make_grid(imgs), trainer.state.cur_nimg, dataformats="HWC")

    def _mirror_monitor(self, step: int) -> None:
        rec = getattr(self.monitor, "last", None)
        if rec is None or rec is self._monitor_seen:
            return
        for k in _MONITOR_KEYS:
            if rec.get(k) is not None:
                self.writer.add_scalar(f"monitor/{k}", rec[k], rec.get("cur_nimg", step))
        self._monitor_seen = rec

    def on_step_end(self, trainer: Trainer, stats: dict[str, float]) -> None:
        for k, v in stats.items():
            self._sums[k] = self._sums.get(k, 0.0) + float(v)
        self._count += 1
        n = trainer.state.cur_nimg
        if n >= self._next_log:
            self._flush(n)
            self._next_log = (n // self.log_nimg + 1) * self.log_nimg
        if n >= self._next_snap:
            self._grid(trainer)
            self._next_snap = (n // self.snap_nimg + 1) * self.snap_nimg
        self._mirror_monitor(n)

    def _flush(self, step: int) -> None:
        for k, v in self._sums.items():
            self.writer.add_scalar(f"train/{k}", v / max(self._count, 1), step)
        self._sums, self._count = {}, 0

    def on_train_end(self, trainer: Trainer) -> None:
        if self.writer is None:
            return
        if self._count:
            self._flush(trainer.state.cur_nimg)
        self._grid(trainer)
        self._mirror_monitor(trainer.state.cur_nimg)
        self.writer.close()
        self.writer = None
