"""Which classes fail, from real runs: the final evaluation's report, W&B, eval.only, compare, two ranks.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from runs import run_env, run_train


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    run_train(runs, "pc", "wandb.mode=offline", "optim.lr=0.01")
    return runs / "pc"


@pytest.mark.slow
def test_the_final_evaluation_writes_the_per_class_report_and_w_and_b_gets_it(finished):
    from wandb_log import offline_run

    from pipeline.runs.per_class import read_per_class

    rows = read_per_class(finished)
    assert [r["class"] for r in rows][:3] == ["airplane", "automobile", "bird"]
    assert sum(r["support"] for r in rows) == 1000  # the sample's test split, each image once
    summary = json.loads((finished / "summary.json").read_text())
    recall = sum(r["recall"] * r["support"] for r in rows) / 1000
    assert abs(recall - summary["final/top1"]) < 1e-9  # the same evaluation as the headline
    assert (finished / "confusion.png").stat().st_size > 10_000
    history = offline_run(finished)["history"]
    keys = {k for row in history for k in row}
    assert {"per_class/table/_type", "per_class/confusion_png/_type"} <= keys
    assert any(k.startswith("per_class/confusion_table") for k in keys)  # the confusion chart's table


@pytest.mark.slow
def test_eval_only_writes_the_per_class_report_beside_eval_json(finished, tmp_path):
    import shutil

    run = tmp_path / "pc"
    shutil.copytree(finished, run, ignore=shutil.ignore_patterns("per_class.csv", "confusion.*", "wandb*"))
    run_train(tmp_path, "pc", "eval.only=true")
    assert not (run / "per_class.csv").exists()  # the run's own report is not the evaluation's
    (folder,) = (run / "eval").iterdir()  # <run>/eval/<checkpoint>-<split>-<time>/
    assert (folder / "eval.json").is_file() and (folder / "per_class.csv").is_file()
    assert (folder / "confusion.png").is_file()


@pytest.mark.slow
def test_compare_shows_two_runs_per_class_differences(finished, tmp_path):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(finished, other, ignore=shutil.ignore_patterns("wandb*", "*.pt"))
    text = (other / "per_class.csv").read_text().splitlines()
    cells = text[3].split(",")
    cells[3] = "0.9990"  # the third class's recall, changed
    (other / "per_class.csv").write_text("\n".join([*text[:3], ",".join(cells), *text[4:]]) + "\n")
    proc = subprocess.run([sys.executable, "-m", "pipeline.tools.compare", str(finished), str(other), "--per-class",
                           "--per-class-rows", "2"], cwd=REPO, capture_output=True, text=True, env=run_env())
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split("per class")[1].splitlines()
    assert lines[3].split()[0] == "bird" and "99.9" in lines[3]  # the largest change first
    assert "8 more classes" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "pipeline.tools.compare", str(finished), "--per-class"], cwd=REPO,
                          capture_output=True, text=True, env=run_env())
    assert proc.returncode == 2 and "compares two runs" in proc.stderr


@pytest.mark.slow
def test_two_ranks_sum_their_per_class_counts(tmp_path):
    """Under torchrun with 2 processes each rank counts its half of the split; the report holds every image once."""
    from pipeline.runs.per_class import read_per_class

    run_train(tmp_path, "ddp", "optim.lr=0.01", "train.epochs=1", nproc=2)
    rows = read_per_class(tmp_path / "ddp")
    assert sum(r["support"] for r in rows) == 1000 and all(r["support"] == 100 for r in rows)
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert abs(sum(r["recall"] * r["support"] for r in rows) / 1000 - summary["final/top1"]) < 1e-9

