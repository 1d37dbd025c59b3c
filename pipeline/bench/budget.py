"""How well a run keeps its train.time_budget: the whole command's wall time against the budget.

    python -m pipeline.bench.budget configs/quickstart.yaml --budget 3m --repeats 2
    python -m pipeline.bench.budget configs/squeezenet_cifar10_fast.yaml --budget 5m --out bench-results/budget.json

Each repeat runs `train_dist.py CONFIG ... train.time_budget=BUDGET` in a fresh run directory and
times it from the spawn to the exit (interpreter start-up included, as the budget counts it). Reported:
the wall time and its ratio to the budget, the plan (steps, epochs, measured seconds per step) and
the end the plan predicted, and the final top-1. The target: within 5% of the budget. A benchmark,
not a test (tests/test_budget.py checks the planning with a fake clock).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pipeline.config import duration_seconds
from pipeline.constants import REPO_ROOT


def one_run(command: list[str], run_dir: Path) -> dict:
    t0 = time.monotonic()
    proc = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
    wall = time.monotonic() - t0
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    if proc.returncode != 0:
        return {"exit": proc.returncode, "wall_s": round(wall, 1), "error": proc.stderr.strip().splitlines()[-1:]}
    return {"exit": 0, "wall_s": round(wall, 1), "steps": summary.get("plan/total_steps"),
            "epochs": summary.get("plan/epochs"), "step_s": summary.get("plan/step_s"),
            "spent_s": summary.get("plan/spent_s"), "predicted_s": summary.get("plan/predicted_s"),
            "final_top1": summary.get("final/top1")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.bench.budget", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", required=True, help="train.time_budget, e.g. 3m")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", type=Path, help="write the results here as JSON")
    parser.add_argument("rest", nargs="*", metavar="[CONFIG.yaml] [key=value ...]")
    args = parser.parse_args(argv)
    budget_s = duration_seconds(args.budget)
    rows = []
    with tempfile.TemporaryDirectory(prefix="budget-bench-") as runs:
        for repeat in range(args.repeats):
            name = f"budget-{repeat}"
            command = [sys.executable, str(REPO_ROOT / "train_dist.py"), *args.rest, f"train.time_budget={args.budget}",
                       f"logging.runs_dir={runs}", f"logging.run_name={name}", "logging.progress=lines"]
            row = {"budget_s": budget_s, **one_run(command, Path(runs) / name)}
            row["ratio"] = round(row["wall_s"] / budget_s, 4)
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"\n{'budget s':>8} {'wall s':>7} {'wall/budget':>11} {'predicted s':>11} {'steps':>6} {'epochs':>6} "
          f"{'ms/step':>8} {'spent s':>7} {'top-1 %':>7}")
    for r in rows:
        if r["exit"] != 0:
            print(f"{r['budget_s']:>8.0f} exit {r['exit']}: {r.get('error')}")
            continue
        top1 = f"{100 * r['final_top1']:.2f}" if r.get("final_top1") is not None else "-"
        print(f"{r['budget_s']:>8.0f} {r['wall_s']:>7.1f} {r['ratio']:>11.3f} {r['predicted_s']:>11.1f} "
              f"{r['steps']:>6} {r['epochs']:>6} {1000 * r['step_s']:>8.1f} {r['spent_s']:>7.1f} {top1:>7}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"command": sys.argv, "rows": rows}, indent=1) + "\n")
    return 0 if all(r["exit"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
