"""The Python half of ./launch.sh: which run a command trains, torchrun in this process, and how it ended.

    python -m pipeline.tools.launch name [--new] [CONFIG] [key=value ...]   # prints the run name to use
    python -m pipeline.tools.launch torchrun N WORD1..WORDN TORCHRUN_ARGS   # torchrun, then the ending

launch.sh calls both (they are not meant to be typed). `name` picks the run directory:
- RUN_NAME or logging.run_name when given (required on several nodes, where every node must agree
  before any of them has written anything; under SLURM the default is <config>-$SLURM_JOB_ID);
- otherwise the newest run that launch.sh named <config name>-<date>-<time> for the same setup
  (the same config and overrides, pipeline/runs/continuation.py), if it has not finished: so the
  same command continues a preempted, crashed or killed run from its latest checkpoint;
- a new <config name>-<date>-<time> when there is none, or with --new.
A run that finished is not trained again: `name` says so, prints nothing on stdout (launch.sh then
exits 0) and shows the command that starts a new one. A run that a live process is training (its
lock is held) is refused rather than trained twice at once. A run whose directory holds checkpoints
none of which loads (emptied, corrupt, another checkpoint format) is refused too, exit 2, naming
each file, with the commands that go on; the "continuing run" line says where the run resumes.

`torchrun` runs torchrun's own main() here (so this process is the agent that receives SIGTERM),
with the workers told that this process reports the ending (LAUNCHER_ENV). A stop by a signal
ends in torchrun's 25-line SignalException traceback and workers that exited 2, 4 or 75 in a
ChildFailedError one; both have already said why (bad input, a non-finite loss, a preemption
checkpoint), so they are summarised in one line, and the agent's own `failed (exitcode: N)` log line
is left out for those codes. Other failures keep torchrun's failure report.
Then, from runs/<name>/summary.json as the workers left it, one line says how the run ended and,
when it can continue, the exact command that continues it: the same command. Exit status: 0
finished, 2 bad input, 4 non-finite loss, 74 a file could not be written (a full disk: free space,
then continue), 75 preempted (checkpoint written), else the workers' or torchrun's failure.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Mapping

from pipeline.config import Config, load_config_args
from pipeline.errors import ExitCode, LaunchError, UserError
from pipeline.constants import LAUNCHER_ENV
from pipeline.runs.continuation import (SKIP_BAD_IMAGES, RunState, latest_run_of, read_run_state, setup_differences,
                                        with_override)
from pipeline.runs.rundir import default_run_name

PREFIX = "launch.sh:"
# Worker exit codes that the worker itself explains in its last lines: no torchrun report needed.
EXPLAINED = {int(ExitCode.BAD_INPUT), int(ExitCode.NONFINITE), int(ExitCode.IO_ERROR), int(ExitCode.PREEMPTED)}


def say(message: str) -> None:
    print(f"{PREFIX} {message}", file=sys.stderr, flush=True)


def same_command(words: list[str], env: Mapping[str, str], run_name: str | None = None, new: bool = False) -> str:
    """The command as the user typed it (its RUN_NAME too), or with --new to start another run."""
    launcher = env.get("LAUNCH_AS", "./launch.sh")  # scripts/slurm.sbatch: its own command line
    words = [w for w in words if w != "--new"]
    prefix = f"RUN_NAME={shlex.quote(run_name)} " if run_name else ""
    return prefix + " ".join([launcher, *(["--new"] if new else []), *map(shlex.quote, words)])


def describe_end(state: RunState) -> str:
    """' was preempted at step 157 (1 of 50 epochs done)', ' crashed', ...: how its latest session ended."""
    what = {"preempted": "was preempted", "crashed": "crashed", "nonfinite": "stopped on a non-finite loss",
            "bad_input": "stopped on bad input", "io_error": "stopped on a file it could not write",
            "finished": "finished",
            "target_reached": "reached its target accuracy"}
    return (f" {what.get(state.end, state.end)}{state.where()}" if state.end
            else " was stopped without a summary (killed, or its node went away)")


def result_of(state: RunState) -> str:
    s = state.summary
    if "final/top1" not in s:
        return "no evaluation"
    return (f"final top-1 {100 * s['final/top1']:.2f}%, best {100 * s.get('best/top1', s['final/top1']):.2f}% "
            f"at epoch {s.get('best/epoch', '?')}")


# ------------------------------------------------------------------------------------ name


def choose_run_name(cfg: Config, words: list[str], new: bool, env: Mapping[str, str]) -> str | None:
    """The run directory name this launch trains into; None (after saying why) when there is nothing to do."""
    given = cfg.logging.run_name or env.get("RUN_NAME", "")
    if new and given:
        raise LaunchError("--new starts a run under a new name, and this command names its run (RUN_NAME or "
                          "logging.run_name); drop one of the two")
    if not given and int(env.get("NNODES", "1")) > 1:
        job = env.get("SLURM_JOB_ID")
        if not job:
            raise LaunchError("NNODES > 1: give RUN_NAME=... (or logging.run_name=...), the same on every node, so "
                              "that all nodes train into one run directory")
        given = f"{cfg.name}-{job}"
    if given:
        state = read_run_state(Path(cfg.logging.runs_dir).expanduser() / given)
        if state.done and not cfg.eval.only and not setup_differences(state.config, cfg):
            report_done(state, words, env, named=True)
            return None
        if state.path.is_dir() and not state.in_use_by:  # (a run in use: its lock stops the workers)
            resume_outlook(cfg, state, words, env)  # none of its checkpoints loads: refused here, exit 2
        return given
    if new:
        return default_run_name(cfg.name)
    latest = latest_run_of(cfg, matching=lambda state: not setup_differences(state.config, cfg))
    if latest is None:
        return default_run_name(cfg.name)
    if latest.in_use_by:
        raise LaunchError(f"run {latest.name}, of this same setup, is being trained now ({latest.in_use_by}); "
                          f"wait for it to end, or start another run beside it: {same_command(words, env, new=True)}")
    if latest.done:
        report_done(latest, words, env, named=False)
        return None
    say(f"continuing run {latest.name}: it{describe_end(latest)}; {resume_outlook(cfg, latest, words, env)} "
        f"({same_command(words, env, new=True)} starts a new run instead)")
    return latest.name


def resume_outlook(cfg: Config, state: RunState, words: list[str], env: Mapping[str, str]) -> str:
    """What continuing the run will do ('it resumes from last.pt (step 157)'), as the workers will decide it.

    A run holding checkpoints none of which loads is refused here (CheckpointError, exit 2), with the
    commands that go on, before torchrun starts and before anything in the run changes."""
    resume = cfg.checkpoint.resume
    if resume == "never":
        return "it starts over (checkpoint.resume=never), its earlier files moved into superseded-<time>/ inside it"
    if resume != "auto":
        return f"it resumes from {resume}"
    from pipeline.training.checkpoint import scan_checkpoints, unreadable_error  # loads torch: only here

    found = scan_checkpoints(state.path)
    if found.newest is not None:
        path, ckpt = found.newest
        return f"it resumes from {path.name} (step {ckpt['counters']['global_step']})"
    if not found.unreadable:
        return "it wrote no checkpoint, so it starts from the beginning"
    if cfg.checkpoint.on_unreadable == "restart" and not cfg.eval.only:
        return ("none of its checkpoints loads, so it starts over (checkpoint.on_unreadable=restart), its files "
                "moved into superseded-<time>/ inside it")
    restart = same_command(with_override(words, "checkpoint.on_unreadable=restart"), env, run_name=state.name)
    raise unreadable_error(state.path, found, new_run=f"start a new run: {new_run_command(words, env)}",
                           restart=restart)


def new_run_command(words: list[str], env: Mapping[str, str]) -> str:
    """The command that trains this setup in a new run (any run name dropped)."""
    return same_command([w for w in words if not w.startswith("logging.run_name=")],
                        {k: v for k, v in env.items() if k != "RUN_NAME"}, new=True)


def report_done(state: RunState, words: list[str], env: Mapping[str, str], named: bool) -> None:
    say(f"run {state.name} ({state.path}){describe_end(state)} ({result_of(state)}): nothing to train"
        f"{'' if named else ' for this command'}. To train this setup again in a new run: "
        f"{new_run_command(words, env)}")


def name_main(argv: list[str]) -> int:
    new = argv[:1] == ["--new"]
    words = argv[1:] if new else argv
    try:
        cfg = load_config_args(words)
        name = choose_run_name(cfg, words, new, os.environ)
    except UserError as exc:
        print(f"{PREFIX} error: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    if name is not None:
        print(name)
    return 0


# -------------------------------------------------------------------------------- torchrun


def handle_sigterm_once() -> None:
    """SIGTERM stops the job once, whoever sends it: the user, SLURM, or a worker passing its own on.

    A worker asked to stop passes the request to this agent (pipeline/training/preemption.py
    `tell_the_agent`), so that the agent stops the whole job instead of restarting the worker under
    --max-restarts. The agent then signals every worker, and each of them passes that on too: the
    first SIGTERM raises torchrun's SignalException (the agent stops its workers and waits for their
    checkpoints), later ones are the same request and must not cut that wait short. torchrun is told
    to leave SIGTERM to this handler (--signals-to-handle without it; its other signals stay its own).
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException

    received: list[int] = []

    def on_sigterm(signum: int, frame: object) -> None:
        if received:
            return
        received.append(signum)
        raise SignalException(f"Process {os.getpid()} got signal: {signum}", sigval=signal.Signals(signum))

    # torchrun --signals-to-handle (its PET_ variable; torch >= 2.9), which it copies to the variable its
    # process contexts read when they install their handlers.
    os.environ["PET_SIGNALS_TO_HANDLE"] = os.environ["TORCHELASTIC_SIGNALS_TO_HANDLE"] = "SIGINT,SIGHUP,SIGQUIT"
    signal.signal(signal.SIGTERM, on_sigterm)


class ExplainedExitFilter(logging.Filter):
    """Drops the elastic agent's `E... api.py:...] failed (exitcode: N) local_rank: ...` line when N is a code
    the workers explain themselves (EXPLAINED): their one-line message and the launcher's summary say it all."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        explained = bool(args) and args[0] in EXPLAINED
        return not (explained and str(record.msg).startswith("failed (exitcode: "))


def run_torchrun(args: list[str]) -> tuple[int, str | None]:
    """torchrun's main() on `args`: (exit status, a one-line summary when its own report was left out)."""
    from torch.distributed.elastic.multiprocessing import api
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun_main

    handle_sigterm_once()
    logging.getLogger(api.__name__).addFilter(ExplainedExitFilter())
    try:
        torchrun_main(args)
    except SignalException as exc:  # the agent was signalled: it has stopped its workers, whatever they did
        name = signal.Signals(exc.sigval).name
        return 128 + int(exc.sigval), f"torchrun received {name} and stopped its workers"
    except ChildFailedError as exc:
        codes = {rank: failure.exitcode for rank, failure in sorted(exc.failures.items())}
        if set(codes.values()) <= EXPLAINED:
            shown = ", ".join(f"rank {rank}: {code}" for rank, code in codes.items())
            return max(codes.values(), key=lambda c: (c == ExitCode.PREEMPTED, c)), f"workers exited ({shown})"
        print(exc.format_msg(), file=sys.stderr)  # a crash: torchrun's report, beside the worker's traceback
        return int(ExitCode.ERROR), None
    return 0, None


def ending(state: RunState, status: int, words: list[str], env: Mapping[str, str], started: float) -> tuple[int, str]:
    """(exit status, the line that says how the run ended) from what the workers left in the run directory."""
    fresh = state.end is not None and (state.path / "summary.json").stat().st_mtime >= started - 1
    named = env.get("RUN_NAME") or None
    where = "on every node: " if int(env.get("NNODES", "1")) > 1 and "LAUNCH_AS" not in env else ""
    command = where + same_command(words, env, run_name=named)
    if fresh and state.done:
        return 0, ""
    if fresh and state.end == "bad_input":  # the fix first: the same command alone meets the same file again
        skip = where + same_command(with_override(words, SKIP_BAD_IMAGES), env, run_name=named or state.name)
        return int(ExitCode.BAD_INPUT), (f"run {state.name}{describe_end(state)}. Remove or replace the file named "
                                         f"above, then continue it: {command}; or leave bad files out: {skip}")
    if fresh and state.end == "io_error":  # the environment first: the same command alone meets the same full disk
        return int(ExitCode.IO_ERROR), (f"run {state.name}{describe_end(state)} (named above; the checkpoints "
                                        f"written before it are kept). Free space on {state.path.parent} (or raise "
                                        f"the quota, or move logging.runs_dir), then continue it: {command}")
    if fresh:
        code = {"preempted": ExitCode.PREEMPTED, "nonfinite": ExitCode.NONFINITE}.get(state.end, status or 1)
        tail = ("; resuming replays the same batches at the same learning rate (see the error above)"
                if state.end == "nonfinite" else "")
        return int(code), f"run {state.name}{describe_end(state)}. To continue it{tail}: {command}"
    if status in (128 + signal.SIGTERM, 128 + signal.SIGINT):  # a stop request, before the workers could summarise
        return int(ExitCode.PREEMPTED), (f"run {state.name} was stopped before it wrote a summary (a signal during "
                                         f"start-up, or a worker that did not stop in time). To continue it from its "
                                         f"latest checkpoint: {command}")
    if not state.path.is_dir():
        return status, "nothing was trained: the workers stopped at start-up (the error is above)"
    if any(state.path.glob("*.pt")):
        return status, (f"run {state.name} stopped before writing its summary; to continue it from its latest "
                        f"checkpoint: {command}")
    return status, f"run {state.name} stopped before its first checkpoint; the same command starts it again: {command}"


def torchrun_main(argv: list[str]) -> int:
    count = int(argv[0])
    words, args = argv[1:1 + count], argv[1 + count:]
    script = next(i for i, a in enumerate(args) if a.endswith("train_dist.py"))
    cfg = load_config_args(args[script + 1:])  # launch.sh checked it, and appended logging.run_name
    run_dir = Path(cfg.logging.runs_dir).expanduser() / cfg.logging.run_name
    os.environ[LAUNCHER_ENV] = "launch.sh"  # the workers inherit it: they leave the ending to this process
    started = time.time()
    status, summary = run_torchrun(args)
    if summary:
        say(summary)
    status, line = ending(read_run_state(run_dir), status, words, os.environ, started)
    if line and os.environ.get("NODE_RANK", "0") in ("", "0"):  # once: the node that hosts the rendezvous
        say(line)
    return status


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["name"]:
        return name_main(argv[1:])
    if argv[:1] == ["torchrun"]:
        return torchrun_main(argv[1:])
    print(__doc__)
    return 0 if argv[:1] in (["-h"], ["--help"]) else 2


if __name__ == "__main__":
    sys.exit(main())
