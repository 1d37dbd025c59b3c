"""Which run a command continues, and the command that continues a run.

    state = read_run_state(run_dir)                  # how it ended, at which step, who trains it now
    latest = latest_run_of(cfg, matching)            # launch.sh: the newest auto-named run of this setup
    command = direct_command(run_name)               # `python train_dist.py ... logging.run_name=NAME`

A run directory's config.yaml says what it trains and summary.json how its latest session ended
(pipeline/runs/records.py): `finished` and `target_reached` are done; `preempted`, `nonfinite`,
`bad_input` (once the file is fixed, or with data.check_images=skip: `SKIP_BAD_IMAGES`), `io_error`
(once the disk has room) and `crashed` can continue from the newest checkpoint; no summary.json
means a session that was killed (or is running: runs/<name>/.lock says which,
pipeline/runs/rundir.py RunLock).

`./launch.sh CONFIG [key=value ...]` without a run name continues the newest run that launch.sh
named for the same config and overrides (pipeline/tools/launch.py): "the same command continues".
Two setups are the same when their configs are equal except for the keys that only name the run.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from pipeline.config import NAMING_KEYS, Config
from pipeline.runs.changes import effective_config, flatten, with_later_keys
from pipeline.runs.resolved import node_count
from pipeline.runs.rundir import RunLock, is_default_run_name

DONE = ("finished", "target_reached")
# Keys that say how a run continues, not what it trains: a command that adds one continues the same run.
HOW_TO_CONTINUE = frozenset({"checkpoint.on_unreadable"})
# What a run that stopped on a bad image adds to its command to continue without the bad files.
SKIP_BAD_IMAGES = "data.check_images=skip"


@dataclass(frozen=True)
class RunState:
    """What a run directory says about its latest session."""

    path: Path
    config: dict[str, Any]     # config.yaml with its recorded changes, flattened ({"optim.lr": 0.1, ...}); {} when unreadable
    summary: dict[str, Any]    # summary.json; {} when the latest session wrote none
    in_use_by: str | None      # "pid N on HOST" while a training process holds the run's lock

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def end(self) -> str | None:
        """How the latest session ended (summary.json's end/reason); None: killed, or still running."""
        return self.summary.get("end/reason")

    @property
    def done(self) -> bool:
        return self.end in DONE

    def where(self) -> str:
        """' at step 157 (1 of 50 epochs done)' from summary.json, or '' when it does not say."""
        step, epoch = self.summary.get("end/global_step"), self.summary.get("end/epochs_done")
        if step is None:
            return ""
        return f" at step {step}" + (f" ({epoch} of {self.config.get('train.epochs', '?')} epochs done)"
                                     if epoch is not None else "")


def _read(path: Path, parse) -> dict[str, Any]:
    try:
        data = parse(path.read_text())
    except (OSError, ValueError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def read_run_state(run_dir: Path) -> RunState:
    return RunState(path=run_dir, config=flatten(effective_config(run_dir)),
                    summary=_read(run_dir / "summary.json", json.loads), in_use_by=RunLock.in_use(run_dir))


def setup_differences(run_config: dict[str, Any], cfg: Config) -> list[str]:
    """`["optim.lr: 0.1 there, 0.2 here", ...]`: where a run's saved config and `cfg` train different things."""
    here = flatten(cfg.to_dict())
    return [f"{key}: {run_config.get(key)!r} there, {here.get(key)!r} here" for key in differing_keys(run_config, cfg)]


def differing_keys(run_config: dict[str, Any], cfg: Config) -> list[str]:
    """The keys whose values differ between a run's saved config (flattened) and `cfg`, sorted; the keys that
    only name the run are not compared.

    A run saves model.num_classes resolved; `auto` here matches the number it found (the data keys,
    compared too, say whether the data is the same)."""
    here = flatten(cfg.to_dict())
    run_config = with_later_keys(run_config, here) if run_config else run_config
    keys = []
    for key in sorted(set(here) | set(run_config)):
        if key in NAMING_KEYS or key in HOW_TO_CONTINUE:
            continue
        mine, theirs = here.get(key), run_config.get(key)
        if key == "model.num_classes" and mine == "auto" and isinstance(theirs, int):
            continue
        if json.dumps(mine, sort_keys=True) != json.dumps(theirs, sort_keys=True):
            keys.append(key)
    return keys


def latest_run_of(cfg: Config, matching: Callable[[RunState], bool] = lambda state: True) -> RunState | None:
    """The newest run under logging.runs_dir that launch.sh named for this experiment (<name>-<date>-<time>)
    and that `matching` accepts; None when there is none."""
    runs = Path(cfg.logging.runs_dir).expanduser()
    if not runs.is_dir():
        return None
    names = sorted((p.name for p in runs.iterdir() if p.is_dir() and is_default_run_name(p.name, cfg.name)),
                   reverse=True)  # the stamp sorts by time
    for name in names:
        if not (runs / name / "config.yaml").is_file():  # written once start-up succeeded: not a run yet
            continue
        state = read_run_state(runs / name)
        if matching(state):
            return state
    return None


def with_override(args: list[str], override: str) -> list[str]:
    """`args` with `override` (`key=value`) as the last override (any earlier value of the key dropped)."""
    key = override.split("=", 1)[0] + "="
    return [a for a in args if not a.startswith(key)] + [override]


def with_run_name(args: list[str], run_name: str) -> list[str]:
    """`args` with logging.run_name=NAME as the last override (any earlier one dropped)."""
    return with_override(args, f"logging.run_name={run_name}")


def _python() -> str:
    """How to name this interpreter in a command: `python` when that is what the shell finds."""
    found = shutil.which("python")
    return "python" if found and os.path.realpath(found) == os.path.realpath(sys.executable) else sys.executable


def direct_command(run_name: str, argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> str:
    """The command that continues this process's run when it was started without launch.sh.

    Single process: `python train_dist.py ARGS logging.run_name=NAME`. Under torchrun on one node:
    `torchrun --standalone --nproc-per-node=N train_dist.py ...`. Several nodes: torchrun's other
    options (the rendezvous) cannot be read back from inside a worker, so they are marked as such.
    """
    argv = list(sys.argv if argv is None else argv)
    env = os.environ if env is None else env
    script, args = argv[0], with_run_name(argv[1:], run_name)
    if "TORCHELASTIC_RUN_ID" not in env:
        return shlex.join([_python(), script, *args])
    nproc = int(env.get("LOCAL_WORLD_SIZE", "1"))
    nodes = node_count(env)
    restarts = env.get("TORCHELASTIC_MAX_RESTARTS", "0")
    options = [f"--nproc-per-node={nproc}"] + ([f"--max-restarts={restarts}"] if restarts != "0" else [])
    if nodes > 1:
        return (f"on each of the {nodes} nodes: torchrun --nnodes={nodes} {' '.join(options)} <the same rendezvous "
                f"options> {shlex.join([script, *args])}")
    return shlex.join(["torchrun", "--standalone", *options, script, *args])
