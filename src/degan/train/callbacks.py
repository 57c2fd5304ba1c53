"""Callbacks of the training loop: progress bar, stats.jsonl, periodic checkpoints and sample grids."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable

import torch

from ..fileio import append_jsonl
from ..report.grid import save_grid
from .checkpoint import checkpoint_name, prune_old, save_checkpoint
from .loop import Callback, Trainer, float_to_images


class ProgressBar(Callback):
    """tqdm bar in kimg with sec/kimg, ETA and the current losses."""

    def __init__(self, desc: str = "train") -> None:
        self.desc = desc
        self.bar = None

    def on_train_start(self, trainer: Trainer) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=trainer.total_nimg, initial=min(trainer.state.cur_nimg, trainer.total_nimg),
                        unit="kimg", unit_scale=0.001, desc=self.desc, file=sys.stderr, dynamic_ncols=True,
                        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} kimg "
                                   "[{elapsed}<{remaining}{postfix}]", mininterval=1.0)
        self._last_nimg = min(trainer.state.cur_nimg, trainer.total_nimg)
        self._t0, self._n0 = time.perf_counter(), trainer.state.cur_nimg

    def on_step_end(self, trainer: Trainer, stats: dict[str, float]) -> None:
        if self.bar is None:
            return
        nimg = min(trainer.state.cur_nimg, trainer.total_nimg)  # the last iteration may overshoot total_kimg
        self.bar.update(nimg - self._last_nimg)
        self._last_nimg = nimg
        if trainer.state.step % 20 == 0:
            sec_per_kimg = (time.perf_counter() - self._t0) / max((nimg - self._n0) / 1000, 1e-9)
            self.bar.set_postfix_str(
                f"{sec_per_kimg:.1f} s/kimg, D {stats.get('loss_D', float('nan')):.3f}, "
                f"G {stats.get('loss_G', float('nan')):.3f}", refresh=False)

    def on_train_end(self, trainer: Trainer) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class StatsLogger(Callback):
    """Every ``log_kimg``, append the mean of the iteration stats to ``stats.jsonl``.

    Each line: kimg, step (G steps), cur_nimg (#RI), sec_per_kimg, wall_seconds, the averaged losses/logits and
    whatever ``extra()`` returns (e.g. densities).
    """

    def __init__(self, path: str | Path, log_kimg: float, extra: Callable[[], dict] | None = None) -> None:
        self.path, self.log_nimg, self.extra = Path(path), max(1, int(log_kimg * 1000)), extra
        self._sums: dict[str, float] = {}
        self._count = 0
        self._restored: tuple[float, int] | None = None

    def state_dict(self) -> dict:
        """The running sums of the interval not logged yet (register the logger in ``TrainState.extras`` so that
        a checkpoint between two records, e.g. at an interrupt, resumes to the same records)."""
        return {"sums": dict(self._sums), "count": self._count, "t": getattr(self, "_t", None),
                "n": getattr(self, "_n", None)}

    def load_state_dict(self, sd: dict) -> None:
        self._sums, self._count = {k: float(v) for k, v in sd.get("sums", {}).items()}, int(sd.get("count", 0))
        if sd.get("t") is not None and sd.get("n") is not None:
            self._restored = (float(sd["t"]), int(sd["n"]))

    def on_train_start(self, trainer: Trainer) -> None:
        self._next = (trainer.state.cur_nimg // self.log_nimg + 1) * self.log_nimg
        self._t, self._n = self._restored or (trainer.state.wall_seconds, trainer.state.cur_nimg)

    def _flush(self, trainer: Trainer) -> None:
        if not self._count:
            return
        s = trainer.state
        rec = {"kimg": round(s.kimg, 3), "step": s.step, "cur_nimg": s.cur_nimg,
               "sec_per_kimg": (s.wall_seconds - self._t) / max((s.cur_nimg - self._n) / 1000, 1e-9),
               "wall_seconds": round(s.wall_seconds, 2), "timestamp": time.time()}
        rec.update({k: v / self._count for k, v in self._sums.items()})
        if self.extra:
            rec.update(self.extra())
        append_jsonl(self.path, rec)
        self._sums, self._count = {}, 0
        self._t, self._n = s.wall_seconds, s.cur_nimg

    def on_step_end(self, trainer: Trainer, stats: dict[str, float]) -> None:
        for k, v in stats.items():
            self._sums[k] = self._sums.get(k, 0.0) + v
        self._count += 1
        if trainer.state.cur_nimg >= self._next:
            self._flush(trainer)
            self._next = (trainer.state.cur_nimg // self.log_nimg + 1) * self.log_nimg

    def on_train_end(self, trainer: Trainer) -> None:
        self._flush(trainer)


def check_finite_weights(state) -> None:
    """Raise if a floating-point tensor of G, D or G_ema is NaN or inf.

    A finite loss can still produce an inf gradient and so NaN weights after the optimizer step; the next loss
    would be NaN too, but a checkpoint written in between would hold the NaN weights. :class:`Snapshot` checks first,
    so every checkpoint on disk is a good one.

    Raises:
        TrainingDivergedError: naming the first non-finite tensor, the kimg and the G step.
    """
    from ..errors import TrainingDivergedError

    for name in ("G", "D", "G_ema"):
        for key, t in getattr(state, name).state_dict().items():
            if torch.is_tensor(t) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise TrainingDivergedError(
                    f"the weights of {name} ({key}) became NaN or inf at kimg {state.kimg:.2f} (G step "
                    f"{state.step}); training stopped without writing that checkpoint. Lower the learning rates "
                    "or check the data, then continue from the last checkpoint")


class Snapshot(Callback):
    """Every ``snap_kimg`` (and at the end): a checkpoint of the full state and a G_ema grid on fixed latents.

    Run it after the callbacks that log (:data:`degan.train.technique.CALLBACK_ORDER`): the checkpoint of kimg X then
    follows every record of X, and the one at the end of training is written in ``on_train_end``, after the final
    records.

    Args:
        ckpt_dir: folder of the periodic checkpoints (``ckpt-<cur_nimg>.pt``).
        sample_dir: folder of the sample grids (``fakes<kimg>.png``).
        snap_kimg: period in kimg.
        meta: extra entries saved in every checkpoint (config, subset indices, stage name...).
        grid_z: fixed latents for the grids, float [n, z_dim].
        keep: how many periodic checkpoints to keep.
        grid_c: class labels of the grid images, long [n], for a conditional G (e.g. one row per class); None for
            an unconditional G.
        nrow: images per grid row; None = a square grid.
    """

    def __init__(self, ckpt_dir: str | Path, sample_dir: str | Path, snap_kimg: float, meta: dict,
                 grid_z: torch.Tensor, keep: int = 2, grid_c: torch.Tensor | None = None,
                 nrow: int | None = None) -> None:
        self.ckpt_dir, self.sample_dir = Path(ckpt_dir), Path(sample_dir)
        self.snap_nimg, self.meta, self.grid_z, self.keep = max(1, int(snap_kimg * 1000)), meta, grid_z, keep
        self.grid_c, self.nrow = grid_c, nrow
        self.last_path: Path | None = None

    def on_train_start(self, trainer: Trainer) -> None:
        self._next = (trainer.state.cur_nimg // self.snap_nimg + 1) * self.snap_nimg
        if trainer.state.cur_nimg == 0:
            self.snapshot(trainer)

    def snapshot(self, trainer: Trainer, periodic: bool = True) -> Path:
        """Write the checkpoint of now and (``periodic``) the sample grids. ``periodic=False`` is the checkpoint of
        an interrupt (:class:`~degan.errors.Interrupted`): no grid, and the next periodic checkpoint removes it."""
        s = trainer.state
        path = self.ckpt_dir / checkpoint_name(s.cur_nimg)
        if not periodic and path.is_file() and self.last_path == path:
            return path  # the periodic checkpoint of this very iteration is the interrupt's: keep it periodic
        check_finite_weights(s)  # a checkpoint is always one training can continue from
        path = save_checkpoint(path, {"state": s.state_dict(), **self.meta})
        self.last_path = path
        marker = path.with_suffix(".interrupt")  # names the checkpoints of interrupts, which are temporary
        if not periodic:
            marker.touch()
            return path
        marker.unlink(missing_ok=True)
        for old in self.ckpt_dir.glob("ckpt-*.interrupt"):
            if old != marker:
                old.with_suffix(".pt").unlink(missing_ok=True)
                old.unlink(missing_ok=True)
        prune_old(self.ckpt_dir, self.keep)
        with torch.no_grad():
            z = self.grid_z.to(trainer.device)
            out = s.G_ema.eval()(z) if self.grid_c is None else s.G_ema.eval()(z, self.grid_c.to(trainer.device))
            fakes = float_to_images(out)
        save_grid(fakes, self.sample_dir / f"fakes{s.cur_nimg // 1000:06d}.png", nrow=self.nrow, upscale=2)
        save_grid(fakes, self.sample_dir / "fakes_latest.png", nrow=self.nrow, upscale=2)
        return path

    def on_step_end(self, trainer: Trainer, stats: dict[str, float]) -> None:
        # the last iteration's checkpoint is written by on_train_end, after the other callbacks' final records
        if self._next <= trainer.state.cur_nimg < trainer.total_nimg:
            self.snapshot(trainer)
            self._next = (trainer.state.cur_nimg // self.snap_nimg + 1) * self.snap_nimg

    def on_train_end(self, trainer: Trainer) -> None:
        if self.last_path is None or self.last_path.name != checkpoint_name(trainer.state.cur_nimg):
            self.snapshot(trainer)
