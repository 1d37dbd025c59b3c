"""What can go wrong, and the exit status each outcome gives.

Every problem a user can fix (a config key, a data file, a checkpoint, the run directory, the
launch environment) raises a subclass of `UserError`; its message names the key, file or variable.
Entry points catch `UserError` only, print its one line and exit with the error's `exit_code`
(`ExitCode.BAD_INPUT`; `IO_ERROR` for a file that cannot be written: the environment needs fixing,
not the input); anything else is a bug and keeps its traceback. `EndReason` says why a training run ended; W&B and
runs/<name>/summary.json record it beside the exit code it gives.
"""

from __future__ import annotations

from enum import Enum, IntEnum


class ExitCode(IntEnum):
    OK = 0
    ERROR = 1  # a bug, or a failure that is not the input's fault (CUDA, driver, DALI internals)
    BAD_INPUT = 2  # config, data, checkpoint or launch problem found before or during start-up
    NONFINITE = 4  # the loss stayed NaN/inf for train.nonfinite_limit steps
    IO_ERROR = 74  # a file could not be written (disk full, quota, file-size limit, read-only): fix that (EX_IOERR)
    PREEMPTED = 75  # stopped by SIGTERM/SIGINT after writing a checkpoint (EX_TEMPFAIL: run again)


class EndReason(str, Enum):
    """Why a training run ended: `end/reason` in the W&B summary and summary.json."""

    FINISHED = "finished"  # every epoch done
    TARGET_REACHED = "target_reached"  # stopped early: the accuracy target was reached
    PREEMPTED = "preempted"  # SIGTERM/SIGINT, checkpoint written
    NONFINITE = "nonfinite"  # the loss stayed NaN/inf
    BAD_INPUT = "bad_input"  # a UserError escaped the loop (a corrupt image met mid-run): fix it, then resume
    IO_ERROR = "io_error"  # a file could not be written (a full disk, mid-run): free space, then resume
    CRASHED = "crashed"  # any other exception escaped the training loop

    @property
    def exit_code(self) -> ExitCode:
        """The process's exit status."""
        return _EXIT_CODES[self]

    @property
    def done(self) -> bool:
        """The run is over (every epoch, or its target): nothing to continue."""
        return self in (EndReason.FINISHED, EndReason.TARGET_REACHED)

    @property
    def raised(self) -> bool:
        """An exception ended the run: other ranks may be gone, so no collective may follow."""
        return self in (EndReason.BAD_INPUT, EndReason.IO_ERROR, EndReason.CRASHED)


_EXIT_CODES = {EndReason.FINISHED: ExitCode.OK, EndReason.TARGET_REACHED: ExitCode.OK,
               EndReason.PREEMPTED: ExitCode.PREEMPTED, EndReason.NONFINITE: ExitCode.NONFINITE,
               EndReason.BAD_INPUT: ExitCode.BAD_INPUT, EndReason.IO_ERROR: ExitCode.IO_ERROR,
               EndReason.CRASHED: ExitCode.ERROR}


def crash_ending(exc: BaseException) -> EndReason:
    """How an exception escaping the loop ends a run: a file that cannot be written (exit 74), bad input
    found mid-run (2), else a crash (1)."""
    if isinstance(exc, StorageError):
        return EndReason.IO_ERROR
    return EndReason.BAD_INPUT if isinstance(exc, UserError) else EndReason.CRASHED


def crash_exit_code(exc: BaseException) -> ExitCode:
    """The exit status an exception escaping the loop gives: 2 for bad input found mid-run, 74 for a file
    that cannot be written, 75 for a stop signal that ended start-up, else 1."""
    if isinstance(exc, Interrupted):
        return ExitCode.PREEMPTED
    return crash_ending(exc).exit_code


class Interrupted(BaseException):
    """A stop signal arrived where the run cannot stop at a step boundary (start-up): the process ends now.

    A BaseException, like KeyboardInterrupt: `except Exception` blocks on the way up must not swallow it.
    args: (signal number, message).
    """

    @property
    def message(self) -> str:
        return str(self.args[1])


class UserError(Exception):
    """Bad input that the user can fix; the message names what to change."""

    exit_code = ExitCode.BAD_INPUT  # what an entry point exits with after printing the message


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


class StorageError(UserError):
    """A file cannot be written: no space left, a quota or file-size limit, a read-only file system.

    The message is `cannot write PATH: REASON`; the input is fine, the environment needs fixing."""

    exit_code = ExitCode.IO_ERROR
