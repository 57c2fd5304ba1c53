"""Atomic file writes: a file appears complete or not at all (write to a temp file, fsync, rename)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def writes_enabled() -> bool:
    """False on the ranks > 0 of a multi-process (DDP) run: only rank 0 writes into run folders.

    On those ranks :func:`atomic_path` hands out a throw-away temporary path and :func:`append_jsonl` does nothing,
    so the same code runs on every rank and only rank 0's files appear (see :mod:`degan.train.distributed`).
    """
    import sys

    dist = sys.modules.get("torch.distributed")
    return not (dist is not None and dist.is_available() and dist.is_initialized() and dist.get_rank() != 0)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    On an exception the temporary file is removed and ``path`` is left untouched. On DDP ranks > 0 the path is a
    throw-away file and ``path`` is not written (:func:`writes_enabled`).
    """
    if not writes_enabled():
        with tempfile.TemporaryDirectory(prefix="degan-rank-") as d:
            yield Path(d) / Path(path).name
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp_path, path)
    except BaseException as e:
        written = tmp_path.stat().st_size if tmp_path.exists() else 0
        tmp_path.unlink(missing_ok=True)
        if isinstance(e, Exception) and is_disk_full(e, path.parent, written):
            raise disk_full_error(path, written) from e
        raise


_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def is_disk_full(exc: BaseException, folder: str | os.PathLike, written: int = 0) -> bool:
    """Whether ``exc`` (raised while writing into ``folder``) means the file system is full.

    An ``OSError`` with ENOSPC / EDQUOT is; so is any other write error (torch's zip writer raises a
    ``RuntimeError("unexpected pos ...")``) when the folder's file system has less free space than what the write
    had already written, or under 1 MiB.
    """
    if isinstance(exc, OSError) and exc.errno in _DISK_FULL_ERRNOS:
        return True
    if not isinstance(exc, (OSError, RuntimeError)):
        return False
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return False
    return free < max(written, 1 << 20)


def disk_full_error(path: str | os.PathLike, written: int = 0) -> OSError:
    """The one-line :class:`~degan.errors.DiskFullError` for a failed write of ``path``."""
    from .errors import DiskFullError

    folder = Path(path).parent
    try:
        free = f"{shutil.disk_usage(folder).free / 2**20:.1f} MiB free"
    except OSError:
        free = "free space unknown"
    need = f"; the write had reached {written / 2**20:.1f} MiB" if written else ""
    return DiskFullError(errno.ENOSPC, f"the disk is full: writing {Path(path).name} into {folder} failed ({free}"
                         f"{need}). Nothing already written was damaged; free some space and continue with "
                         "--resume latest")


def check_writable_folder(path: str | os.PathLike, what: str = "--outdir") -> None:
    """Check, before anything is written, that ``path`` is or can become a folder this process writes into.

    Nothing is created: the nearest existing folder on the way to ``path`` must be a folder with write permission
    (:func:`os.access`, which also reports a read-only file system).

    Raises:
        DeganError: a file is in the way, or the folder is not writable (permission, read-only file system).
    """
    from .errors import DeganError

    p = Path(path).absolute()
    probe = p
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        where = "is a file" if probe == p else f"is below {str(probe)!r}, which is a file"
        raise DeganError(f"{what} {str(path)!r} {where}, not a folder; choose a folder for the run folders")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise DeganError(f"{what} {str(path)!r} is not writable ({str(probe)!r}: permission denied or a read-only "
                         f"file system); choose a folder you can write to")


def atomic_write(path: str | os.PathLike, writer: Callable[[Path], Any]) -> None:
    """Call ``writer(tmp_path)`` and move the result onto ``path`` atomically."""
    with atomic_path(path) as tmp:
        writer(tmp)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON line to ``path`` (line-buffered; a torn last line is skipped by :func:`read_jsonl`).

    Nothing is written on DDP ranks > 0 (:func:`writes_enabled`)."""
    if not writes_enabled():
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, default=str) + "\n")
            f.flush()
    except OSError as e:
        if e.errno in _DISK_FULL_ERRNOS:
            raise disk_full_error(path) from e
        raise


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSONL file; a missing file is empty and an incomplete last line is ignored."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


#: Temporary files a killed write can leave: ``.<name>.<random>.tmp`` of :func:`atomic_path` and ``.tmp<random>``
#: (``tempfile``'s default names).
_STALE_TEMP = re.compile(r"^\..+\.tmp$|^\.tmp[A-Za-z0-9_]{6,}$")


def remove_stale_temps(root: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Remove the temporary files that interrupted atomic writes left under ``root`` (recursively, or only directly
    in ``root`` with ``recursive=False``).

    Call it only where no other process writes into ``root`` (a stage being resumed by its only writer).

    Returns:
        The removed paths. Nothing is removed on DDP ranks > 0.
    """
    root = Path(root)
    if not writes_enabled() or not root.is_dir():
        return []
    removed = []
    for p in root.rglob(".*") if recursive else root.glob(".*"):
        if p.is_file() and not p.is_symlink() and _STALE_TEMP.match(p.name):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def truncate_jsonl(path: str | os.PathLike, keep: Callable[[dict], bool]) -> int:
    """Rewrite a JSONL file atomically with only the records where ``keep(record)`` is true (a torn last line is
    dropped too). A missing file stays missing.

    Returns:
        The number of records removed.
    """
    path = Path(path)
    if not writes_enabled() or not path.exists():
        return 0
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    kept = []
    for line in lines:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if keep(rec):
            kept.append(line)
    removed = len(lines) - len(kept)
    if removed:
        write_text(path, "".join(ln + "\n" for ln in kept))
    return removed
