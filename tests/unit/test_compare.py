"""pipeline.tools.compare and sweep without runs: figures from metrics, dashes, columns, the grid's checks and dry run.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from support.compare import text_table

from pipeline.config import load_config
from pipeline.tools import compare, sweep
from runs import REPO, TINY

LEVERS = {"data.train.auto_augment": "trivial_augment", "data.train.erase_prob": 0.25,
          "data.train.progressive_start_crop": 96, "train.mixup_alpha": 0.8, "train.cutmix_alpha": 1.0,
          "eval.tta": "flip"}


def test_figures_derived_from_metrics_jsonl(tmp_path, capsys):
    """Without summary.json: throughput is total images over total time, `time` keeps rising across a
    resume (it restarts at 0 in the new process), a killed writer's partial last line is dropped."""
    run = tmp_path / "hand-made"
    run.mkdir()
    (run / "config.yaml").write_text("train:\n  epochs: 3\n")
    records = [{"time": 1.0, "epoch": 0.5, "train/loss": 2.0, "perf/images_per_sec": 100.0},
               {"time": 2.0, "epoch": 1.0, "train/loss": 1.5, "perf/images_per_sec": 300.0},
               {"time": 2.5, "epoch": 1, "val/top1": 0.3},
               {"time": 0.4, "epoch": 1.5, "train/loss": 1.2},  # resumed here
               {"time": 1.0, "epoch": 2, "val/top1": 0.25}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + '{"time": 1.3, "ep')
    assert compare.main([str(run)]) == 0
    (row,) = text_table(capsys.readouterr().out)
    assert (row["final top-1 %"], row["best top-1 %"], row["best epoch"]) == ("25.00", "30.00", "1")
    assert row["img/s"] == "150"  # two equal windows at 100 and 300 img/s, not their mean of 200
    assert row["wall s"] == "3.5" and row["end"] == "running?"  # fresh file, epoch 3 not evaluated yet
    (run / "config.yaml").write_text("train:\n  epochs: 2\n")
    assert compare.load_run(run).figures["end/reason"] == "unknown"  # all evaluated, but no summary.json


def test_what_was_never_measured_shows_a_dash(tmp_path, capsys):
    """A run whose epochs were all shorter than logging.perf_warmup_steps has no throughput (summary.json of
    older versions says 0), and a run stopped before its first evaluation has no accuracy at all."""
    def make(name: str, records: list[dict], summary: dict) -> Path:
        run = tmp_path / name
        run.mkdir()
        (run / "config.yaml").write_text(f"train:\n  epochs: 2\nname: {name}\n")
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        (run / "summary.json").write_text(json.dumps(summary))
        return run

    short = make("short", [{"step": 2, "epoch": 1, "time": 1.0, "val/top1": 0.93}],
                 {"final/top1": 0.93, "best/top1": 0.93, "best/epoch": 1, "perf/mean_images_per_sec": 0.0,
                  "tta/92.6/epoch": 1, "tta/92.6/wall_seconds": 1.0, "end/reason": "finished",
                  "time/wall_seconds": 2.0})
    stopped = make("stopped", [{"step": 1, "epoch": 0.5, "time": 0.5, "train/loss": 2.3}],
                   {"end/reason": "preempted", "time/wall_seconds": 0.7})
    assert compare.main([str(short), str(stopped)]) == 0
    first, second = text_table(capsys.readouterr().out)
    assert first["img/s"] == "-" and first["to 92.6%: epoch, wall s"] == "1, 1"
    assert (second["final top-1 %"], second["best top-1 %"], second["best epoch"], second["img/s"]) == ("-",) * 4
    assert second["to 92.6%: epoch, wall s"] == "-"  # never evaluated: not "not reached"
    assert second["end"] == "preempted"


def test_the_augmentation_levers_are_columns_when_they_differ(tmp_path, capsys):
    """Runs written with and without the levers (their config.yaml as the trainer saves it): each lever is a column."""
    dirs = []
    for name, overrides in (("plain", []), ("levers", [f"{k}={v}" for k, v in LEVERS.items()])):
        run = tmp_path / name
        run.mkdir()
        (run / "config.yaml").write_text(load_config(None, [f"name={name}", *overrides]).to_yaml())
        (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "epoch": 1, "time": 1.0, "val/top1": 0.5}) + "\n")
        dirs.append(str(run))
    assert compare.main(dirs) == 0
    plain, levers = text_table(capsys.readouterr().out)
    assert {key: levers[key] for key in LEVERS} == {key: str(value) for key, value in LEVERS.items()}
    assert plain["data.train.auto_augment"] == "none" and plain["eval.tta"] == "none"


def test_grid_is_validated_before_any_point_runs(tmp_path, capsys):
    code = sweep.main(["--grid", "optim.lr=0.05,-1", *TINY, f"logging.runs_dir={tmp_path}"])
    assert code == 2 and list(tmp_path.iterdir()) == []
    err = capsys.readouterr().err
    assert "optim.lr=-1" in err and "greater than 0" in err
    assert sweep.main(["--grid", "optim.lrr=0.05", *TINY]) == 2
    assert "did you mean 'lr'" in capsys.readouterr().err


def test_dry_run_prints_one_entry_point_command_per_point(tmp_path, capsys):
    args = ["configs/quickstart.yaml", "--grid", "optim.lr=0.05,0.1", "--grid", "schedule.name=onecycle,cosine",
            "--name", "s", "--nproc", "2", f"logging.runs_dir={tmp_path}", "--dry-run"]
    assert sweep.main(args) == 0 and list(tmp_path.iterdir()) == []
    commands = capsys.readouterr().out.splitlines()
    assert len(commands) == 4
    assert all("torch.distributed.run --standalone --nproc-per-node=2" in c and "train_dist.py configs/quickstart.yaml"
               in c and "wandb.group=s" in c for c in commands)
    names = [re.search(r"logging.run_name=(\S+)", c).group(1) for c in commands]
    assert names == ["s-lr0.05-nameonecycle", "s-lr0.05-namecosine", "s-lr0.1-nameonecycle", "s-lr0.1-namecosine"]


def test_point_labels_are_unique_and_filesystem_safe():
    grid = sweep.parse_grid(["data.train.crop=30,32", "data.eval.crop=36", "schedule.milestones=[5,10],[5]"])
    assert grid["schedule.milestones"] == ["[5,10]", "[5]"]
    points = sweep.grid_points(grid)
    labels = sweep.unique_labels(points, sweep.short_names(list(grid)))
    assert len(set(labels)) == len(points) == 4
    assert labels[0] == "data_train_crop30-data_eval_crop36-milestones5_10"
    assert all(re.fullmatch(r"[A-Za-z0-9._+-]+", label) for label in labels)
    clash = [{"k": "a b"}, {"k": "a/b"}]  # both sanitize to "ka_b": a hash of the values tells them apart
    assert len(set(sweep.unique_labels(clash, {"k": "k"}))) == 2


def test_wandb_sweep_example_uses_the_entry_point_and_valid_values():
    spec = yaml.safe_load((REPO / "configs" / "sweep.yaml").read_text())
    assert spec["command"] == ["${env}", "${interpreter}", "train_dist.py", "configs/quickstart.yaml",
                               "${args_no_hyphens}"]
    assert spec["metric"] == {"name": "val/top1", "goal": "maximize"}
    for key, domain in spec["parameters"].items():
        values = domain.get("values", [domain.get("value")] if "value" in domain else
                            [domain.get("min"), domain.get("max")])
        for value in values:
            # the agent writes f"{param}={value}" (wandb/sdk/launch/sweeps/utils.py)
            load_config(REPO / "configs" / "quickstart.yaml", [f"{key}={value}"])

