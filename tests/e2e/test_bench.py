"""Benchmark kinds that measure: each runs a few real steps on the CPU and writes well-formed results.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import torch
from support.bench import FAST

from pipeline.bench.__main__ import main as bench_main
from pipeline.bench.loader import backend_loader
from pipeline.config import load_config
from pipeline.data import load_image_sets
from runs import REPO, run_env

ENV_KEYS = {"cpu", "cpu_count", "torch", "cuda", "dali", "git", "gpu_count"}


def run_bench(tmp_path, kind: str, *extra: str) -> dict:
    out = tmp_path / kind
    assert bench_main([kind, *FAST, *extra, f"--out={out}"]) == 0
    result = json.loads((out / "results.json").read_text())
    assert result["kind"] == kind and ENV_KEYS <= result["environment"].keys()
    assert result["settings"]["steps"] == 2 and result["settings"]["config"]["data"]["train"]["crop"] == 32
    assert (out / "chart.png").read_bytes()[:4] == b"\x89PNG"
    return result


def assert_rate(stat: dict) -> None:
    assert {"median", "min", "max", "repeats"} <= stat.keys() and len(stat["repeats"]) == 2
    assert 0 < stat["min"] <= stat["median"] <= stat["max"]


def test_loader_benchmark_compares_backends(tmp_path):
    result = run_bench(tmp_path, "loader", "--stages")
    rows = {r["backend"]: r for r in result["results"]}
    assert {"dali-cpu", "torchvision", "synthetic", "dali-cpu:read", "dali-cpu:decode", "dali-cpu:resize",
            "dali-cpu:full"} <= rows.keys()
    for row in rows.values():
        assert_rate(row["images_per_sec"])
    assert rows["dali-cpu"]["workers_or_threads"] == rows["torchvision"]["workers_or_threads"] == 1
    assert rows["torchvision"]["vs_torchvision"] == 1.0
    assert rows["dali-cpu"]["vs_torchvision"] == pytest.approx(
        rows["dali-cpu"]["images_per_sec"]["median"] / rows["torchvision"]["images_per_sec"]["median"])
    # Synthetic input does no work and a stage row only part of it: a ratio to torchvision would be noise.
    assert not any("vs_torchvision" in rows[name] for name in rows if name == "synthetic" or ":" in name)


def test_loader_backend_dali_means_dali_on_data_device_and_gets_its_stage_rows(tmp_path, capsys):
    result = run_bench(tmp_path, "loader", "--backends=dali", "--stages", "data.device=cpu")
    assert [r["backend"] for r in result["results"]] == ["dali-cpu", "dali-cpu:read", "dali-cpu:decode",
                                                          "dali-cpu:resize", "dali-cpu:full"]
    table = capsys.readouterr().out
    assert "dali-cpu:full" in table


def test_model_benchmark_matrix(tmp_path):
    result = run_bench(tmp_path, "model", "--models=squeezenet_bypass,squeezenet1_1", "--precisions=fp32,bf16",
                       "--formats=channels_last", "--batch-sizes=4,8", "--size=32")
    combos = {(r["model"], r["precision"], r["memory_format"], r["compile"], r["batch_size"]) for r in result["results"]}
    assert len(combos) == 2 * 2 * 1 * 1 * 2
    for row in result["results"]:
        assert row["size"] == 32 and row["compile"] == "off"
        assert_rate(row["images_per_sec"])


def test_model_benchmark_measures_the_configs_own_step_and_first_says_what_and_how_long(tmp_path, capsys):
    result = run_bench(tmp_path, "model", "model.name=squeezenet1_1", "train.precision=bf16")
    (row,) = result["results"]  # not the matrix: the config's model, precision, layout, compile and batch
    assert (row["model"], row["precision"], row["memory_format"], row["compile"], row["batch_size"], row["size"]) == (
        "squeezenet1_1", "bf16", "channels_last", "off", 16, 32)
    log = capsys.readouterr().err
    line = next(line for line in log.splitlines() if "bench model: " in line)
    assert ("bench model: squeezenet1_1 bf16 channels_last, compile off, batch 16, 32 px; 5 steps each "
            "(1 warm-up + 2 x 2): about ") in line and "--all measures every model" in line
    step_ms = float(re.search(r"from a timed step of each \((\d+) ms\)", line)[1])
    assert step_ms > 0 and log.index("bench model: ") < log.index("model squeezenet1_1 ")  # up front


def test_train_benchmark_reports_the_data_stall_and_the_torchvision_baseline(tmp_path):
    (row,) = run_bench(tmp_path, "train", "data.source=sample")["results"]
    assert row["processes"] == 1 and row["source"] == "sample" and row["compile"] == "off"
    for feed in ("real", "torchvision", "synthetic"):
        assert_rate(row[f"{feed}_images_per_sec"])
    ratio = row["real_images_per_sec"]["median"] / row["synthetic_images_per_sec"]["median"]
    assert row["real_over_synthetic"] == pytest.approx(ratio)
    assert row["data_stall_share"] == pytest.approx(max(0.0, 1 - ratio))
    assert row["real_over_torchvision"] == pytest.approx(
        row["real_images_per_sec"]["median"] / row["torchvision_images_per_sec"]["median"])


def test_train_benchmark_runs_the_trainers_step_with_the_configs_ema(tmp_path):
    """bench train runs TrainingStep, as the trainer does: every step moves the schedule and the EMA."""
    (row,) = run_bench(tmp_path, "train", "data.source=sample", "--feeds=synthetic,real", "train.ema_decay=0.99",
                       "schedule.name=cosine", "schedule.milestones=[]", "logging.log_every=3")["results"]
    steps = 2 * (1 + 2 * 2)  # two feeds, each: 1 warm-up step, then 2 repeats of 2 steps
    assert row["ema_decay"] == 0.99
    assert row["step_work"] == {"steps": steps, "schedule_steps": steps, "ema_updates": steps}


def test_doctor_measures_four_rates_and_names_a_verdict(tmp_path, capsys):
    result = run_bench(tmp_path, "doctor", "data.source=sample")
    # Minutes on a real config: every phase says when it starts and ends, none is silent.
    log = capsys.readouterr().err
    for number in range(1, 5):
        assert f"doctor {number}/4: " in log and re.search(rf"doctor {number}/4: .* done in \d+ s", log), log[-3000:]
    assert "training steps fed by synthetic input: " in log and "training steps fed by real input: " in log
    *rates, host, verdict = result["results"]
    assert [r["what"] for r in rates] == ["loader alone", "model alone (synthetic input)", "end to end",
                                          "model alone at 4x batch"]
    for row in rates:
        assert_rate(row["images_per_sec"])
    assert host["what"] == "host work per step (bench overhead)"
    assert 0 < host["non_model_us"] < host["host_us"] and host["ops"] > host["non_model_ops"] and host["reads"] == 0
    assert verdict["verdict"] in ("input-bound", "input-bound (contention)", "launch-bound", "compute-bound")
    assert verdict["why"] and verdict["knob"]


@pytest.mark.slow
def test_scaling_benchmark_runs_torchrun(tmp_path):
    result = run_bench(tmp_path, "scaling", "data.source=sample", "--nproc=1,2")
    rows = result["results"]
    assert [r["processes"] for r in rows] == [1, 2]
    assert rows[0]["real_scaling_efficiency"] == pytest.approx(1.0)
    for row in rows:
        per = row["real_images_per_sec_per_process"]["median"]
        assert per == pytest.approx(row["real_images_per_sec"]["median"] / row["processes"])


@pytest.mark.slow
def test_bench_console_table_and_bad_config():
    proc = subprocess.run([sys.executable, "-m", "pipeline.bench", "loader", "optim.lr=-1"], cwd=REPO,
                          capture_output=True, text=True, env=run_env())
    assert proc.returncode == 2 and "config error: optim.lr" in proc.stderr


@pytest.mark.parametrize("script, variable, what", [
    ("bench/cpu_check.sh", "CIFAR_JPEG", "the CIFAR-10 JPEG tarball"),
    ("bench/photo_check.sh", "FLOWERS", "the photographs' tarball"),
])
def test_check_scripts_say_in_one_line_which_data_a_clone_lacks(tmp_path, script, variable, what):
    """Not tar's 'tar (child): ... Cannot open' lines: what is missing, where, and how to get it; exit 2."""
    absent = tmp_path / "absent.tar.gz"
    proc = subprocess.run(["bash", script, str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True,
                          timeout=60, env=run_env({variable: str(absent), "DATA": str(tmp_path / "data")}))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [proc.stderr.strip()] and proc.stdout == ""
    assert proc.stderr.startswith(f"{script.split('/')[1]}: {what} not found at {absent} (a clone of the repository "
                                  "does not have it): ")
    assert ("scripts/make_cifar_jpeg.py" if variable == "CIFAR_JPEG" else "set FLOWERS to a tar of") in proc.stderr


def test_torchvision_baseline_does_the_same_work_as_dali():
    cfg = load_config(None, ["data.source=sample", "data.num_threads=1"])  # the reference 122 px recipe
    images = load_image_sets(cfg.data)[0]
    batches = {}
    for name in ("dali-cpu", "torchvision"):
        loader = backend_loader(name, cfg, images, 32, torch.device("cpu"), torch.float16)
        batches[name] = next(iter(loader))
    (xd, yd), (xt, yt) = batches["dali-cpu"], batches["torchvision"]
    assert xd.shape == xt.shape == (32, 3, 122, 122)
    assert xd.dtype == xt.dtype == torch.float16
    assert xd.is_contiguous(memory_format=torch.channels_last) and xt.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(yd, yt)  # the same sharded plan: the same images in the same order
    for x in (xd.float(), xt.float()):
        assert x.mean(dim=(1, 2, 3)).abs().max() < 1e-2
        assert (x.std(dim=(1, 2, 3), unbiased=False) - 1).abs().max() < 1e-2
    # Same images, same kind of views: per-image colour means agree closely on average.
    colour_d = xd.float().mean(dim=(2, 3))
    colour_t = xt.float().mean(dim=(2, 3))
    assert (colour_d - colour_t).abs().mean() < 0.15


def test_results_are_logged_to_wandb_as_a_benchmark_job(tmp_path):
    from wandb_log import offline_run

    out = tmp_path / "wb"
    args = ["model", *[a for a in FAST if a != "wandb.mode=disabled"], "wandb.mode=offline",
            "--models=squeezenet1_1", "--precisions=fp32", "--formats=channels_last", "--size=32", f"--out={out}"]
    assert bench_main(args) == 0
    wb = offline_run(out)
    assert wb["run"].job_type == "benchmark"
    (logged,) = [row for row in wb["history"] if "benchmark/model/_type" in row]
    assert logged["benchmark/model/_type"] == "table-file" and logged["benchmark/model/nrows"] == 1
    assert wb["config"]["bench"]["steps"] == 2 and wb["config"]["environment"]["torch"]


def test_the_training_step_adds_few_operators_and_reads_nothing_back(tmp_path):
    """The ledger on the trainer's real step (EMA on): the cost outside the model stays a handful of
    operators, and no step or evaluation batch waits for the device. A per-tensor EMA (~180
    operators) or a per-step .item() would fail here."""
    rows = run_bench(tmp_path, "overhead", "data.source=sample", "train.ema_decay=0.99", "eval.batch_size=100",
                     "train.label_smoothing=0.1")["results"]
    by = {r["component"]: r for r in rows}
    assert {"loader", "model", "optimizer", "schedule", "ema", "statistics", "meter", "stop agreement"} <= by.keys()
    assert by["model"]["ops_per_step"] > 100  # the counter sees the forward and backward
    assert by["ema"]["ops_per_step"] <= 3  # one fused lerp, one fused copy, the counter
    assert by["statistics"]["ops_per_step"] == 0
    assert by["non-model per step"]["ops_per_step"] <= 20
    assert by["total per step"]["reads_per_step"] == 0 and by["total per step"]["uploads_per_step"] == 0
    evaluation = by["evaluation, per batch"]
    assert evaluation["ops"] > 50 and evaluation["reads"] == 0 and evaluation["uploads"] == 0
    assert by["logging boundary (every logging.log_every steps)"]["reads"] >= 1  # where reads belong

