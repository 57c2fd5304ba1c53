"""Data-parallel training on several processes (DDP): one process per GPU (NCCL) or per CPU worker (gloo).

Launch with ``torchrun --nproc_per_node N -m degan.cli train ...`` or ``degan train --gpus N`` (``--nproc N`` for
CPU processes with gloo), which runs torchrun itself. Every process runs the same code on its own share of each
batch; the pieces that make that correct live here:

- :func:`init_from_env` joins the process group from torchrun's ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` /
  ``MASTER_ADDR`` / ``MASTER_PORT`` (nccl on CUDA, gloo on CPU) with a timeout (``$DEGAN_DIST_TIMEOUT_S``, default
  1800 s), so a rank that dies never leaves the others waiting forever.
- :func:`sync_gradients` averages the gradients of G or D over the ranks after each ``backward()`` (flattened into
  buckets, as NVlabs/stylegan2-ada-pytorch does). G and D are **not** wrapped in ``DistributedDataParallel``: the
  GAN steps toggle ``requires_grad``, run G under ``no_grad`` in the D step and D twice per step with AdvAug, which
  DDP's reducer does not expect. With identical initial weights (same init seed on every rank), averaged gradients
  and deterministic optimizers, the weights, the ticket masks and the RG-GAN thresholds stay identical on every
  rank; :func:`assert_in_sync` checks that (exact checksums) at the start and the end of every stage.
- :func:`sample_indices` draws each rank's reals from its own disjoint shard of the limited-data subset (scheme
  below).
- :class:`DistributedSync`, the first callback of a stage, counts #RI over all ranks, averages the logged stats,
  broadcasts rank 0's buffers (BatchNorm running statistics) and offsets the random streams per rank.
- Files: only rank 0 writes into the run folder (:func:`degan.fileio.writes_enabled` is False elsewhere; the
  writing callbacks run on rank 0 only, see :func:`stage_callbacks`); metrics run on rank 0 only and their result
  is broadcast where training needs it (RG-GAN's trigger). Checkpoints hold rank 0's state and load on any world
  size.

Batches: ``train.batch_D`` / ``train.batch_G`` are the **global** batches (what ``--batch`` sets); each rank takes
``batch / world_size`` (``--batch-gpu``); :func:`per_rank_batch` raises if the world size does not divide them.
BatchNorm normalises with each rank's own batch statistics (no SyncBatchNorm, as in StyleGAN2-ADA).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import sys
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..errors import DeganError

__all__ = [
    "DistContext", "DistributedSync", "all_reduce_mean", "assert_in_sync", "barrier", "broadcast_object", "context",
    "init_from_env", "is_distributed", "is_main", "launch_torchrun", "per_rank_batch", "rank", "sample_indices",
    "shard_bounds", "stage_callbacks", "sync_buffers", "sync_gradients", "world_size",
]

BUCKET_NUMEL = 1 << 24
"""Gradients are all-reduced in flat buckets of at most this many elements (64 MiB of fp32)."""

DEFAULT_TIMEOUT_S = 1800.0


# ---------------------------------------------------------------------------------------------------------------------
# the process group


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: ``rank`` in ``[0, world_size)``, ``local_rank`` on its machine, the backend
    (``nccl`` | ``gloo`` | ``None`` for a single process) and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def is_distributed() -> bool:
    """True when this process is one of several in an initialised process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank, 0 without a process group."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of training processes, 1 without a process group."""
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """True on rank 0 (and in a single process): the one that writes files and computes metrics."""
    return rank() == 0


def context() -> DistContext:
    """The current :class:`DistContext`."""
    if not is_distributed():
        return DistContext()
    backend = dist.get_backend()
    return DistContext(rank(), world_size(), int(os.environ.get("LOCAL_RANK", "0")), backend,
                       "cuda" if backend == "nccl" else "cpu")


def _timeout() -> datetime.timedelta:
    raw = os.environ.get("DEGAN_DIST_TIMEOUT_S", str(DEFAULT_TIMEOUT_S))
    try:
        seconds = float(raw)
    except ValueError:
        raise DeganError(f"DEGAN_DIST_TIMEOUT_S={raw!r} is not a number of seconds") from None
    return datetime.timedelta(seconds=seconds)


def init_from_env(device: str = "auto") -> DistContext:
    """Join the process group described by torchrun's environment; a no-op without ``WORLD_SIZE`` > 1.

    Args:
        device: ``cuda`` (NCCL, one GPU per local rank), ``cpu`` (gloo) or ``auto`` (cuda if available).

    Returns:
        The :class:`DistContext` of this process.

    Raises:
        DeganError: ``cuda`` asked for but fewer GPUs than local processes, or a malformed environment.
    """
    try:
        n = int(os.environ.get("WORLD_SIZE", "1"))
        r, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        raise DeganError("WORLD_SIZE / RANK / LOCAL_RANK must be integers (set by torchrun)") from None
    if n <= 1:
        return DistContext()
    if is_distributed():
        return context()
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        if local >= torch.cuda.device_count():
            raise DeganError(f"local rank {local} needs GPU {local} but only {torch.cuda.device_count()} are "
                             "visible; start at most that many processes per machine")
        torch.cuda.set_device(local)
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
    backend = "nccl" if use_cuda else "gloo"
    kw = {"device_id": torch.device("cuda", local)} if use_cuda else {}
    dist.init_process_group(backend, rank=r, world_size=n, timeout=_timeout(), **kw)
    return context()


def shutdown(failed: BaseException | None = None) -> None:
    """Leave the process group. After an error the group is aborted (peers blocked in a collective then fail
    instead of waiting for the timeout) and the error is printed with this rank's number."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    if failed is not None:
        print(f"[degan rank {dist.get_rank()}/{dist.get_world_size()}] {type(failed).__name__}: {failed}; "
              "aborting the process group", file=sys.stderr, flush=True)
    else:  # leave together: rank 0 hosts the TCP store, and a peer still talking to it while it tears down made
        # gloo abort rank 0 at exit ("terminate called without an active exception") now and then under load
        with contextlib.suppress(Exception):
            dist.barrier()
    with contextlib.suppress(Exception):
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if is_distributed():
        dist.barrier()


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. to create files); the others run it after rank 0 has left it."""
    if is_distributed() and not is_main():
        dist.barrier()
    yield
    if is_distributed() and is_main():
        dist.barrier()


def broadcast_object(obj, src: int = 0):
    """``obj`` of rank ``src`` on every rank (a picklable Python value)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_mean(values: Sequence[float]) -> list[float]:
    """Element-wise mean over the ranks of a list of floats (the same length on every rank)."""
    if not is_distributed() or not values:
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t)
    return (t / world_size()).tolist()


def _comm_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


# ---------------------------------------------------------------------------------------------------------------------
# batches and the data partition


def per_rank_batch(batch: int, name: str = "batch") -> int:
    """The per-rank share ``batch / world_size`` of a global batch.

    Raises:
        DeganError: the world size does not divide ``batch``.
    """
    n = world_size()
    if batch % n:
        raise DeganError(f"{name}={batch} is not divisible by the world size {n}; choose a total batch that is a "
                         f"multiple of {n} (each process takes batch / {n})")
    return batch // n


def shard_bounds(num_images: int, num_shards: int) -> list[tuple[int, int]]:
    """Contiguous, disjoint ``[start, end)`` ranges covering ``range(num_images)``, sizes differing by at most 1."""
    return [(r * num_images // num_shards, (r + 1) * num_images // num_shards) for r in range(num_shards)]


SHARD_SEED_SALT = 0x5EED_DA7A


def sample_indices(num_images: int, n: int, generator: torch.Generator, cur_nimg: int = 0) -> Tensor:
    """Indices of ``n`` reals for this rank: int64 [n] in ``[0, num_images)``.

    One process: ``n`` uniform draws with replacement from ``generator`` (the original sampling, unchanged).

    Several processes (stratified with-replacement sampling): at every draw a permutation of the whole subset,
    seeded by ``cur_nimg`` and therefore **the same on every rank**, is cut into ``world_size`` contiguous
    disjoint shards of ``floor`` or ``ceil(num_images / world_size)`` images (:func:`shard_bounds`); rank r draws its
    ``n`` indices uniformly with replacement from shard r, with its own (rank-offset) ``generator``. So

    - within a step the ranks' reals come from disjoint sets of images (no image on two ranks);
    - every image has the same expected count ``world_size * n / num_images`` per step as in single-process
      sampling (the permutation makes images exchangeable, so the +-1 shard sizes average out);
    - it works when the subset is smaller than the global batch (draws are with replacement; e.g. 100 images,
      8 ranks x 32: each rank draws 32 from its 12-13 images);
    - nothing depends on the world size of a previous run: resuming on another number of processes just cuts
      the permutation differently.

    Only with fewer images than ranks (``num_images < world_size``) can shards not be disjoint: a rank with an
    empty shard then uses image ``perm[rank % num_images]``.

    Args:
        num_images: size of the subset, >= 1.
        n: reals this rank needs.
        generator: this rank's ``batch`` stream (CPU ``torch.Generator``).
        cur_nimg: the run's #RI counter (any integer that every rank has at the same value at this draw).

    Raises:
        ValueError: ``num_images`` < 1.
    """
    if num_images < 1:
        raise ValueError(f"cannot draw reals from an empty image set (num_images={num_images})")
    w = world_size()
    if w == 1:
        return torch.randint(0, num_images, (n,), generator=generator)
    shared = torch.Generator().manual_seed((SHARD_SEED_SALT * 1_000_003 + int(cur_nimg)) % (2 ** 63))
    perm = torch.randperm(num_images, generator=shared)
    start, end = shard_bounds(num_images, w)[rank()]
    shard = perm[start:end] if end > start else perm[rank() % num_images:rank() % num_images + 1]
    return shard[torch.randint(0, shard.numel(), (n,), generator=generator)]


# ---------------------------------------------------------------------------------------------------------------------
# gradients, buffers, checks


def _buckets(tensors: list[Tensor], limit: int = BUCKET_NUMEL) -> Iterator[list[Tensor]]:
    bucket: list[Tensor] = []
    size = 0
    for t in tensors:
        if bucket and (size + t.numel() > limit or t.dtype != bucket[0].dtype or t.device != bucket[0].device):
            yield bucket
            bucket, size = [], 0
        bucket.append(t)
        size += t.numel()
    if bucket:
        yield bucket


def all_reduce_tensors_(tensors: list[Tensor], average: bool = True) -> None:
    """Sum (or average) tensors over the ranks in place, flattened into buckets."""
    if not is_distributed() or not tensors:
        return
    n = world_size()
    for bucket in _buckets(tensors):
        flat = torch.cat([t.reshape(-1) for t in bucket])
        dist.all_reduce(flat)
        if average:
            flat.div_(n)
        offset = 0
        for t in bucket:
            t.copy_(flat[offset:offset + t.numel()].view_as(t))
            offset += t.numel()


def sync_gradients(state, net: nn.Module, which: str) -> None:
    """After ``backward()`` of ``net`` (G or D): average its gradients over the ranks, then let the precision policy
    unscale them (fp16: a step with inf/NaN gradients is skipped by clearing them, see
    :meth:`degan.train.precision.Precision.unscale_`).

    Only parameters whose ``.grad`` is set take part; every rank runs the same code, so the set is the same.

    Args:
        state: the :class:`~degan.train.state.TrainState` (its ``extras["precision"]``, if any, is used).
        net: the network whose optimizer steps next.
        which: ``"G"`` or ``"D"`` (selects the loss scaler).
    """
    if is_distributed():
        all_reduce_tensors_([p.grad for p in net.parameters() if p.grad is not None])
    precision = state.extras.get("precision") if hasattr(state, "extras") else None
    if precision is not None:
        precision.unscale_(net, which)


def _is_mask_buffer(name: str) -> bool:
    return name == "mask" or name.endswith(".mask")


def sync_buffers(*nets: nn.Module, src: int = 0) -> None:
    """Broadcast the buffers of ``nets`` from rank ``src`` (BatchNorm running statistics, spectral-norm vectors),
    except the ticket masks, which agree anyway (:func:`assert_in_sync` checks them) and are large."""
    if not is_distributed():
        return
    bufs = [b for net in nets for name, b in net.named_buffers() if not _is_mask_buffer(name)]
    for bucket in _buckets(bufs):
        flat = torch.cat([b.reshape(-1) for b in bucket])
        dist.broadcast(flat, src=src)
        offset = 0
        for b in bucket:
            b.copy_(flat[offset:offset + b.numel()].view_as(b))
            offset += b.numel()


def checksum(t: Tensor) -> tuple[int, int]:
    """An exact fingerprint of a tensor's bits: ``(sum of the bit patterns, position-weighted sum)`` as ints.

    Equal tensors give equal fingerprints; a difference in any element changes it except with negligible chance.
    """
    x = t.detach().reshape(-1)
    if x.dtype == torch.bool:
        x = x.to(torch.int64)
    elif x.is_floating_point():
        x = x.float().view(torch.int32).to(torch.int64)
    else:
        x = x.to(torch.int64)
    weights = torch.arange(1, x.numel() + 1, device=x.device, dtype=torch.int64) % 65521
    return int(x.sum()), int((x * weights).sum())


def fingerprints(nets: dict[str, nn.Module], buffers: bool = False) -> dict[str, tuple[int, int]]:
    """``{"G.<param>": checksum}`` over the parameters (and with ``buffers`` the buffers, masks included)."""
    out = {}
    for key, net in nets.items():
        for name, p in net.named_parameters():
            out[f"{key}.{name}"] = checksum(p)
        if buffers:
            for name, b in net.named_buffers():
                out[f"{key}.{name}"] = checksum(b)
    return out


def assert_in_sync(nets: dict[str, nn.Module], buffers: bool = True, what: str = "") -> None:
    """Check that every rank holds bit-identical parameters (weights, RG-GAN thresholds) and buffers (ticket masks,
    BatchNorm statistics after :func:`sync_buffers`) of ``nets``; a no-op in a single process.

    Raises:
        RuntimeError: naming the first tensors that differ and the ranks.
    """
    if not is_distributed():
        return
    mine = fingerprints(nets, buffers)
    everyone: list = [None] * world_size()
    dist.all_gather_object(everyone, mine)
    bad = [(r, k) for r, theirs in enumerate(everyone) for k in mine if theirs.get(k) != mine[k]]
    if bad:
        names = sorted({k for _, k in bad})
        raise RuntimeError(f"ranks out of sync{(' ' + what) if what else ''}: {len(names)} tensors differ between "
                           f"rank {rank()} and rank(s) {sorted({r for r, _ in bad})}, e.g. {', '.join(names[:5])}")


# ---------------------------------------------------------------------------------------------------------------------
# the stage callback


GENERATOR_OFFSET = 1_000_003
"""Rank r > 0 re-seeds each random stream with (a draw from rank 0's stream state) + r * this."""


def offset_generators(generators: dict[str, torch.Generator], names: Iterable[str] = ("latent", "batch", "augment"),
                      r: int | None = None) -> None:
    """Give rank ``r`` > 0 its own latent / batch / augment streams, derived from their current state (the run's
    seed, or rank 0's state from a checkpoint); rank 0 keeps its streams untouched, so it reproduces a
    single-process run's draws and a checkpoint resumes it exactly. Weights init does not use these streams."""
    r = rank() if r is None else r
    if r == 0:
        return
    for name in names:
        g = generators.get(name)
        if g is None:
            continue
        probe = torch.Generator().manual_seed(0)
        probe.set_state(g.get_state())
        base = int(torch.randint(0, 2 ** 62, (1,), generator=probe))
        g.manual_seed((base + r * GENERATOR_OFFSET) % (2 ** 63))


class DistributedSync:
    """First callback of every stage under DDP (a no-op in a single process).

    - ``on_train_start``: checks that parameters and masks agree on all ranks, then offsets rank r's random
      streams (:func:`offset_generators`).
    - ``on_step_end``: turns the per-rank image count into the global #RI (``cur_nimg`` grows by
      ``world_size * batch_gpu`` per D step), broadcasts rank 0's buffers of G, D and G_ema (BatchNorm running
      statistics), and replaces each logged stat by its mean over the ranks (stats keys agree on all ranks).
    - ``on_train_end``: checks the networks again.

    Args:
        check_every: also check every this many iterations (0 = start and end only).
    """

    def __init__(self, check_every: int = 0) -> None:
        self.check_every = int(check_every)
        self._nimg: int | None = None
        self._iters = 0

    def _nets(self, trainer) -> dict[str, nn.Module]:
        s = trainer.state
        return {"G": s.G, "D": s.D, "G_ema": s.G_ema}

    def on_train_start(self, trainer) -> None:
        self._nimg = trainer.state.cur_nimg
        if not is_distributed():
            return
        sync_buffers(*self._nets(trainer).values())
        assert_in_sync(self._nets(trainer), what="at the start of training")
        offset_generators(trainer.state.generators)

    def on_step_end(self, trainer, stats: dict[str, float]) -> None:
        s = trainer.state
        if not is_distributed():
            self._nimg = s.cur_nimg
            return
        last = s.cur_nimg if self._nimg is None else self._nimg
        s.cur_nimg = last + (s.cur_nimg - last) * world_size()
        self._nimg = s.cur_nimg
        sync_buffers(*self._nets(trainer).values())
        keys = sorted(k for k, v in stats.items() if isinstance(v, (int, float)))
        for k, v in zip(keys, all_reduce_mean([stats[k] for k in keys])):
            stats[k] = v
        self._iters += 1
        if self.check_every and self._iters % self.check_every == 0:
            assert_in_sync(self._nets(trainer), what=f"at G step {s.step}")

    def on_train_end(self, trainer) -> None:
        if is_distributed():
            assert_in_sync(self._nets(trainer), what="at the end of training")


MAIN_RANK_ONLY = ("ProgressBar", "StatsLogger", "Snapshot", "OverfitMonitor", "TensorBoardLogger", "RewindPoint")
"""Callbacks that only write files or show progress: run on rank 0 only (a callback can also say so with a
``main_rank_only = True`` attribute). Callbacks that hold training state (ADA's p, RG-GAN, the FLOPs meter) run
on every rank."""


def stage_callbacks(callbacks: Sequence) -> list:
    """The callbacks of a stage for this rank: :class:`DistributedSync` first; on ranks > 0 without the ones that
    only write files. In a single process: the list unchanged."""
    if not is_distributed():
        return list(callbacks)
    keep = [cb for cb in callbacks if is_main() or not (getattr(cb, "main_rank_only", False)
                                                       or type(cb).__name__ in MAIN_RANK_ONLY)]
    return [DistributedSync(), *keep]


# ---------------------------------------------------------------------------------------------------------------------
# launching


def launch_torchrun(nproc: int, argv: Sequence[str], *, gpus: bool) -> int:
    """Run ``python -m torch.distributed.run --standalone --nproc_per_node nproc -m degan.cli <argv>`` and return
    its exit status (the children see torchrun's environment and join the group).

    Raises:
        DeganError: ``nproc`` < 1, or ``gpus`` and fewer CUDA devices than ``nproc``.
    """
    import subprocess

    if nproc < 1:
        raise DeganError(f"the number of processes must be >= 1, got {nproc}")
    if gpus:
        have = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if nproc > have:
            raise DeganError(f"--gpus {nproc} asks for more GPUs than are available ({have}); use --gpus {max(have, 1)}"
                             + (" or --nproc N for CPU processes" if have == 0 else ""))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "degan.cli", *argv]
    env = dict(os.environ)
    if not gpus:
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    return subprocess.call(cmd, env=env)


def global_mean_and_count(mean: float, n: int) -> tuple[float, int]:
    """Combine a per-rank mean of ``n`` values into the mean over all ranks' values and their total count
    (e.g. ADA's ``r_t`` over the global batch). Unchanged in a single process."""
    if not is_distributed():
        return float(mean), int(n)
    s, count = all_reduce_mean([float(mean) * n, float(n)])
    total = int(round(count * world_size()))
    return (s * world_size()) / max(total, 1), total


def check_gpus(n: int) -> None:
    """Raise if ``n`` GPUs are asked for but fewer are visible.

    Raises:
        DeganError: naming how many are available.
    """
    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n > have:
        raise DeganError(f"--gpus {n} asks for more GPUs than are available ({have})"
                         + ("; use --nproc N for data-parallel CPU processes" if have == 0 else f"; use --gpus {have}"))
