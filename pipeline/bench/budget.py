"""How well a run keeps its train.time_budget: the whole command's wall time against the budget, quiet or under load.

    python -m pipeline.bench budget configs/quickstart.yaml --budget 2m --repeats 2
    python -m pipeline.bench budget configs/quickstart.yaml --budget 2m --load 2 --load-at 45
    python -m pipeline.bench.budget configs/quickstart.yaml --budget 2m      # the same command

Each repeat runs `train_dist.py CONFIG ... train.time_budget=BUDGET` in a fresh run directory and
times it from the spawn to the exit (interpreter start-up included, as the budget counts it).
`--load N` starts N competing CPU-bound processes (a Python busy loop each) `--load-at` seconds
after the spawn and stops them when the run exits: on a 2-core machine, 2 of them halve the run's
speed. They die with the benchmark whatever ends it (Ctrl-C, SIGTERM, SIGKILL: a parent-death
signal), and the run is stopped with SIGTERM (it checkpoints and exits).

Reported per repeat: the wall time and its ratio to the budget; the budget seconds the run counted
itself (`time/budget_used_s`); the plans it made (how many; steps and measured step of the first
and of the last) and the end the last one predicted; the final top-1. results.json (in --out,
default bench-results/budget-<time>/) also holds every plan and the run's budget lines (plans,
warnings, the end line). Targets: within 5% of the budget on a quiet machine, within 10% when the
machine's speed halves mid-run. A benchmark, not a test (tests/unit/test_budget_plan.py checks the planning
with a fake clock).
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pipeline.config import duration_seconds, load_config_args, split_args
from pipeline.constants import BENCH_RESULTS_DIR, REPO_ROOT
from pipeline.entry import print_user_error
from pipeline.errors import ExitCode, UserError
from pipeline.files import atomic_write_text
from pipeline.runs.metrics import read_metrics

BUSY_LOOP = "while True: pass"
PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent dies


def _die_with(parent: int, sig: int = signal.SIGKILL) -> None:
    """In a child before exec: `sig` when `parent` dies (Linux), or exit now if it already has."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig)
    except (OSError, AttributeError):  # not Linux: Ctrl-C still reaches the process group
        return
    if os.getppid() != parent:
        os._exit(1)


class CompetingLoad:
    """`count` CPU-bound processes, started by start(), stopped by stop() or when this process dies."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.procs: list[subprocess.Popen] = []

    def start(self) -> None:
        parent = os.getpid()
        self.procs = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP], stdin=subprocess.DEVNULL,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                       preexec_fn=lambda: _die_with(parent)) for _ in range(self.count)]

    def stop(self) -> None:
        for proc in self.procs:
            proc.kill()
        for proc in self.procs:
            proc.wait()
        self.procs = []

    def __enter__(self) -> "CompetingLoad":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def one_run(command: list[str], run_dir: Path, load: int, load_at: float) -> dict[str, Any]:
    """Run `command` (a budgeted training run writing to `run_dir`) with `load` competing processes from
    `load_at` s on; what it did against its budget."""
    t0, parent = time.monotonic(), os.getpid()
    # A benchmark that is killed stops its run too (SIGTERM: the run checkpoints and exits).
    proc = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: _die_with(parent, signal.SIGTERM))
    with CompetingLoad(load) as competing:
        try:
            _, err = proc.communicate(timeout=load_at if load else None)
        except subprocess.TimeoutExpired:
            competing.start()
            _, err = proc.communicate()
    wall = time.monotonic() - t0
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    if proc.returncode != 0:
        return {"exit": proc.returncode, "wall_s": round(wall, 1), "error": err.strip().splitlines()[-1:]}
    metrics = run_dir / "metrics.jsonl"
    plans = [{key: row[f"plan/{key}"] for key in ("at_step", "total_steps", "step_s", "spent_s", "predicted_s")}
             for row in (read_metrics(metrics) if metrics.exists() else []) if "plan/total_steps" in row]
    said = [line for line in err.splitlines() if "train.time_budget" in line or " plan: " in line]
    return {"exit": 0, "wall_s": round(wall, 1), "used_s": summary.get("time/budget_used_s"),
            "predicted_s": summary.get("plan/predicted_s"), "steps": summary.get("end/global_step"),
            "plans": plans, "final_top1": summary.get("final/top1"), "log": said}


def bench_budget(args: argparse.Namespace, cfg_path: str | None, overrides: list[str]) -> int:
    """`python -m pipeline.bench budget`: args.budget, args.load, args.load_at, args.repeats, args.out. A bad config
    stops it before any run, in one line (exit 2)."""
    budget = f"train.time_budget={args.budget}"
    try:
        load_config_args([*([cfg_path] if cfg_path else []), *overrides, budget])
    except UserError as exc:
        print_user_error(exc, "config error")
        return int(ExitCode.BAD_INPUT)
    budget_s = duration_seconds(args.budget)
    out = args.out or BENCH_RESULTS_DIR / f"budget-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    rows = []
    with tempfile.TemporaryDirectory(prefix="budget-bench-") as runs:
        for repeat in range(args.repeats or 1):
            name = f"budget-{repeat}"
            command = [sys.executable, str(REPO_ROOT / "train_dist.py"), *([cfg_path] if cfg_path else []),
                       *overrides, budget, f"logging.runs_dir={runs}",
                       f"logging.run_name={name}", "logging.progress=lines"]
            row = {"budget_s": budget_s, "load": args.load, "load_at_s": args.load_at if args.load else None,
                   **one_run(command, Path(runs) / name, args.load, args.load_at)}
            row["ratio"] = round(row["wall_s"] / budget_s, 4)
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n" + format_table(rows))
    from pipeline.runs.envinfo import environment  # torch: only once the runs are over

    out.mkdir(parents=True, exist_ok=True)
    result = {"kind": "budget", "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "command": " ".join(["python -m pipeline.bench budget", *([cfg_path] if cfg_path else []), *overrides,
                                   f"--budget {args.budget}", f"--repeats {args.repeats}"]
                                  + ([f"--load {args.load} --load-at {args.load_at:g}"] if args.load else [])),
              "environment": environment(), "results": rows}
    atomic_write_text(out / "results.json", json.dumps(result, indent=1) + "\n")
    print(f"results: {out / 'results.json'}")
    return 0 if all(r["exit"] == 0 for r in rows) else 1


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'budget s':>8} {'load':>9} {'wall s':>7} {'wall/budget':>11} {'used s':>7} {'predicted s':>11} "
             f"{'plans':>5} {'steps first->last':>17} {'ms/step first->last':>19} {'top-1 %':>7}"]
    for r in rows:
        load = f"{r['load']} at {r['load_at_s']:.0f}s" if r["load"] else "none"
        if r["exit"] != 0:
            lines.append(f"{r['budget_s']:>8.0f} {load:>9} exit {r['exit']}: {r.get('error')}")
            continue
        first, last = r["plans"][0], r["plans"][-1]
        top1 = f"{100 * r['final_top1']:.2f}" if r.get("final_top1") is not None else "-"
        lines.append(f"{r['budget_s']:>8.0f} {load:>9} {r['wall_s']:>7.1f} {r['ratio']:>11.3f} {r['used_s']:>7.1f} "
                     f"{r['predicted_s']:>11.1f} {len(r['plans']):>5} "
                     f"{first['total_steps']:>8}->{last['total_steps']:<7} "
                     f"{1000 * first['step_s']:>9.1f}->{1000 * last['step_s']:<8.1f} {top1:>7}")
    return "\n".join(lines)


def _duration(text: str) -> str:
    try:
        if duration_seconds(text) > 0:
            return text
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"{text!r} is not a duration (e.g. 120s, 2m, 1h30m)")


def _processes(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of processes (0 or more)")
    return int(text)


def budget_options() -> dict[str, tuple[list[str], dict[str, Any]]]:
    """This kind's options by dest name, for `python -m pipeline.bench budget` and this module's own command."""
    return {
        "budget": (["--budget"], dict(type=_duration, required=True, metavar="DURATION",
                                      help="train.time_budget of each run, e.g. 2m or 120s")),
        "load": (["--load"], dict(type=_processes, default=0, metavar="N",
                                  help="start N competing CPU-bound processes during each run (default 0)")),
        "load_at": (["--load-at"], dict(type=float, default=0.0, metavar="SECONDS",
                                        help="seconds after the run's start at which the load starts (default 0)")),
    }


def main(argv: list[str] | None = None) -> int:
    """`python -m pipeline.bench.budget ...`: the same as `python -m pipeline.bench budget ...`."""
    parser = argparse.ArgumentParser(prog="python -m pipeline.bench.budget", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=1, help="runs (default 1)")
    parser.add_argument("--out", type=Path, help="results folder (default bench-results/budget-<time>)")
    for flags, kwargs in budget_options().values():
        parser.add_argument(*flags, **kwargs)
    parser.add_argument("rest", nargs="*", metavar="[CONFIG.yaml] [key=value ...]")
    args = parser.parse_intermixed_args(sys.argv[1:] if argv is None else argv)
    cfg_path, overrides = split_args(args.rest)
    return bench_budget(args, cfg_path, overrides)


if __name__ == "__main__":
    sys.exit(main())
