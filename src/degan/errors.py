"""Errors a user can cause and fix. The CLI prints these as one clear message, never a traceback."""


class DeganError(Exception):
    """Base class of every error caused by user input (bad data, config, run folder, checkpoint)."""


class DataError(DeganError, ValueError):
    """The data is missing, empty, unreadable, or the subset request is impossible."""


class SplitUnavailableError(DataError):
    """The data source has no such split (an image folder, a zip or ``faces100`` have only ``train``)."""


class ConfigError(DeganError, ValueError):
    """A config key or value is unknown or invalid."""


class CheckpointError(DeganError, ValueError):
    """A checkpoint or mask does not match the model/config it is loaded into, or is corrupt."""


class TrainingDivergedError(DeganError, RuntimeError):
    """A loss became NaN or inf; the run stopped keeping its last good checkpoint. CLI exit code 3 (not 2, which
    is bad input), so a script can tell "this training diverged: change the optimizer settings" from "this command
    was wrong"."""

    exit_code = 3


class DiskFullError(DeganError, OSError):
    """A write failed because its file system is full (ENOSPC) or over quota (EDQUOT). The file being written was
    not created (writes are atomic) and every earlier file is intact; free space and resume. CLI exit code 28
    (ENOSPC's number on Linux)."""

    exit_code = 28


class OutOfMemoryError(DeganError, MemoryError):
    """The CPU allocator or CUDA ran out of memory. The message names the batch, the batch per process, the
    micro-batch, the resolution, the model and width and the memory asked for, and suggests a setting that fits;
    checkpoints written before are intact, so the run continues with ``--resume latest`` (after ``--batch-gpu``
    changes: it is not part of the run hash). CLI exit code 12 (ENOMEM's number on Linux)."""

    exit_code = 12


class Interrupted(DeganError):
    """Training was stopped by Ctrl-C (SIGINT) or SIGTERM between two iterations, after writing a checkpoint of that
    moment; ``--resume latest`` continues bit-identically. CLI exit code 130 (128 + SIGINT)."""

    exit_code = 130
