"""The Python half of ./launch.sh: which run a command trains, torchrun in this process, and how it ended.

    python -m pipeline.tools.launch name [--new] [CONFIG] [key=value ...]   # prints the run name to use
    python -m pipeline.tools.launch torchrun N WORD1..WORDN TORCHRUN_ARGS   # torchrun, then the ending

launch.sh calls both (they are not meant to be typed). `name` picks the run directory:
- RUN_NAME or logging.run_name when given (required on several nodes, where every node must agree
  before any of them has written anything; under SLURM the default is <config>-$SLURM_JOB_ID);
- otherwise the newest run that launch.sh named <config name>-<date>-<time> for the same setup
  (the same config and overrides, pipeline/runs/continuation.py), if it has not finished: so the
  same command continues a preempted, crashed or killed run from its latest checkpoint;
- a new <config name>-<date>-<time> when there is none, or with --new; one line then names an
  unfinished run of the same config (other settings) and the command that continues it.
A run that finished is not trained again: `name` says so, prints nothing on stdout (launch.sh then
exits 0) and shows the command that starts a new one. A run that a live process is training (its
lock is held) is refused rather than trained twice at once. A run whose directory holds checkpoints
none of which loads (emptied, corrupt, another checkpoint format) is refused too, exit 2, naming
each file, with the commands that go on; the "continuing run" line says where the run resumes. An
evaluation (eval.only) trains no run: `name` passes it through.

`torchrun` runs torchrun's own main() here (so this process is the agent that receives SIGTERM),
with the workers told that this process reports the ending (LAUNCHER_ENV). A stop by a signal
ends in torchrun's 25-line SignalException traceback and workers that exited 2, 4 or 75 in a
ChildFailedError one; both have already said why (bad input, a non-finite loss, a preemption
checkpoint), so they are summarised in one line. A worker that crashed or was killed is named in
one line with how it ended (`who_ended`); the agent's own lines about it are left out (`AgentLog`,
which also tells the other workers that the agent, not the user, is stopping them).
Then, from runs/<name>/summary.json as the workers left it, one line says how the run ended and,
when it can continue, the exact command that continues it: the same command, with the launcher's
variables it was given (NPROC=2, ...); after the workers refused to continue a run with other
values, the two commands that go on instead. Exit status: 0 finished, 2 bad input, 4 non-finite
loss, 74 a file could not be written (a full disk: free space, then continue), 75 preempted
(checkpoint written), else the workers' or torchrun's failure.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any, Mapping

import yaml

from pipeline.config import Config, load_config_args
from pipeline.constants import LAUNCHER_ENV, LAUNCHER_STOP_SIGNAL, RANK_ERROR_LOG, REPO_ROOT
from pipeline.errors import ExitCode, LaunchError, UserError
from pipeline.runs.changes import Change, config_changes, unaccepted, unflatten
from pipeline.runs.continuation import (SKIP_BAD_IMAGES, RunState, differing_keys, latest_run_of, read_run_state,
                                        setup_differences, with_override)
from pipeline.runs.rundir import default_run_name

PREFIX = "launch.sh:"
# Worker exit codes that the worker itself explains in its last lines: no torchrun report needed.
EXPLAINED = {int(ExitCode.BAD_INPUT), int(ExitCode.NONFINITE), int(ExitCode.IO_ERROR), int(ExitCode.PREEMPTED)}


def say(message: str) -> None:
    print(f"{PREFIX} {message}", file=sys.stderr, flush=True)


# The variables launch.sh reads that shape the job (README, `./launch.sh --help`): a command that continues
# a run keeps those that are set, so that it resumes with as many processes and nodes. NODE_RANK and
# LOCAL_ADDR differ from node to node and are left to each; scripts/slurm.sbatch (LAUNCH_AS) derives
# NNODES, MASTER_ADDR and MASTER_PORT from its allocation, which a requeued job may change.
LAUNCH_VARIABLES = ("NPROC", "NNODES", "MASTER_ADDR", "MASTER_PORT", "MAX_RESTARTS", "RDZV_ID", "VENV")
DERIVED_UNDER_SLURM = ("NNODES", "MASTER_ADDR", "MASTER_PORT")
LAUNCH_DEFAULTS = {"NNODES": "1", "MAX_RESTARTS": "0", "MASTER_PORT": "29500", "VENV": str(REPO_ROOT / ".venv")}


def launch_variables(env: Mapping[str, str]) -> list[str]:
    """`["NPROC=2", ...]`: the variables of LAUNCH_VARIABLES that `env` sets to other than launch.sh's default."""
    def default(name: str) -> bool:
        value, usual = env[name], LAUNCH_DEFAULTS.get(name)
        return usual is not None and (value == usual or (name == "VENV" and os.path.realpath(value)
                                                          == os.path.realpath(usual)))

    return [f"{name}={shlex.quote(env[name])}" for name in LAUNCH_VARIABLES if env.get(name) and not default(name)
            and not ("LAUNCH_AS" in env and name in DERIVED_UNDER_SLURM)]


def same_command(words: list[str], env: Mapping[str, str], run_name: str | None = None, new: bool = False) -> str:
    """The command as the user typed it, with its RUN_NAME and the launcher's variables that are set
    (NPROC=2, ...), or with --new to start another run."""
    launcher = env.get("LAUNCH_AS", "./launch.sh")  # scripts/slurm.sbatch: its own command line
    words = [w for w in words if w != "--new"]
    prefix = ([f"RUN_NAME={shlex.quote(run_name)}"] if run_name else []) + launch_variables(env)
    return " ".join([*prefix, launcher, *(["--new"] if new else []), *map(shlex.quote, words)])


def every_node(env: Mapping[str, str]) -> str:
    """What a command for several nodes is prefixed with (nothing on one node, or under LAUNCH_AS)."""
    if int(env.get("NNODES", "1")) <= 1 or "LAUNCH_AS" in env:
        return ""
    own = "NODE_RANK and LOCAL_ADDR" if env.get("LOCAL_ADDR") else "NODE_RANK"
    return f"on every node, with its own {own}: "


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
    if cfg.eval.only:  # nothing is trained: the evaluation writes into the run it evaluates (training/eval_only.py)
        if not given and cfg.checkpoint.resume == "auto":
            raise LaunchError("eval.only: name the run whose latest checkpoint to evaluate (RUN_NAME=<run>) or the "
                              "checkpoint (checkpoint.resume=<file>)")
        return given or Path(cfg.checkpoint.resume).expanduser().resolve().parent.name
    if given:
        state = read_run_state(Path(cfg.logging.runs_dir).expanduser() / given)
        if state.done and not setup_differences(state.config, cfg):
            report_done(state, words, env, named=True)
            return None
        if state.path.is_dir() and not state.in_use_by:  # (a run in use: its lock stops the workers)
            resume_outlook(cfg, state, words, env)  # none of its checkpoints loads: refused here, exit 2
        return given
    if new:
        return default_run_name(cfg.name)
    latest = latest_run_of(cfg, matching=lambda state: not setup_differences(state.config, cfg))
    if latest is None:
        name = default_run_name(cfg.name)
        note_unfinished_run(cfg, words, env, name)
        return name
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


def note_unfinished_run(cfg: Config, words: list[str], env: Mapping[str, str], name: str) -> None:
    """A new run of a config that has an unfinished run of other settings: say so, with the command that
    continues that one (these words with its values of the keys that differ, and its name)."""
    other = latest_run_of(cfg, matching=lambda state: not state.done and not state.in_use_by)
    if other is None:
        return
    changed = [key for key in differing_keys(other.config, cfg) if key in other.config]
    shown = ", ".join(f"{key}={yaml_value(other.config[key])}" for key in changed)
    restored = words
    for key in changed:
        restored = with_override(restored, f"{key}={yaml_value(other.config[key])}")
    say(f"starting a new run {name}: run {other.name} of this config is unfinished (it{describe_end(other)}) and "
        f"was trained with {shown}; to continue it instead: {same_command(restored, env, run_name=other.name)}")


def yaml_value(value: object) -> str:
    """A config value as a key=value override writes it (YAML, on one line)."""
    return yaml.safe_dump(value, default_flow_style=True, width=float("inf")).strip().removesuffix("...").strip()


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


class AgentLog(logging.Filter):
    """torchrun's agent's lines about its workers (torch.distributed.elastic.multiprocessing.api), as the
    launcher tells the story instead.

    When a worker ends with a failure (a crash, a kill), the agent stops the others with SIGTERM: before
    each of them gets it (its `Sending process N closing signal SIGTERM` line), this sends the worker
    LAUNCHER_STOP_SIGNAL, so that it takes the SIGTERM for what it is (no stop request to announce or to
    pass back here: pipeline/entry.py LAUNCHER_STOP), and `stopping` makes this agent ignore a SIGTERM
    that comes back anyway. The agent's own `failed (exitcode: N)` line goes: the launcher names the
    process that died and how (`who_ended`), or, when a restart follows (MAX_RESTARTS), says so here.
    """

    def __init__(self, max_restarts: int) -> None:
        super().__init__()
        self.max_restarts = max_restarts
        self.failures = 0  # failed worker groups so far: the first max_restarts are restarted
        self.stopping = False  # stopping the workers after a failure: a SIGTERM now is their echo
        self.stop_requested = False  # a SIGTERM reached this agent from outside: it stops the workers itself

    def filter(self, record: logging.LogRecord) -> bool:
        message, args = str(record.msg), record.args if isinstance(record.args, tuple) else ()
        if message.startswith("Sending process") and len(args) == 2:  # (pid, signal name), then torchrun signals it
            if args[1] == "SIGTERM" and not self.stop_requested:
                self.stopping = True
                try:
                    os.kill(int(args[0]), LAUNCHER_STOP_SIGNAL)
                except OSError:
                    pass  # it has just ended
            return False
        if message.startswith("failed (exitcode: ") and len(args) >= 3:  # (exit code, local rank, pid, binary)
            self.stopping = False  # the workers have stopped
            self.failures += 1
            if self.failures <= self.max_restarts and args[0] not in EXPLAINED:
                say(f"local rank {args[1]} (pid {args[2]}) {how_it_ended(int(args[0]))}; restarting the workers "
                    f"(restart {self.failures} of MAX_RESTARTS={self.max_restarts}): they resume from the run's "
                    "latest checkpoint")
            return False
        return True


def how_it_ended(exitcode: int) -> str:
    """'was killed by signal 9 (SIGKILL)', 'exited with status 1': a worker's ending, as torchrun saw it."""
    if exitcode < 0:
        try:
            name = f" ({signal.Signals(-exitcode).name})"
        except ValueError:
            name = ""
        return f"was killed by signal {-exitcode}{name}"
    return f"exited with status {exitcode}"


def handle_sigterm_once(agent: AgentLog) -> None:
    """SIGTERM stops the job once, whoever sends it: the user, SLURM, or a worker passing its own on.

    A worker asked to stop passes the request to this agent (pipeline/training/preemption.py
    `tell_the_agent`), so that the agent stops the whole job instead of restarting the worker under
    --max-restarts. The agent then signals every worker, and each of them passes that on too: the
    first SIGTERM raises torchrun's SignalException (the agent stops its workers and waits for their
    checkpoints), later ones are the same request and must not cut that wait short. A SIGTERM while
    the agent stops its workers after one of them failed (`agent.stopping`) is no request at all.
    torchrun is told to leave SIGTERM to this handler (--signals-to-handle without it; its other
    signals stay its own).
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException

    def on_sigterm(signum: int, frame: object) -> None:
        if agent.stop_requested or agent.stopping:
            return
        agent.stop_requested = True
        raise SignalException(f"Process {os.getpid()} got signal: {signum}", sigval=signal.Signals(signum))

    # torchrun --signals-to-handle (its PET_ variable; torch >= 2.9), which it copies to the variable its
    # process contexts read when they install their handlers.
    os.environ["PET_SIGNALS_TO_HANDLE"] = os.environ["TORCHELASTIC_SIGNALS_TO_HANDLE"] = "SIGINT,SIGHUP,SIGQUIT"
    signal.signal(signal.SIGTERM, on_sigterm)


def who_ended(failures: Mapping[int, Any], run_dir: Path, started: float) -> str:
    """The one line that names the worker whose ending stopped the job, and how it ended; the others' folded
    tracebacks (runs/<name>/rank<k>-error.log, written by those whose collective broke for want of it)."""
    def folded(rank: int) -> Path | None:
        path = run_dir / RANK_ERROR_LOG.format(rank=rank)
        return path if path.is_file() and path.stat().st_mtime >= started - 1 else None

    logs = {rank: path for rank in failures if (path := folded(rank)) is not None}
    others = f" (their tracebacks: {', '.join(map(str, logs.values()))})" if logs else ""
    causes = {rank: failure for rank, failure in failures.items() if rank not in logs}
    if not causes:  # every worker here stopped for want of a peer: it was on another node
        return f"the workers on this node stopped: a process of the job on another node went away{others}"
    rank, failure = min(causes.items(), key=lambda item: (item[1].exitcode >= 0, item[1].timestamp, item[0]))
    above = " (its traceback is above)" if failure.exitcode == ExitCode.ERROR else ""
    return (f"rank {rank} (pid {failure.pid}) {how_it_ended(failure.exitcode)}{above}; the other workers were "
            f"stopped{others}")


def run_torchrun(args: list[str], run_dir: Path, started: float) -> tuple[int, str | None]:
    """torchrun's main() on `args`: (exit status, the line that says how it ended, when the workers do not)."""
    from torch.distributed.elastic.multiprocessing import api
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun_main

    restarts = next((int(a.split("=", 1)[1]) for a in args if a.startswith("--max-restarts=")), 0)
    agent = AgentLog(restarts)
    handle_sigterm_once(agent)
    logging.getLogger(api.__name__).addFilter(agent)
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
        return int(ExitCode.ERROR), who_ended(exc.failures, run_dir, started)
    return 0, None


def refused_changes(state: RunState, cfg: Config) -> list[Change]:
    """The changed experiment keys that the workers refuse when this config continues the run from its
    latest checkpoint (checkpoint.accept_changes does not accept them); [] when there is no such checkpoint."""
    resumable = [p for p in state.path.glob("*.pt") if p.name == "last.pt" or p.name.startswith("step-")]
    if cfg.checkpoint.resume != "auto" or not resumable or not state.config:
        return []
    here = cfg.to_dict()
    if here["model"]["num_classes"] == "auto":  # the run saved the number it found (setup_differences)
        here["model"]["num_classes"] = state.config.get("model.num_classes")
    return unaccepted(config_changes(unflatten(state.config), here), cfg.checkpoint.accept_changes)


def way_forward(state: RunState, refused: list[Change], cfg: Config, words: list[str], env: Mapping[str, str]) -> str:
    """After the workers refused to continue a run with other values: the two commands that go on."""
    accept = [*cfg.checkpoint.accept_changes, *(c.key for c in refused)]
    accepting = same_command(with_override(words, f"checkpoint.accept_changes=[{','.join(accept)}]"), env,
                             run_name=state.name)
    fresh = same_command([w for w in words if not w.startswith("logging.run_name=")],
                         {k: v for k, v in env.items() if k != "RUN_NAME"}, new=True)
    keys = ", ".join(c.key for c in refused)
    return (f"run {state.name} was not continued: it was trained with other values of {keys} (above). To continue "
            f"it with the new values, recording the change: {every_node(env)}{accepting}; to train them in a new "
            f"run instead: {every_node(env)}{fresh}")


def ending(state: RunState, status: int, words: list[str], env: Mapping[str, str], started: float,
           cfg: Config | None = None) -> tuple[int, str]:
    """(exit status, the line that says how the run ended) from what the workers left in the run directory.
    `cfg`: this launch's config, to give the way forward when the workers refused to continue the run."""
    fresh = state.end is not None and (state.path / "summary.json").stat().st_mtime >= started - 1
    named = env.get("RUN_NAME") or None
    where = every_node(env)
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
    if status == ExitCode.BAD_INPUT and (state.path / "config.yaml").is_file():  # an earlier session's run
        refused = refused_changes(state, cfg) if cfg is not None else []
        if refused:
            return status, way_forward(state, refused, cfg, words, env)
        return status, (f"run {state.name} was not continued: its workers stopped at start-up on the error above; "
                        f"once that is fixed, the same command continues it: {command}")
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
    status, summary = run_torchrun(args, run_dir, started)
    if summary:
        say(summary)
    if cfg.eval.only:  # an evaluation: its own lines said what it evaluated and where the result went
        return status
    status, line = ending(read_run_state(run_dir), status, words, os.environ, started, cfg)
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
