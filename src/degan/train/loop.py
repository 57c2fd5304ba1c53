"""THE training loop. New techniques arrive as objective terms or callbacks, never as copies of this loop.

One iteration = ``n_dis`` D steps (each on ``batch_D`` reals and as many fakes) + one G step on ``batch_G`` fakes
(+ a lazy G regularisation step when the objective asks for one, :meth:`Trainer._g_reg_phase`), then masks
re-enforced, the EMA updated and callbacks run. With ``micro_batch`` smaller than a batch, each step runs
its batch in micro-batches and accumulates their gradients (weighted by their share) before the one optimizer step. Training stops once ``total_kimg`` thousand real images
have been shown to D (#RI = ``cur_nimg``).
"""

from __future__ import annotations

import time
from typing import Sequence

import torch
from torch import Tensor

from ..errors import TrainingDivergedError
from ..losses import GANObjective
from ..pruning.mask import enforce_masks
from .distributed import sample_indices, sync_gradients
from .precision import autocast
from .state import TrainState, ema_update


class Callback:
    """Hooks called by :class:`Trainer`. Subclasses override what they need."""

    def on_train_start(self, trainer: "Trainer") -> None:
        """Before the first iteration (also after a resume)."""

    def on_step_end(self, trainer: "Trainer", stats: dict[str, float]) -> None:
        """After every iteration, with that iteration's stats."""

    def on_train_end(self, trainer: "Trainer") -> None:
        """After the last iteration."""


def images_to_float(images: Tensor) -> Tensor:
    """uint8 [N, C, H, W] in [0, 255] -> float32 in [-1, 1]."""
    return images.to(torch.float32).div_(127.5).sub_(1.0)


def float_to_images(x: Tensor) -> Tensor:
    """float [N, C, H, W] in [-1, 1] -> uint8 in [0, 255] (rounded, clamped)."""
    return ((x.detach().float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


class Trainer:
    """Runs GAN training on an in-memory set of real images.

    Args:
        state: the :class:`TrainState` (networks, optimizers, counters, RNG streams); mutated in place.
        images: the training images, uint8 [N, C, H, W] in [0, 255] (already the limited-data subset).
        objective: a :class:`~degan.losses.GANObjective` (loss + augmentation + extra terms).
        total_kimg: stop after this many thousand real images shown to D.
        batch_D: reals per D step. batch_G: fakes per G step. n_dis: D steps per G step.
        ema_decay: G_ema decay per G step, None = G_ema copies G.
        ema_start_step: G steps before the averaging starts; until then G_ema copies G (BigGAN: 1000). 0 = from
            the first step.
        mirror: random x-flip of reals (p = 0.5 per image).
        device: where to train.
        callbacks: called in order after each iteration.
        labels: class labels of ``images``, int64 [N] in ``[0, G.num_classes)``; needed when G is conditional
            (``G.num_classes > 0``), ignored (and no label randomness drawn) when it is not. Reals carry their
            labels; fakes get labels uniform over the classes from the seeded latent stream (drawn after z).
        micro_batch: images per forward/backward pass (``--batch-gpu``); None or >= the batch = one pass per step
            (bit-identical to the plain loop). Smaller: the batch's reals, latents and labels are drawn as before,
            then run in chunks of ``micro_batch`` whose losses are weighted by ``chunk / batch`` and whose
            gradients accumulate before the step, so the mean loss and the optimizer steps are those of the whole
            batch (up to float round-off; batch statistics such as BatchNorm's are per chunk). Stats are the
            weighted means over the chunks.

    Raises:
        ValueError: a conditional G without labels, labels of another length, or labels outside the classes.
        TrainingDivergedError: a loss became NaN or inf (the run stops; checkpoints written before remain).
    """

    def __init__(self, state: TrainState, images: Tensor, objective: GANObjective, *, total_kimg: float,
                 batch_D: int, batch_G: int, n_dis: int = 1, ema_decay: float | None = 0.999,
                 mirror: bool = False, device: str | torch.device = "cpu",
                 callbacks: Sequence[Callback] = (), labels: Tensor | None = None, ema_start_step: int = 0,
                 micro_batch: int | None = None) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 [N, C, H, W], got {images.dtype} {tuple(images.shape)}")
        self.state = state
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.objective = objective
        self.total_nimg = int(round(total_kimg * 1000))
        self.batch_D, self.batch_G, self.n_dis = batch_D, batch_G, n_dis
        self.ema_decay = ema_decay
        self.mirror = mirror
        self.callbacks = list(callbacks)
        self.z_dim = state.G.z_dim
        self.ema_start_step = int(ema_start_step)
        self.num_classes = int(getattr(state.G, "num_classes", 0) or 0)
        self.labels = None if self.num_classes == 0 else self._check_labels(labels, images.shape[0])
        if micro_batch is not None and not (isinstance(micro_batch, int) and micro_batch >= 1):
            raise ValueError(f"micro_batch must be an integer >= 1 or None, got {micro_batch!r}")
        self.micro_batch = micro_batch
        self.sync = True  # False while probing memory (train.memory): gradients stay local to this process

    def _check_labels(self, labels: Tensor | None, n: int) -> Tensor:
        k = self.num_classes
        if labels is None:
            raise ValueError(f"G is conditional (num_classes={k}) but no labels were given for the training images")
        labels = torch.as_tensor(labels).to(torch.long)
        if labels.shape != (n,):
            raise ValueError(f"labels must be int64 [N={n}], got {tuple(labels.shape)}")
        if n and (labels.min() < 0 or labels.max() >= k):
            raise ValueError(f"labels must lie in [0, {k}) for a G with num_classes={k}; got "
                             f"{int(labels.min())}..{int(labels.max())}")
        return labels.to(self.device)

    # -- data ---------------------------------------------------------------------------------------------------------
    def real_batch(self, n: int) -> tuple[Tensor, Tensor | None]:
        """n reals drawn with replacement (seeded), optionally x-flipped, as float [n, C, H, W] in [-1, 1], and
        their labels (int64 [n]; None for an unconditional G)."""
        gen = self.state.generators["batch"]
        idx = sample_indices(self.images.shape[0], n, gen, self.state.cur_nimg)  # own shard per DDP rank
        x = images_to_float(self.images[idx.to(self.device)])
        if self.mirror:
            flip = (torch.rand(n, generator=gen) < 0.5).to(self.device)
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        c = None if self.labels is None else self.labels[idx.to(self.device)]
        return x, c

    def latents(self, n: int) -> Tensor:
        """n latents z ~ N(0, I), float [n, z_dim], from the seeded latent stream."""
        return torch.randn(n, self.z_dim, generator=self.state.generators["latent"]).to(self.device)

    def fake_labels(self, n: int) -> Tensor | None:
        """n class labels uniform over ``[0, num_classes)``, int64 [n], from the seeded latent stream; None (and
        nothing drawn) for an unconditional G."""
        if self.num_classes == 0:
            return None
        return torch.randint(0, self.num_classes, (n,), generator=self.state.generators["latent"]).to(self.device)

    def _aug_gen(self) -> torch.Generator:
        return self.state.generators["augment"]

    # -- one iteration ------------------------------------------------------------------------------------------------
    def _check_finite(self, loss: Tensor, name: str) -> None:
        if not torch.isfinite(loss):
            raise TrainingDivergedError(
                f"{name} became {float(loss.detach())} at kimg {self.state.kimg:.2f} (G step {self.state.step}); "
                "training stopped. Lower the learning rates or check the data, then resume from the last checkpoint"
            )

    def _chunks(self, n: int) -> list[slice] | None:
        """Micro-batch slices of a batch of ``n``; None = one pass over the whole batch."""
        m = self.micro_batch
        if m is None or m >= n:
            return None
        return [slice(i, min(i + m, n)) for i in range(0, n, m)]

    def _backward(self, loss_fn, n: int, name: str) -> dict[str, float]:
        """``loss_fn(part)`` -> (loss, stats) for ``part`` = None (the whole batch) or a slice of it; runs backward
        over the whole batch or its micro-batches (losses weighted by their share) and returns the stats."""
        s = self.state
        parts = self._chunks(n)
        if parts is None:
            with autocast(s):
                loss, stats = loss_fn(None)
            self._check_finite(loss, name)
            loss.backward()
            return stats
        total: dict[str, float] = {}
        for part in parts:
            share = (part.stop - part.start) / n
            with autocast(s):
                loss, stats = loss_fn(part)
            self._check_finite(loss, name)
            (loss * share).backward()
            for k, v in stats.items():
                total[k] = total.get(k, 0.0) + float(v) * share
        return total

    def _optimizer_step(self, net, which: str, loss_fn, n: int, name: str) -> dict[str, float]:
        """One optimizer step of ``net`` (``which`` = "G" or "D"): zero the gradients, backward over the batch or its
        micro-batches (:meth:`_backward`), DDP all-reduce / fp16 unscale, ``opt.step()``, re-apply the masks."""
        s = self.state
        opt = s.opt_G if which == "G" else s.opt_D
        opt.zero_grad(set_to_none=True)
        stats = self._backward(loss_fn, n, name)
        if self.sync:
            sync_gradients(s, net, which)  # DDP all-reduce; fp16 unscale
        opt.step()
        enforce_masks(net)
        return stats

    def train_step(self) -> dict[str, float]:
        """One iteration: n_dis D steps, one G step, mask enforcement, EMA update. Returns the stats."""
        s = self.state
        G, D = s.G.train(), s.D.train()
        stats: dict[str, float] = {}
        G.requires_grad_(False)
        D.requires_grad_(True)
        for _ in range(self.n_dis):
            real, real_c = self.real_batch(self.batch_D)
            z = self.latents(self.batch_D)
            gen_c = self.fake_labels(self.batch_D)

            def d_loss(part, real=real, z=z, real_c=real_c, gen_c=gen_c):
                if part is None:
                    labels = {} if gen_c is None else {"c": (real_c, gen_c)}
                    return self.objective.d_loss(G, D, real, z, self._aug_gen(), **labels)
                labels = {} if gen_c is None else {"c": (real_c[part], gen_c[part])}
                return self.objective.d_loss(G, D, real[part], z[part], self._aug_gen(), **labels)

            d_stats = self._optimizer_step(D, "D", d_loss, real.shape[0], "loss_D")
            s.cur_nimg += real.shape[0]
            stats.update(d_stats)
            stats.update(self._d_reg_phase(G, D, real, real_c))
        G.requires_grad_(True)
        D.requires_grad_(False)
        z = self.latents(self.batch_G)
        gen_c = self.fake_labels(self.batch_G)

        def g_loss(part):
            if part is None:
                labels = {} if gen_c is None else {"c": gen_c}
                return self.objective.g_loss(G, D, z, self._aug_gen(), **labels)
            labels = {} if gen_c is None else {"c": gen_c[part]}
            return self.objective.g_loss(G, D, z[part], self._aug_gen(), **labels)

        g_stats = self._optimizer_step(G, "G", g_loss, z.shape[0], "loss_G")
        stats.update(g_stats)
        stats.update(self._g_reg_phase(G, D))
        D.requires_grad_(True)
        ema_update(s.G_ema, G, self.ema_decay if s.step >= self.ema_start_step else None)
        s.step += 1
        return stats

    def _g_reg_phase(self, G, D) -> dict[str, float]:
        """Lazy regularisation phase of G (StyleGAN2, Karras et al. 2020, Appendix B), run only when the objective
        asks for one: ``objective.g_reg_batch(batch_G, step) = n > 0`` (e.g. path-length regularisation every 4 G
        steps, :mod:`degan.train.path_length`) makes one separate ``opt_G`` step on ``objective.g_reg_loss`` over
        n fresh latents (and labels) of the latent stream, in micro-batches like the main step. Objectives without
        ``g_reg_batch`` draw nothing here, so training without such a term is unchanged."""
        s = self.state
        ask = getattr(self.objective, "g_reg_batch", None)
        n = ask(self.batch_G, s.step) if ask is not None else 0
        if not n:
            return {}
        z = self.latents(n)
        gen_c = self.fake_labels(n)

        def reg_loss(part):
            sl = slice(None) if part is None else part
            labels = {} if gen_c is None else {"c": gen_c[sl]}
            return self.objective.g_reg_loss(G, D, z[sl], self._aug_gen(), **labels)

        return self._optimizer_step(G, "G", reg_loss, n, "loss_G_reg")

    def _d_reg_phase(self, G, D, real: Tensor, real_c: Tensor | None) -> dict[str, float]:
        """Lazy regularisation phase of D (StyleGAN2 Appendix B), run only when the objective asks for one:
        ``objective.d_reg_batch(batch) = n > 0`` (R1 with ``r1.separate``, every 16 D steps, :mod:`degan.train.r1`)
        makes one separate ``opt_D`` step on ``objective.d_reg_loss`` over the first n reals of the D step just
        taken (the same reals, as StyleGAN2-ADA's ``Dreg`` phase; ``cur_nimg`` does not count them again), in
        micro-batches like the main step. Objectives without ``d_reg_batch`` draw and change nothing here."""
        ask = getattr(self.objective, "d_reg_batch", None)
        n = ask(real.shape[0]) if ask is not None else 0
        if not n:
            return {}
        real = real[:n]
        real_c = None if real_c is None else real_c[:n]

        def reg_loss(part):
            sl = slice(None) if part is None else part
            labels = {} if real_c is None else {"c": real_c[sl]}
            return self.objective.d_reg_loss(G, D, real[sl], self._aug_gen(), **labels)

        return self._optimizer_step(D, "D", reg_loss, n, "loss_D_reg")

    # -- the loop -----------------------------------------------------------------------------------------------------
    def run(self) -> TrainState:
        """Train until ``total_kimg``; resumes from ``state.cur_nimg`` if it is already > 0."""
        return run_with_callbacks(self)


class StopRequested(Exception):
    """Raised by :func:`run_with_callbacks` between two iterations when ``trainer.stop_requested()`` is true (a
    signal asked training to stop); the state is then consistent, so a checkpoint of it resumes bit-identically."""


def run_with_callbacks(trainer):
    """Drive ``trainer`` until ``trainer.state.cur_nimg >= trainer.total_nimg``: ``on_train_start`` callbacks, then
    ``train_step()`` + ``on_step_end`` per iteration, then ``on_train_end``; adds wall time (including the callbacks'
    snapshots and grids) to ``trainer.state.wall_seconds``. Shared by :class:`Trainer` and the CycleGAN trainer.

    If the trainer has a ``stop_requested`` callable, it is asked after every iteration (after the callbacks).

    Returns:
        ``trainer.state``.

    Raises:
        StopRequested: ``trainer.stop_requested()`` returned True (``on_train_end`` is not called).
    """
    stop = getattr(trainer, "stop_requested", None)
    for cb in trainer.callbacks:
        cb.on_train_start(trainer)
    tick = time.perf_counter()
    while trainer.state.cur_nimg < trainer.total_nimg:
        stats = trainer.train_step()
        now = time.perf_counter()
        trainer.state.wall_seconds += now - tick
        tick = now
        for cb in trainer.callbacks:
            cb.on_step_end(trainer, stats)
        if stop is not None and stop() and trainer.state.cur_nimg < trainer.total_nimg:
            raise StopRequested()
    for cb in trainer.callbacks:
        cb.on_train_end(trainer)
    return trainer.state
