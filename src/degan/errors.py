"""Errors a user can cause and fix. The CLI prints these as one clear message, never a traceback."""


class DeganError(Exception):
    """Base class of every error caused by user input (bad data, config, run folder, checkpoint)."""


class DataError(DeganError, ValueError):
    """The data is missing, empty, unreadable, or the subset request is impossible."""


class ConfigError(DeganError, ValueError):
    """A config key or value is unknown or invalid."""


class CheckpointError(DeganError, ValueError):
    """A checkpoint or mask does not match the model/config it is loaded into, or is corrupt."""


class TrainingDivergedError(DeganError, RuntimeError):
    """A loss became NaN or inf; the run stopped keeping its last good checkpoint."""


class DiskFullError(DeganError, OSError):
    """A write failed because its file system is full (ENOSPC) or over quota (EDQUOT). The file being written was
    not created (writes are atomic) and every earlier file is intact; free space and resume. CLI exit code 28
    (ENOSPC's number on Linux)."""

    exit_code = 28
