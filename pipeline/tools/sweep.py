"""Run a grid of configurations one after another through train_dist.py: W&B sweeps without W&B.

    python -m pipeline.tools.sweep configs/quickstart.yaml --grid optim.lr=0.05,0.1 --grid train.label_smoothing=0,0.1
    python -m pipeline.tools.sweep configs/quickstart.yaml --grid schedule.name=onecycle,cosine train.epochs=5 --nproc 2
    python -m pipeline.tools.sweep configs/quickstart.yaml --grid optim.lr=0.05,0.1 --name lr --dry-run   # commands only

Every point of the cartesian product of the --grid values is a training run with the fixed
`key=value` overrides, the point's own values, `logging.run_name=<sweep name>-<point label>`
(e.g. `lr-lr0.05-label_smoothing0`) and `wandb.group=<sweep name>`. All points are validated
against the config schema before the first one starts (a bad key or value: one line, exit 2).
Points run in order, each through the real entry point (`python train_dist.py`, or torchrun with
--nproc > 1); a failed point is reported and the sweep goes on. At the end the
`pipeline.tools.compare` table of the runs is printed.

The sweep name defaults to `<config name>-sweep-<date>-<time>`. Run names depend only on the
sweep name and the point, so the same command with the same --name continues an interrupted
sweep: each run resumes from its own checkpoint (finished ones end at once).

Stopping: Ctrl-C (SIGINT to the process group) reaches the training process, which checkpoints
and exits 75; the sweep then stops with 75. A SIGTERM/SIGINT sent to the sweep process alone lets
the current point finish and starts no other.

Exit status: 0 every point finished, 2 bad configuration, 75 stopped by a signal, 1 a point failed.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import itertools
import re
import shlex
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from pipeline.config import ConfigError, load_config, parse_overrides, split_args
from pipeline.constants import REPO_ROOT
from pipeline.training.preemption import StopRequest

TRAIN_SCRIPT = REPO_ROOT / "train_dist.py"
PREEMPTED = 75  # train_dist.py's exit status after a signal (checkpoint written)
SET_BY_SWEEP = ("logging.run_name", "wandb.group")


@dataclass(frozen=True)
class Point:
    """One configuration of the grid and the run that trains it."""

    values: dict[str, str]   # {"optim.lr": "0.05", ...} as written on the command line
    run_name: str
    run_dir: Path
    overrides: list[str]     # everything after the config path


# ------------------------------------------------------------------------------- the grid


def split_values(raw: str) -> list[str]:
    """"0.05,0.1" -> ["0.05", "0.1"]; commas inside [...] or {...} belong to the value ("[10,20],[5]")."""
    values, depth, current = [], 0, ""
    for char in raw:
        depth += {"[": 1, "{": 1, "]": -1, "}": -1}.get(char, 0)
        if char == "," and depth == 0:
            values.append(current.strip())
            current = ""
        else:
            current += char
    values.append(current.strip())
    return values


def parse_grid(specs: list[str]) -> dict[str, list[str]]:
    """["optim.lr=0.05,0.1", ...] -> {"optim.lr": ["0.05", "0.1"], ...}, in the order given."""
    grid: dict[str, list[str]] = {}
    for spec in specs:
        key, sep, raw = spec.partition("=")
        key = key.strip()
        values = split_values(raw) if sep else []
        if not key or not values or "" in values:
            raise ConfigError(f"--grid {spec!r}: expected key.sub=value1,value2,...")
        if key in grid:
            raise ConfigError(f"--grid {key}: given twice")
        if key in SET_BY_SWEEP:
            raise ConfigError(f"{key}: set by the sweep for every point (name the sweep with --name)")
        if len(set(values)) < len(values):
            raise ConfigError(f"--grid {key}: a value is repeated ({raw})")
        grid[key] = values
    return grid


def grid_points(grid: dict[str, list[str]]) -> list[dict[str, str]]:
    """The cartesian product, the first key varying slowest."""
    return [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]


def short_names(keys: list[str]) -> dict[str, str]:
    """Each key's last part ("lr"), or the whole key with '_' for '.' where last parts clash."""
    last = [key.rsplit(".", 1)[-1] for key in keys]
    return {key: name if last.count(name) == 1 else key.replace(".", "_") for key, name in zip(keys, last)}


def point_label(point: dict[str, str], names: dict[str, str]) -> str:
    """A stable, filesystem-safe label: {"optim.lr": "0.05"} -> "lr0.05"."""
    parts = [names[key] + re.sub(r"[^A-Za-z0-9.+-]+", "_", value).strip("_") for key, value in point.items()]
    return "-".join(parts)


def unique_labels(points: list[dict[str, str]], names: dict[str, str]) -> list[str]:
    """Labels, with a short hash of the exact values added where two would otherwise coincide."""
    labels = [point_label(point, names) for point in points]
    return [label if labels.count(label) == 1 else
            f"{label}-{hashlib.sha1(repr(sorted(point.items())).encode()).hexdigest()[:6]}"
            for label, point in zip(labels, points)]


def build_points(config: str | None, fixed: list[str], grid: dict[str, list[str]], sweep_name: str,
                 nproc: int) -> list[Point]:
    """Every point's overrides, each validated against the schema; ConfigError names the first bad one."""
    points = grid_points(grid)
    labels = unique_labels(points, short_names(list(grid)))
    built = []
    for values, label in zip(points, labels):
        run_name = f"{sweep_name}-{label}"
        overrides = [*fixed, *(f"{k}={v}" for k, v in values.items()),
                     f"logging.run_name={run_name}", f"wandb.group={sweep_name}"]
        try:
            cfg = load_config(config, overrides)
            cfg.check_world_size(nproc)
        except ConfigError as exc:
            raise ConfigError(f"point {' '.join(f'{k}={v}' for k, v in values.items())}: {exc}") from None
        built.append(Point(values, run_name, Path(cfg.logging.runs_dir) / run_name, overrides))
    return built


def check_fixed(fixed: list[str], grid: dict[str, list[str]]) -> None:
    """A key is either swept or fixed, and the sweep owns the run name and the W&B group."""
    parse_overrides(fixed)  # malformed `key=value` words fail here, with the schema's message
    for item in fixed:
        key = item.partition("=")[0].strip()
        if key in grid:
            raise ConfigError(f"{key}: both swept (--grid) and fixed ({item})")
        if key in SET_BY_SWEEP:
            raise ConfigError(f"{key}: set by the sweep for every point (name the sweep with --name)")


# -------------------------------------------------------------------------------- running


def train_command(config: str | None, point: Point, nproc: int) -> list[str]:
    launcher = ([sys.executable] if nproc == 1 else
                [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"])
    return [*launcher, str(TRAIN_SCRIPT), *([config] if config else []), *point.overrides]


class StopAfterPoint(StopRequest):
    """SIGTERM/SIGINT while a point trains: remember it and start no further point.

    The training process gets its own copy of a terminal's Ctrl-C (same process group) and stops
    itself with a checkpoint; forwarding the signal would make that its second one, which exits at
    once without a checkpoint."""

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum
        print(f"[sweep] {signal.Signals(signum).name}: no further point will start", file=sys.stderr, flush=True)


def run_points(config: str | None, points: list[Point], nproc: int) -> dict[str, int]:
    """Train the points in order; {run name: exit status} of those that ran."""
    results: dict[str, int] = {}
    with StopAfterPoint() as stop:
        for i, point in enumerate(points, 1):
            if stop.signum is not None:
                break
            command = train_command(config, point, nproc)
            print(f"[sweep] point {i}/{len(points)}: {point.run_name}\n[sweep] {shlex.join(command)}", flush=True)
            results[point.run_name] = subprocess.call(command)
            if results[point.run_name] == PREEMPTED:
                break
    return results


def report(points: list[Point], results: dict[str, int], sweep_name: str) -> int:
    """Print which points failed and the comparison table; return the sweep's exit status."""
    from pipeline.tools import compare

    runs = []
    for point in points:
        if point.run_name in results:
            try:
                runs.append(compare.load_run(point.run_dir))
            except compare.CompareError as exc:
                print(f"[sweep] {point.run_name}: no results ({exc})", file=sys.stderr)
    if runs:
        print()
        sys.stdout.write(compare.format_table(runs))
    failed = {name: rc for name, rc in results.items() if rc != 0}
    not_run = [p.run_name for p in points if p.run_name not in results]
    for name, rc in failed.items():
        what = "stopped by a signal, checkpoint written" if rc == PREEMPTED else "failed"
        print(f"[sweep] {name}: {what} (exit status {rc})", file=sys.stderr)
    if not_run:
        print(f"[sweep] not run: {', '.join(not_run)}; the same command with --name {sweep_name} "
              "continues the sweep", file=sys.stderr)
    if PREEMPTED in failed.values() or not_run:
        return PREEMPTED
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.tools.sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("args", nargs="*", help="[CONFIG.yaml] [key=value ...]: fixed for every point")
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                        help="a swept key and its values; repeat for more keys (cartesian product)")
    parser.add_argument("--name", help="sweep name: run-name prefix and W&B group (default <config>-sweep-<time>)")
    parser.add_argument("--nproc", type=int, default=1, help="processes per run (torchrun when > 1)")
    parser.add_argument("--dry-run", action="store_true", help="validate and print the commands; train nothing")
    args = parser.parse_intermixed_args(argv)  # options may come before or after the overrides
    config, fixed = split_args(args.args)
    try:
        if not args.grid:
            raise ConfigError("no --grid KEY=V1,V2 given: nothing to sweep")
        if args.nproc < 1:
            raise ConfigError(f"--nproc: must be >= 1 (got {args.nproc})")
        grid = parse_grid(args.grid)
        check_fixed(fixed, grid)
        sweep_name = args.name or (f"{load_config(config, fixed).name}-sweep-"
                                   f"{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}")
        points = build_points(config, fixed, grid, sweep_name, args.nproc)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        for point in points:
            print(shlex.join(train_command(config, point, args.nproc)))
        return 0
    return report(points, run_points(config, points, args.nproc), sweep_name)


if __name__ == "__main__":
    sys.exit(main())
