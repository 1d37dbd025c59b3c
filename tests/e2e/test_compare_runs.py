"""pipeline.tools.compare and sweep on runs of the real trainer (the tiny settings of tests/runs.py).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from support.compare import text_table

from pipeline.config import load_config
from pipeline.tools import compare
from runs import REPO, TINY, run_env, run_train

# Three runs, each differing from the baseline in one key. The first two come from a local grid
# (`pipeline.tools.sweep`, which the sweep test checks), the third from run_train at the same time:
# five processes would not fit this file's time budget on two cores.
SWEEP = ["--grid", "optim.lr=0.1,0.05", "--name", "cmp"]


VARIANTS = {"cmp-lr0.1": ("0.1", "0.0"), "cmp-lr0.05": ("0.05", "0.0"), "cmp-smooth": ("0.1", "0.1")}


DIFFERING = {"optim.lr", "train.label_smoothing"}


@dataclass
class Runs:
    root: Path                             # holds the three run directories
    sweep: subprocess.CompletedProcess     # what `python -m pipeline.tools.sweep` printed

    def dirs(self) -> list[str]:
        return [str(self.root / name) for name in VARIANTS]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Runs:
    root = tmp_path_factory.mktemp("compare-runs")
    with ThreadPoolExecutor(2) as pool:
        swept = pool.submit(run_cli, "pipeline.tools.sweep", *SWEEP, *TINY, f"logging.runs_dir={root}")
        pool.submit(run_train, root, "cmp-smooth", "train.label_smoothing=0.1", "wandb.group=cmp").result()
        proc = swept.result()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return Runs(root, proc)


def run_cli(module: str, *args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=240, env=run_env({"PYTHONPATH": str(REPO)}))


def val_records(run_dir: Path) -> list[dict]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if "val/top1" in r]


def hand_made_runs(root: Path, count: int) -> list[compare.Run]:
    """`count` runs with long names, differing in two keys, each with a few evaluations and loss records."""
    runs = []
    for i in range(count):
        run = root / f"quickstart-lr-sweep-20261207-1136{i:02d}"
        run.mkdir(parents=True)
        config = load_config(None, ["name=quickstart", f"optim.lr={0.01 * (i + 1):g}",
                                    f"train.label_smoothing={0.1 * (i % 2):g}"])
        (run / "config.yaml").write_text(config.to_yaml())
        records = [{"step": 10 * e, "epoch": e, "time": 3.0 * e, "train/loss": 2.3 - 0.1 * e - 0.01 * i,
                    **({"val/top1": 0.1 * e + 0.004 * i} if e % 2 == 0 else {})} for e in range(1, 7)]
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        runs.append(compare.load_run(run))
    return runs


@pytest.mark.slow
def test_table_shows_the_differing_keys_and_the_recorded_accuracy(runs, capsys):
    assert compare.main(runs.dirs()) == 0
    rows = text_table(capsys.readouterr().out)
    assert [row["run"] for row in rows] == list(VARIANTS)
    config_columns = set(rows[0]) - {"run", "final top-1 %", "best top-1 %", "best epoch", "img/s", "wall s", "end"}
    assert config_columns == DIFFERING
    assert [(row["optim.lr"], row["train.label_smoothing"]) for row in rows] == list(VARIANTS.values())
    for row in rows:
        evals = val_records(runs.root / row["run"])
        best = max(evals, key=lambda r: r["val/top1"])
        assert row["final top-1 %"] == f"{100 * evals[-1]['val/top1']:.2f}"
        assert row["best top-1 %"] == f"{100 * best['val/top1']:.2f}"
        assert row["best epoch"] == f"{best['epoch']}"
        assert float(row["img/s"].replace(",", "")) > 0 and float(row["wall s"]) > 0
        assert row["end"] == "finished"  # from the summary.json the trainer wrote at the end


@pytest.mark.slow
def test_glob_patterns_are_expanded(runs, capsys):
    assert compare.main([str(runs.root / "cmp-lr*"), str(runs.root / "cmp-smooth"), runs.dirs()[0]]) == 0
    assert sorted(row["run"] for row in text_table(capsys.readouterr().out)) == sorted(VARIANTS)  # each once


@pytest.mark.slow
def test_markdown_table(runs, capsys):
    assert compare.main([*runs.dirs(), "--markdown"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 + len(VARIANTS)
    assert all(line.startswith("| ") and line.endswith(" |") for line in lines)
    columns = [len(re.findall(r"(?<!\\)\|", line)) - 1 for line in lines]
    assert len(set(columns)) == 1, columns
    assert re.fullmatch(r"\|( ---:? \|)+", lines[1]), lines[1]
    assert DIFFERING <= {cell.strip() for cell in lines[0].split("|")}


@pytest.mark.slow
def test_plot_writes_a_png(runs, tmp_path, capsys):
    out = tmp_path / "compare.png"
    assert compare.main([*runs.dirs(), "--plot", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


@pytest.mark.slow
def test_summary_json_is_preferred(runs, tmp_path, capsys):
    """summary.json (the trainer's end-of-run record) wins over what metrics.jsonl suggests."""
    run = tmp_path / "with-summary"
    shutil.copytree(runs.root / "cmp-lr0.1", run)
    (run / "summary.json").write_text(json.dumps({
        "final/top1": 0.9123, "best/top1": 0.9301, "best/epoch": 7, "perf/mean_images_per_sec": 12345.0,
        "end/reason": "target_reached", "end/exit_code": 0, "time/wall_seconds": 456.0,
        "time/train_seconds": 400.0, "tta/92.6/train_seconds": 100.0, "tta/92.6/wall_seconds": 123.4,
        "tta/92.6/epoch": 7}))
    plain = tmp_path / "without-summary"  # a run killed before it could write one
    shutil.copytree(runs.dirs()[1], plain)
    (plain / "summary.json").unlink()
    assert compare.main([str(run), str(plain)]) == 0
    with_summary, without = text_table(capsys.readouterr().out)
    assert with_summary["final top-1 %"] == "91.23" and with_summary["best top-1 %"] == "93.01"
    assert with_summary["best epoch"] == "7" and with_summary["img/s"] == "12,345"
    assert with_summary["wall s"] == "456.0" and with_summary["end"] == "target_reached"
    assert with_summary["to 92.6%: epoch, wall s"] == "7, 123"
    assert without["to 92.6%: epoch, wall s"] == "not reached" and without["end"] == "unknown"


@pytest.mark.parametrize("count", [2, 7, 20])
def test_plot_names_the_runs_in_a_legend_inside_the_picture_and_tables_the_differing_keys(tmp_path, count):
    import matplotlib.pyplot as plt
    from figures import texts_outside

    runs = hand_made_runs(tmp_path, count)
    fig = compare.draw_runs(runs)
    try:
        assert texts_outside(fig) == []
        (legend,) = fig.legends
        assert [t.get_text() for t in legend.get_texts()] == [run.name for run in runs]  # names, not key=value
        (table,) = [table for ax in fig.axes for table in ax.tables]
        cells = table.get_celld()
        assert [cells[0, c].get_text().get_text() for c in range(3)] == ["run", "optim.lr", "train.label_smoothing"]
        assert [cells[r, 1].get_text().get_text() for r in range(1, count + 1)] == [run.shown("optim.lr")
                                                                                     for run in runs]
        line_colors = [line.get_color() for line in fig.axes[0].get_lines()]
        assert len(set(line_colors)) == count  # no two runs share a colour
        assert [cells[r, 0].get_text().get_color() for r in range(1, count + 1)] == line_colors
    finally:
        plt.close(fig)


def test_not_a_run_directory_exits_2_naming_the_path(tmp_path):
    (tmp_path / "no-metrics").mkdir()
    (tmp_path / "no-metrics" / "config.yaml").write_text("name: x\n")
    for bad, why in [(tmp_path / "missing", "no such run directory"),
                     (tmp_path / "no-metrics", "no metrics.jsonl"),
                     (tmp_path / "nothing-*", "no run directories match")]:
        proc = run_cli("pipeline.tools.compare", str(bad))
        assert proc.returncode == 2, proc.stderr
        assert str(bad) in proc.stderr and why in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_local_grid_trains_every_point_and_prints_the_table(runs):
    proc = runs.sweep
    for name, lr in [("cmp-lr0.1", 0.1), ("cmp-lr0.05", 0.05)]:
        cfg = yaml.safe_load((runs.root / name / "config.yaml").read_text())
        assert cfg["optim"]["lr"] == lr and cfg["wandb"]["group"] == "cmp" and cfg["logging"]["run_name"] == name
        assert val_records(runs.root / name)
    assert proc.stdout.count("train_dist.py") == 2  # each point through the entry point, in order
    table = proc.stdout[proc.stdout.index("\nrun "):]
    assert [(row["run"], row["optim.lr"]) for row in text_table(table)] == [("cmp-lr0.1", "0.1"),
                                                                            ("cmp-lr0.05", "0.05")]

