"""The trainer end to end on the CPU: real processes, real DALI, real torchrun (gloo), real W&B offline.
"""

from __future__ import annotations

import json
import math
import subprocess

import pytest
import yaml
from wandb_log import offline_run

from pipeline.config import load_config
from pipeline.runs.metrics import read_metrics
from runs import REPO, TINY, assert_same_tensors, load_ckpt, run_env, run_train, train_command

TRAIN_KEYS = {"train/loss", "train/lr", "perf/images_per_sec", "perf/images_per_sec_per_device", "perf/data_wait_frac"}


VAL_KEYS = {"val/top1", "val/top5", "val/loss"}


@pytest.fixture(scope="module")
def single_run(tmp_path_factory):
    """One single-process run with W&B offline, shared by the tests that read its outputs."""
    runs = tmp_path_factory.mktemp("runs")
    proc = run_train(runs, "single", "wandb.mode=offline", "wandb.tags=[ci,tiny]", "name=tiny-exp")
    return runs / "single", proc


def newest_evaluation(run_dir) -> dict:
    """The eval.json of the run's newest evaluation (eval.only writes each into <run>/eval/<its own folder>)."""
    return json.loads(max(run_dir.glob("eval/*/eval.json"), key=lambda p: p.stat().st_mtime).read_text())


@pytest.mark.slow
def test_run_directory_holds_config_metrics_curves_and_checkpoints(single_run):
    run_dir, proc = single_run
    assert (run_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["name"] == "tiny-exp" and saved["train"]["epochs"] == 2
    assert load_config(run_dir / "config.yaml").to_dict() == saved
    last, best = load_ckpt(run_dir / "last.pt"), load_ckpt(run_dir / "best.pt")
    assert last["counters"]["epoch"] == 2 and last["counters"]["global_step"] == 12
    assert best["counters"]["epoch"] == last["counters"]["best_epoch"]  # written when the best came
    for ckpt in (last, best):
        assert ckpt["config"] == saved and {"model", "optimizer", "scheduler", "rank_states"} <= ckpt.keys()
    assert f"run directory: {run_dir}" in proc.stderr and "final top-1" in proc.stderr


@pytest.mark.slow
def test_metrics_jsonl_has_stable_names(single_run):
    run_dir, _ = single_run
    records = read_metrics(run_dir / "metrics.jsonl")
    train = [r for r in records if "train/loss" in r]
    val = [r for r in records if "val/top1" in r]
    assert all({"step", "epoch", "time"} <= r.keys() for r in records)
    assert [r["step"] for r in train] == [3, 6, 9, 12]
    assert TRAIN_KEYS <= train[-1].keys()  # the first window is warm-up for throughput
    assert all(math.isfinite(r["train/loss"]) for r in train)
    assert [r["epoch"] for r in val] == [1, 2] and all(VAL_KEYS <= r.keys() for r in val)
    assert 0 <= val[-1]["val/top1"] <= val[-1]["val/top5"] <= 1 and val[-1]["val/images"] == 1000


@pytest.mark.slow
def test_wandb_offline_run_has_the_metrics_config_and_summary(single_run):
    run_dir, _ = single_run
    wb = offline_run(run_dir)
    logged = set().union(*wb["history"])
    assert TRAIN_KEYS | VAL_KEYS | {"epoch", "step"} <= logged
    assert wb["run"].run_group == "tiny-exp"
    assert list(wb["run"].tags) == ["ci", "tiny", "fp32", "cpu", "dali-cpu"]  # the user's, then the automatic ones
    assert wb["run"].display_name == "single"
    assert wb["config"]["optim"]["lr"] == 0.1 and wb["config"]["environment"]["torch"]
    assert {"final/top1", "best/top1", "best/epoch", "perf/mean_images_per_sec"} <= wb["summary"].keys()
    records = read_metrics(run_dir / "metrics.jsonl")
    assert wb["summary"]["final/top1"] == [r for r in records if "val/top1" in r][-1]["val/top1"]


@pytest.mark.slow
def test_resume_auto_continues_with_the_same_optimizer_state(tmp_path):
    det = ("train.deterministic=true",)
    run_train(tmp_path, "straight", *det)  # 2 epochs in one go
    run_train(tmp_path, "split", *det, "train.epochs=1")
    # The same run name, resume=auto, extended to 2 epochs (a constant schedule here: nothing else moves).
    proc = run_train(tmp_path, "split", *det, "checkpoint.accept_changes=[train.epochs]")
    assert "(end of epoch 1): epoch 2 starts from its beginning" in proc.stderr
    straight, split = load_ckpt(tmp_path / "straight" / "last.pt"), load_ckpt(tmp_path / "split" / "last.pt")
    assert split["counters"]["global_step"] == 12
    assert_same_tensors(straight["model"], split["model"], "model")
    assert_same_tensors(straight["optimizer"], split["optimizer"], "optimizer")
    records = read_metrics(tmp_path / "split" / "metrics.jsonl")
    assert [r["step"] for r in records if "train/loss" in r] == [3, 6, 9, 12]


@pytest.mark.slow
def test_torchrun_two_processes_agree_and_evaluate_exactly(tmp_path):
    run_train(tmp_path, "ddp", nproc=2)
    last = load_ckpt(tmp_path / "ddp" / "last.pt")
    assert last["world_size"] == 2 and last["counters"]["global_step"] == 12
    digests = {r["digest"] for r in last["rank_states"]}
    assert len(digests) == 1, "the two ranks ended with different parameters"
    # The same weights evaluated by one and by two processes give the same figures.
    results = {}
    for nproc in (1, 2):
        run_train(tmp_path, "ddp", "eval.only=true", f"checkpoint.resume={tmp_path / 'ddp' / 'last.pt'}", nproc=nproc)
        results[nproc] = newest_evaluation(tmp_path / "ddp")
    one, two = results[1], results[2]
    assert one["val/images"] == two["val/images"] == 1000
    assert one["val/top1"] == two["val/top1"] and one["val/top5"] == two["val/top5"]
    assert one["val/loss"] == pytest.approx(two["val/loss"], rel=1e-5)
    records = read_metrics(tmp_path / "ddp" / "metrics.jsonl")
    assert records[-1]["val/top1"] == pytest.approx(one["val/top1"])  # the run's own final evaluation


@pytest.mark.slow
def test_eval_only_says_what_it_evaluates_and_writes_into_the_runs_eval_folder_rewriting_nothing(single_run):
    """`train_dist.py CONFIG eval.only=true checkpoint.resume=<run>/best.pt`: no "continuing" lines, no new run
    directory, no W&B run; the result sits in the evaluated run's eval/ folder and its record stays as it was."""
    run_dir, _ = single_run
    record = {name: (run_dir / name).read_bytes() for name in ("config.yaml", "metrics.jsonl", "summary.json")}
    runs_before, wandb_before = sorted(run_dir.parent.iterdir()), sorted((run_dir / "wandb").iterdir())
    best = run_dir / "best.pt"
    proc = subprocess.run(train_command() + [*TINY, f"logging.runs_dir={run_dir.parent}", "eval.only=true",
                                             f"checkpoint.resume={best}", "wandb.mode=offline"],
                          cwd=REPO, capture_output=True, text=True, timeout=240, env=run_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "continuing" not in proc.stderr and "run directory" not in proc.stderr
    step = load_ckpt(best)["counters"]["global_step"]
    (folder,) = run_dir.glob("eval/best-test-*")
    assert (f"evaluating {best} (step {step}, epoch {load_ckpt(best)['counters']['epoch']}; raw weights) on the test "
            f"split of data.source=sample (1000 images); the result goes to {folder / 'eval.json'}") in proc.stderr
    result = json.loads((folder / "eval.json").read_text())
    assert (result["checkpoint"], result["step"], result["split"], result["weights"]) == (str(best), step, "test", "raw")
    summary = json.loads(record["summary.json"])
    assert result["val/top1"] == pytest.approx(summary["best/top1"]) and result["val/images"] == 1000
    assert f"written to {folder / 'eval.json'}" in proc.stderr.strip().splitlines()[-1]
    assert sorted(run_dir.parent.iterdir()) == runs_before and sorted((run_dir / "wandb").iterdir()) == wandb_before
    assert {name: (run_dir / name).read_bytes() for name in record} == record
    assert not (run_dir / "config-changes.jsonl").exists()
    assert sorted(p.name for p in folder.iterdir()) == ["confusion.csv", "confusion.png", "eval.json", "per_class.csv"]


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_mixed_precision_paths_train_with_finite_loss(tmp_path, precision):
    run_train(tmp_path, precision, f"train.precision={precision}", "train.epochs=1")
    records = read_metrics(tmp_path / precision / "metrics.jsonl")
    losses = [r["train/loss"] for r in records if "train/loss" in r]
    assert losses and all(math.isfinite(x) for x in losses)
    ckpt = load_ckpt(tmp_path / precision / "last.pt")
    assert (ckpt["scaler"] is not None) == (precision == "fp16")
    if precision == "fp16":
        assert ckpt["scaler"]["scale"] > 0


@pytest.mark.slow
def test_label_smoothing_and_ema_options(tmp_path):
    run_train(tmp_path, "ema", "train.ema_decay=0.9", "train.label_smoothing=0.1", "train.epochs=1")
    ckpt = load_ckpt(tmp_path / "ema" / "last.pt")
    assert ckpt["ema"] is not None and int(ckpt["ema"]["n_averaged"]) == 6
    ema_w, model_w = ckpt["ema"]["module.features.0.weight"], ckpt["model"]["features.0.weight"]
    assert not ema_w.equal(model_w)


@pytest.mark.slow
def test_num_classes_auto_takes_the_data_s_classes_and_a_different_count_cannot_resume(tmp_path, tiny_tree):
    from conftest import write_imagefolder

    folder = ("data.source=imagefolder", "model.num_classes=auto", "train.global_batch_size=8", "train.epochs=1")
    proc = run_train(tmp_path, "auto", *folder, f"data.root={tiny_tree}", "wandb.mode=offline")  # 3 classes
    run_dir = tmp_path / "auto"
    assert "3 classes" in proc.stderr
    last = load_ckpt(run_dir / "last.pt")
    assert last["config"]["model"]["num_classes"] == 3 and last["model"]["head.2.bias"].shape == (3,)
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["model"]["num_classes"] == 3
    assert offline_run(run_dir)["config"]["model"]["num_classes"] == 3
    # The same setup on data with two classes resolves to 2: the 3-class checkpoint is refused.
    two = write_imagefolder(tmp_path / "two", {"train": {"a": 8, "b": 8}, "val": {"a": 2, "b": 2}})
    proc = run_train(tmp_path, "two", *folder, f"data.root={two}", f"checkpoint.resume={run_dir / 'last.pt'}",
                     check=False, timeout=60)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "model.num_classes: 3 in the checkpoint, 2 now" in proc.stderr

