"""How long a stop takes: SIGTERM at a chosen point of a real run, then the seconds until the process exits.

    python -m pipeline.bench.stop configs/quickstart.yaml checkpoint.every_steps=5 --repeats 3
    python -m pipeline.bench.stop configs/quickstart.yaml --nproc 2 --points step,evaluation

Each repeat starts `train_dist.py` (with --nproc > 1, `./launch.sh` with NPROC) in a fresh run
directory, waits for its point, sends SIGTERM (to the process, or to launch.sh: torchrun's agent) and
times the exit:
- start-up:    train.log says "run directory:" (components, loaders, compile and W&B still ahead)
- step:        the first training record is in metrics.jsonl (the loop is running)
- evaluation:  train.log says "evaluating" (epoch 1's evaluation has started)
- checkpoint:  a checkpoint's temporary file exists (a write is under way; missed when the write is
               over before the directory is read, which is reported)
The exit status must be 75 (a checkpoint written, or none needed). Also reported: the run's seconds
per training step (from metrics.jsonl), so a stop time reads as "steps". A benchmark, not a test: the
figures go to docs/fault-tolerance.md with the command and the machine; tests/e2e/test_stops.py checks
what each stop leaves behind.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pipeline.constants import REPO_ROOT
from pipeline.files import atomic_write_text
from pipeline.runs.metrics import read_metrics

POINTS = ("start-up", "step", "evaluation", "checkpoint")


def reached(point: str, run_dir: Path) -> bool:
    log = run_dir / "train.log"
    if point == "start-up":
        return log.exists() and "run directory:" in log.read_text()
    if point == "evaluation":
        return log.exists() and "evaluating" in log.read_text()
    if point == "checkpoint":
        return run_dir.is_dir() and any(".pt.tmp-" in p.name for p in run_dir.iterdir())
    metrics = run_dir / "metrics.jsonl"
    return metrics.exists() and "train/loss" in metrics.read_text()


def one_stop(point: str, command: list[str], run_dir: Path, timeout: float, env: dict[str, str]) -> dict:
    proc = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1", **env})
    deadline = time.monotonic() + timeout
    while not reached(point, run_dir):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            _, err = proc.communicate()
            return {"point": point, "landed": False, "detail": (err or "").strip().splitlines()[-1:] or ["?"]}
        time.sleep(0.001 if point == "checkpoint" else 0.005)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=timeout)
    stop_s = time.monotonic() - t0
    where = next((line.split("preempted at ", 1)[1].split(":")[0] for line in err.splitlines()
                  if "preempted at step" in line), "during start-up" if "during start-up" in err else "?")
    return {"point": point, "landed": True, "exit": proc.returncode, "stop_s": round(stop_s, 3), "stopped": where}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.bench.stop", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", default=",".join(POINTS), help=f"where to stop (default {','.join(POINTS)})")
    parser.add_argument("--repeats", type=int, default=3, help="runs per point (default 3)")
    parser.add_argument("--nproc", type=int, default=1, help="processes (torchrun; SIGTERM to its agent)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for a point, or an exit")
    parser.add_argument("--out", type=Path, help="write the results here as JSON")
    parser.add_argument("rest", nargs="*", metavar="[CONFIG.yaml] [key=value ...]")
    args = parser.parse_args(argv)
    points = [p for p in args.points.split(",") if p]
    unknown = [p for p in points if p not in POINTS]
    if unknown:
        parser.error(f"--points: unknown {unknown[0]!r}; choose from {', '.join(POINTS)}")
    # Several processes: ./launch.sh (torchrun's agent in its own process; the SIGTERM goes to it), as a user runs them.
    launcher = ["./launch.sh"] if args.nproc > 1 else [sys.executable, str(REPO_ROOT / "train_dist.py")]
    env = {"NPROC": str(args.nproc), "VENV": sys.prefix} if args.nproc > 1 else {}
    rows = []
    with tempfile.TemporaryDirectory(prefix="stop-bench-") as runs:
        for point in points:
            for repeat in range(args.repeats):
                name = f"{point}-{repeat}"
                command = [*launcher, *args.rest, f"logging.runs_dir={runs}", f"logging.run_name={name}",
                           "logging.progress=lines"]
                row = one_stop(point, command, Path(runs) / name, args.timeout, env)
                row["step_s"] = step_seconds(Path(runs) / name)
                rows.append(row)
                print(json.dumps(row), flush=True)
    print(f"\n{'point':<12} {'landed':>6} {'exit':>5} {'stop s (median, max)':>22} {'step s':>7}  stopped at")
    for point in points:
        mine = [r for r in rows if r["point"] == point and r["landed"]]
        if not mine:
            print(f"{point:<12} {0:>6}")
            continue
        stops = [r["stop_s"] for r in mine]
        steps = [r["step_s"] for r in mine if r["step_s"]]
        step = f"{statistics.median(steps):.3f}" if steps else "-"
        print(f"{point:<12} {len(mine):>6} {','.join(sorted({str(r['exit']) for r in mine})):>5} "
              f"{statistics.median(stops):>13.2f}, {max(stops):>6.2f} {step:>7}  "
              f"{'; '.join(sorted({r['stopped'] for r in mine}))}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, json.dumps({"command": sys.argv, "rows": rows}, indent=1) + "\n")
    return 0


def step_seconds(run_dir: Path) -> float | None:
    """Seconds per training step, from metrics.jsonl: the time between the first and last training records."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return None
    records = [r for r in read_metrics(path) if "train/loss" in r and "time" in r]
    if len(records) < 2 or records[-1]["step"] == records[0]["step"]:
        return None
    return (records[-1]["time"] - records[0]["time"]) / (records[-1]["step"] - records[0]["step"])


if __name__ == "__main__":
    sys.exit(main())
