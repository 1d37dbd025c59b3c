"""What can go wrong, and the exit status each outcome gives.

Every problem a user can fix (a config key, a data file, a checkpoint, the run directory, the
launch environment) raises a subclass of `UserError`; its message names the key, file or variable.
Entry points catch `UserError` only, print its one line and exit with `ExitCode.BAD_INPUT`;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    ERROR = 1  # a bug, or a failure that is not the input's fault (CUDA, driver, DALI internals)
    BAD_INPUT = 2  # config, data, checkpoint or launch problem found before or during start-up
    NONFINITE = 4  # the loss stayed NaN/inf for train.nonfinite_limit steps
    PREEMPTED = 75  # stopped by SIGTERM/SIGINT after writing a checkpoint (EX_TEMPFAIL: run again)


class UserError(Exception):
    """Bad input that the user can fix; the message names what to change."""


class ConfigError(UserError):
    """A configuration value is wrong; the message names the key."""


class DataError(UserError):
    """The data on disk is missing or malformed; the message names the path."""


class BadImageError(DataError):
    """An image file cannot be read or decoded; the message names the file."""


class CheckpointError(UserError):
    """A checkpoint file is unreadable or belongs to a different run; the message names the file."""


class RunDirError(UserError):
    """The run directory cannot be used; the message names it."""


class LaunchError(UserError):
    """The process environment (torchrun variables, GPUs, backends) does not fit the job."""
