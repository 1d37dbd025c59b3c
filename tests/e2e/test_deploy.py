"""From a trained run to a model people use: export (ONNX fp32, int8) of a real run, its gates, predict, W&B artifacts.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO
from support.deploy import onnx, ort

from runs import run_env, run_train


def run_module(module: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=run_env({"WANDB_MODE": "offline"}))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished tiny run (16 px, 2 x 6 steps, EMA on) with W&B offline. A learning rate of 0.01 keeps its
    logits in a trained model's range (tens): at 0.1 these 12 steps blow them up to hundreds, where fp32's
    rounding alone differs by more than the parity gate's 1e-4."""
    runs = tmp_path_factory.mktemp("runs")
    run_train(runs, "src", "train.ema_decay=0.9", "optim.lr=0.01", "wandb.mode=offline")
    return runs / "src"


@pytest.fixture(scope="module")
def exported(trained) -> tuple[subprocess.CompletedProcess, Path]:
    proc = run_module("pipeline.export", trained, "--int8", "--calibration", "128", "--latency-seconds", "0.2")
    return proc, trained / "export"


@pytest.mark.slow
def test_export_writes_one_self_contained_onnx_with_metadata_and_an_int8_model(exported, trained):
    proc, out = exported
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir() if p.is_file() and p.name != "wandb-run-id") == [
        "export.json", "model.int8.onnx", "model.onnx"]  # (and the export's W&B job: wandb/, wandb-run-id)
    model = onnx.load(str(out / "model.onnx"), load_external_data=False)
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)  # no .data file
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["classes"])[:2] == ["airplane", "automobile"]
    assert json.loads(props["eval_transform"])["crop"] == 16
    for key in ("opset", "torch", "onnx", "onnxruntime", "checkpoint_sha256", "git", "recorded_top1", "weights"):
        assert props.get(key), key
    assert props["weights"] == '"ema"' or props["weights"] == "ema"
    record = json.loads((out / "export.json").read_text())
    import hashlib
    assert record["metadata"]["checkpoint_sha256"] == hashlib.sha256((trained / "best.pt").read_bytes()).hexdigest()
    assert record["parity"]["max_abs_logit_difference"] <= 1e-4 and record["parity"]["top1_agreement"] == 1.0
    table = {row["model"]: row for row in record["table"]}
    assert set(table) == {"checkpoint", "fp32", "int8"}
    assert abs(table["fp32"]["top1"] - table["checkpoint"]["top1"]) <= 0.001  # within 0.1 point, same eval graph
    assert abs(table["fp32"]["top1"] - record["recorded"]["top1"]) <= 0.001  # and of the run's own evaluation
    assert record["int8"]["top1_drop_points"] <= 1.0
    assert table["int8"]["size_mb"] < table["fp32"]["size_mb"] / 2.5
    assert record["int8"]["operators"]["quantized"] > 0
    for row in record["table"]:
        assert row["latency"]["1"]["images_per_sec"] > 0 and row["latency"]["64"]["p99_ms"] > 0
    assert "img/s b64" in proc.stdout and "int8" in proc.stdout  # the table, printed


@pytest.mark.slow
def test_an_exported_model_runs_alone_in_onnxruntime_like_the_checkpoint(exported, tmp_path):
    """The file copied alone (no side files) runs, and its logits match eager PyTorch on uint8 pixels."""
    from pipeline.deploy.source import open_classifier

    _, out = exported
    alone = tmp_path / "model.onnx"
    alone.write_bytes((out / "model.onnx").read_bytes())
    session = ort.InferenceSession(str(alone), providers=["CPUExecutionProvider"])
    images = np.random.default_rng(1).integers(0, 256, (7, 16, 16, 3), dtype=np.uint8)
    logits = session.run(None, {"images": images})[0]
    eager = open_classifier(out.parent, "ema").run(images)
    assert logits.shape == (7, 10) and np.abs(logits - eager).max() < 1e-4


@pytest.mark.slow
def test_export_logs_the_models_as_wandb_artifacts(exported, trained):
    from wandb_log import offline_run

    _, out = exported
    artifacts = offline_run(out)["artifacts"]
    models = {a["name"]: a for a in artifacts if a["type"] == "model"}
    assert {"src-model", "src-model-int8"} <= set(models)
    assert models["src-model"]["files"] == ["model.onnx"]
    trained_run = offline_run(trained)["artifacts"]  # the training run logged its best weights
    assert [a["files"] for a in trained_run if a["type"] == "model"] == [["best.pt"]]


@pytest.mark.slow
def test_the_int8_gate_refuses_a_model_that_lost_too_much(trained, tmp_path, monkeypatch):
    """A drop above the limit: exit 1 naming the drop, no model.int8.onnx, the fp32 model kept."""
    import pipeline.deploy.export as export

    monkeypatch.setattr(export, "INT8_MAX_DROP", -100.0)  # any int8 model "drops" more than this
    out = tmp_path / "out"
    code = export.main([str(trained), "--int8", "--calibration", "64", "--latency-seconds", "0.05", "--out", str(out)])
    assert code == 1
    assert (out / "model.onnx").is_file() and not (out / "model.int8.onnx").exists()
    assert json.loads((out / "export.json").read_text())["int8"]["refused"] is True


@pytest.mark.slow
def test_bench_export_measures_fp32_and_int8_side_by_side(exported, tmp_path):
    _, out = exported
    proc = run_module("pipeline.bench", "export", out.parent, "--iterations", "12", "--seconds", "0.1",
                      "--out", tmp_path / "bench")
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "bench" / "results.json").read_text())
    rows = result["results"]
    assert result["kind"] == "export" and "int8_features" in result["environment"]
    assert {(r["model"], r["batch"]) for r in rows} == {(m, b) for m in ("model.onnx", "model.int8.onnx")
                                                        for b in (1, 8, 64)}
    assert {r["threads"] for r in rows} == {1, __import__("os").cpu_count()}
    for row in rows:
        assert 10 <= row["iterations"] <= 12 and row["images_per_sec"] > 0 and row["p50_ms"] <= row["p99_ms"]
    assert (tmp_path / "bench" / "chart.png").stat().st_size > 5_000
    report = run_module("pipeline.bench", "report", tmp_path / "bench")
    assert report.returncode == 0 and "model.int8.onnx" in report.stdout


def test_export_refuses_bad_input_in_one_line_and_writes_nothing(tmp_path):
    empty = tmp_path / "empty-run"
    empty.mkdir()
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip")
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, foreign)
    for target, expected in ((empty, "no checkpoint in this folder"), (corrupt, "corrupt"),
                             (foreign, "not a checkpoint of this project"), (tmp_path / "nope", "no such")):
        proc = run_module("pipeline.export", target)
        assert proc.returncode == 2, (target, proc.stderr)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and expected in lines[0] and str(target) in lines[0], proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corrupt.pt", "empty-run", "foreign.pt"]


@pytest.mark.slow
def test_export_refuses_a_calibration_set_smaller_than_asked(trained, tmp_path):
    proc = run_module("pipeline.export", trained, "--int8", "--calibration", "100000", "--out", tmp_path / "out")
    assert proc.returncode == 2 and "--calibration 100000" in proc.stderr and "5000 images" in proc.stderr
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


@pytest.mark.slow
def test_predict_prints_one_row_per_image_in_every_format(exported, images):
    _, out = exported
    jsonl = run_module("pipeline.predict", out / "model.onnx", images / "photos", images / "shard.tar", "--format",
                       "jsonl", "--topk", "3")
    assert jsonl.returncode == 0, jsonl.stderr
    rows = [json.loads(line) for line in jsonl.stdout.splitlines()]
    assert [Path(r["path"]).name for r in rows] == ["img0.jpg", "img1.jpg", "img2.jpg", "a.jpg", "b.jpg"]
    assert rows[3]["path"].endswith("shard.tar:sample/a.jpg")
    for row in rows:
        probs = [t["probability"] for t in row["top"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001
    csv_out = run_module("pipeline.predict", out / "model.onnx", images / "photos", "--format", "csv", "--topk", "2")
    assert csv_out.returncode == 0 and csv_out.stdout.splitlines()[0] == "path,class1,probability1,class2,probability2"
    assert len(csv_out.stdout.splitlines()) == 4
    table = run_module("pipeline.predict", out.parent, images / "photos" / "img0.jpg", "--topk", "1")
    assert table.returncode == 0 and table.stdout.count("\n") == 1 and "%" in table.stdout
    # the checkpoint and its export classify alike
    assert table.stdout.split()[1] == rows[0]["top"][0]["class"]


@pytest.mark.slow
def test_predict_lists_files_that_do_not_decode_and_classifies_the_rest(exported, images):
    _, out = exported
    proc = run_module("pipeline.predict", out / "model.onnx", images / "photos", images / "bad", "--format", "csv")
    assert proc.returncode == 2
    assert len(proc.stdout.splitlines()) == 1 + 3  # header + the three good images
    assert "2 file(s) not classified" in proc.stderr
    assert "notes.jpg: not an image" in proc.stderr and "cut.jpg: cannot decode" in proc.stderr


def test_predict_refuses_an_onnx_without_metadata_and_a_missing_path(tmp_path, images):
    plain = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["y"])], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.UINT8, [1, 16, 16, 3])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.UINT8, [1, 16, 16, 3])]))
    onnx.save(plain, str(tmp_path / "plain.onnx"))
    proc = run_module("pipeline.predict", tmp_path / "plain.onnx", images / "photos")
    assert proc.returncode == 2 and "without this project's metadata" in proc.stderr and "plain.onnx" in proc.stderr
    proc = run_module("pipeline.predict", tmp_path / "plain.onnx", tmp_path / "missing")
    assert proc.returncode == 2


@pytest.mark.slow
def test_every_checkpoint_records_class_names_and_the_eval_transform(trained, tmp_path):
    """A checkpoint alone is enough; one written before these were recorded gets them from its run's config."""
    from pipeline.training.weights import read_weights

    ckpt = torch.load(trained / "last.pt", weights_only=True)
    assert ckpt["classes"][0] == "airplane" and ckpt["eval_transform"]["crop"] == 16 and ckpt["init_from"] is None
    source = read_weights(trained / "last.pt", "ema")
    assert source.weights == "ema" and source.notes == [] and source.transform.size == 16
    older = {k: v for k, v in ckpt.items() if k not in ("classes", "eval_transform", "init_from")}
    torch.save(older, tmp_path / "older.pt")
    source = read_weights(tmp_path / "older.pt", "ema")
    assert source.classes == ckpt["classes"] and source.transform.to_dict() == ckpt["eval_transform"]
    assert any("class names are not recorded" in note for note in source.notes)

