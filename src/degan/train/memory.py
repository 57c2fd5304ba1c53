"""Out-of-memory faults: recognise them, explain them in one message, and find a micro-batch that fits.

- :func:`is_oom` recognises the CPU allocator's failure (``RuntimeError: ... DefaultCPUAllocator: can't allocate
  memory``, raised where an allocation is refused, e.g. under ``ulimit -v``) and CUDA's ``torch.OutOfMemoryError``.
  On Linux without a memory limit the kernel may instead kill the process (the OOM killer): nothing can be
  reported then, but checkpoints written before are intact and ``--resume latest`` continues.
- :func:`oom_error` turns one into :class:`~degan.errors.OutOfMemoryError` naming the batch, batch per process,
  micro-batch, resolution, model and width and the bytes asked for, and suggesting a ``--batch-gpu`` that should fit.
- :func:`probe_micro_batch` is ``--batch-gpu auto``: it runs real training iterations with micro-batches of
  ``B, B/2, B/4, ...`` (``B`` = the batch per process) on the live state and keeps the largest that fits, then puts
  the state back exactly as it was (the same ``state_dict`` a resume loads), so the run that follows is the same
  as one started with ``--batch-gpu <chosen>``. The total batch is kept by gradient accumulation
  (:class:`~degan.train.loop.Trainer` ``micro_batch``), as ``batch_gpu`` in the StyleGAN2-ADA reference code.
  On CPU a candidate whose peak memory, extrapolated from the smallest micro-batches, would exceed the memory
  available is skipped without trying it, so the probe does not wake the OOM killer.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import torch

from ..errors import OutOfMemoryError

__all__ = ["is_oom", "requested_bytes", "oom_error", "probe_micro_batch", "available_memory", "format_bytes"]

_CPU_OOM = re.compile(r"can't allocate memory|DefaultCPUAllocator|out of memory", re.IGNORECASE)


def is_oom(exc: BaseException) -> bool:
    """True for an out-of-memory error of the CPU allocator or of CUDA (``torch.OutOfMemoryError``), also when
    wrapped as the ``__cause__`` of another error; False for everything else (including ``MemoryError`` raised by
    plain Python code, which degan leaves alone)."""
    seen = 0
    while exc is not None and seen < 4:
        if isinstance(exc, getattr(torch, "OutOfMemoryError", ())) or isinstance(exc, OutOfMemoryError):
            return True
        if isinstance(exc, RuntimeError) and _CPU_OOM.search(str(exc)):
            return True
        exc, seen = exc.__cause__, seen + 1
    return False


def requested_bytes(exc: BaseException) -> int | None:
    """The size of the refused allocation from the error text, in bytes: CPU ``you tried to allocate N bytes``,
    CUDA ``Tried to allocate 2.00 GiB``; None if the text does not say."""
    text = str(exc)
    m = re.search(r"allocate (\d+) bytes", text)
    if m:
        return int(m.group(1))
    m = re.search(r"[Tt]ried to allocate ([\d.]+) ?(B|KiB|MiB|GiB|TiB)", text)
    if m:
        unit = {"B": 1, "KiB": 2 ** 10, "MiB": 2 ** 20, "GiB": 2 ** 30, "TiB": 2 ** 40}[m.group(2)]
        return int(float(m.group(1)) * unit)
    return None


def format_bytes(n: float | None) -> str:
    """``536870912`` -> ``'512 MiB'``; None -> ``'an unknown amount'``."""
    if n is None:
        return "an unknown amount"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit in ("B", "KiB") else f"{n:.1f} {unit}".replace(".0 ", " ")
        n /= 1024
    return f"{n:.1f} TiB"


def oom_error(exc: BaseException, *, where: str, model: str, width: float, resolution: int, batch: int,
              batch_per_process: int, micro_batch: int | None, device: str | torch.device,
              flag: str = "--batch-gpu ") -> OutOfMemoryError:
    """The one-message :class:`~degan.errors.OutOfMemoryError` for an OOM ``exc`` raised ``where`` (e.g. "the
    training step at kimg 1.2"); suggests half the micro-batch (>= 1), or a smaller ``--batch`` at 1.

    Args:
        batch: the total batch (``--batch``); batch_per_process: its share per process;
        micro_batch: images per pass (None = the whole share); device: where it ran (names the memory).
        flag: the option the suggestion sets (``"--batch-gpu "``; evaluation: ``"--set eval.batch_size="``).
    """
    per_pass = min(micro_batch or batch_per_process, batch_per_process)
    kind = "GPU" if torch.device(device).type == "cuda" else "CPU"
    asked = requested_bytes(exc)
    batches = (f"batch {batch} ({batch_per_process} per process, {per_pass} per pass)" if flag.startswith("--batch-gpu")
               else f"{per_pass} images per pass")
    msg = (f"out of {kind} memory in {where}: model {model} (width {width:g}) at {resolution} px, {batches}; an "
           f"allocation of {format_bytes(asked)} was refused")
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        try:
            free, total = torch.cuda.mem_get_info()
            msg += f" ({format_bytes(free)} of {format_bytes(total)} free)"
        except RuntimeError:
            pass
    elif (avail := available_memory()) is not None:
        msg += f" ({format_bytes(avail)} available)"
    if per_pass > 1 and flag.startswith("--batch-gpu"):
        msg += (f". Try --batch-gpu {max(1, per_pass // 2)} (keeps the batch of {batch} by gradient accumulation) or "
                f"--batch-gpu auto, then --resume latest")
    elif per_pass > 1:
        msg += f". Try {flag}{max(1, per_pass // 2)}, then --resume latest"
    else:
        msg += ". Even one image per pass does not fit: use a smaller --width or --resolution, or free memory"
    return OutOfMemoryError(msg)


def available_memory() -> int | None:
    """Bytes this process may still allocate on the CPU: ``MemAvailable`` of ``/proc/meminfo``, lowered to the
    cgroup limit's headroom (``memory.max - memory.current``) and to ``RLIMIT_AS`` minus the virtual size where
    those are set; None where none of these can be read (not Linux)."""
    out: list[int] = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                out.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:
        cg = Path("/sys/fs/cgroup")
        limit = (cg / "memory.max").read_text().strip()
        if limit != "max":
            out.append(int(limit) - int((cg / "memory.current").read_text().strip()))
    except (OSError, ValueError):
        pass
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft != resource.RLIM_INFINITY:
            out.append(soft - _status_kib("VmSize") * 1024)
    except (ImportError, OSError, ValueError):
        pass
    return max(0, min(out)) if out else None


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise ValueError(f"{field} not in /proc/self/status")


def _reset_peak() -> bool:
    """Reset this process's peak RSS (VmHWM) on Linux; False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _candidates(batch: int) -> list[int]:
    out, m = [], batch
    while m >= 1:
        out.append(m)
        if m == 1:
            break
        m = (m + 1) // 2
    return out


def probe_micro_batch(trainer, *, iterations: int = 1, headroom: float = 0.85, log=print) -> int:
    """``--batch-gpu auto``: the largest micro-batch (``B``, ``ceil(B/2)``, ... 1; ``B`` = the larger of the per-
    process D and G batches) with which ``iterations`` full training iterations of ``trainer`` run without an
    out-of-memory error; sets ``trainer.micro_batch`` to it and returns it.

    The probe trains on the live state (real reals, augmentations, every objective term), then restores the state
    from a deep copy of its ``state_dict`` (networks, optimizers, counters, RNG streams, technique state), so
    nothing of it reaches the run. Gradients stay local to each process during the probe; under DDP the ranks then
    agree on the smallest choice. CUDA: a candidate fits when its iterations run and the peak allocation stays
    within ``headroom`` of the device memory. CPU: the peak RSS of micro-batches ``B/8`` and ``B/4`` is
    extrapolated linearly; candidates predicted above ``headroom`` of :func:`available_memory` are
    skipped, the rest are tried.

    Raises:
        OutOfMemoryError: not even a micro-batch of 1 fits (from the caller's :func:`oom_error`; here the raw OOM
            of the last try is re-raised).
    """
    state = trainer.state
    saved = copy.deepcopy(state.state_dict())
    batch = max(trainer.batch_D, trainer.batch_G)
    device = torch.device(trainer.device)
    cuda = device.type == "cuda"
    old_micro, trainer.sync = trainer.micro_batch, False
    chosen, last_exc = None, None
    try:
        fit = None  # CPU: (m1, peak at m1, bytes per image, RSS now): extra bytes at m = p1 + slope * (m - m1) - rss
        if not cuda and batch >= 4 and _reset_peak() and (avail := available_memory()) is not None:
            rss = _status_kib("VmRSS") * 1024
            peaks = []
            for m in (max(1, batch // 8), max(2, batch // 4)):
                _reset_peak()
                trainer.micro_batch = m
                trainer.train_step()
                state.load_state_dict(copy.deepcopy(saved))
                peaks.append((m, _status_kib("VmHWM") * 1024))
            (m1, p1), (m2, p2) = peaks
            fit = (m1, p1, max(0.0, (p2 - p1) / (m2 - m1)), rss)
            base = avail
        for m in _candidates(batch):
            need = None if fit is None else max(0.0, fit[1] + fit[2] * (m - fit[0]) - fit[3])
            if need is not None and need > headroom * base:
                log(f"[degan] --batch-gpu auto: skip {m} per pass (about {format_bytes(need)} more needed, "
                    f"{format_bytes(base)} available)")
                continue
            trainer.micro_batch = m
            try:
                if cuda:
                    torch.cuda.reset_peak_memory_stats(device)
                for _ in range(iterations):
                    trainer.train_step()
                if cuda:
                    total = torch.cuda.get_device_properties(device).total_memory
                    if torch.cuda.max_memory_allocated(device) > headroom * total and m > 1:
                        raise torch.OutOfMemoryError(f"peak above {headroom:.0%} of the device memory")
                chosen = m
                break
            except Exception as e:  # noqa: BLE001 - only OOM is handled; anything else propagates
                if not is_oom(e):
                    raise
                last_exc = e
                log(f"[degan] --batch-gpu auto: {m} per pass does not fit ({str(e).splitlines()[0][:120]})")
            finally:
                for net in (state.G, state.D):
                    net.zero_grad(set_to_none=True)
                state.load_state_dict(copy.deepcopy(saved))
                if cuda:
                    torch.cuda.empty_cache()
    finally:
        trainer.sync = True
        state.load_state_dict(saved)
    if chosen is None:
        trainer.micro_batch = old_micro
        raise last_exc if last_exc is not None else torch.OutOfMemoryError("no micro-batch fits")
    from . import distributed as ddp

    if ddp.is_distributed():
        import torch.distributed as dist

        t = torch.tensor([chosen], device=device if cuda else "cpu")
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        chosen = int(t.item())
    trainer.micro_batch = chosen
    return chosen
