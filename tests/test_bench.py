"""Benchmark tool: every kind runs a few steps on the CPU and writes well-formed results.

These tests check correctness (fields, shapes, work done), never timings.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import torch

from pipeline.bench.__main__ import main as bench_main
from pipeline.bench.__main__ import parse_args
from pipeline.bench.loader import backend_loader
from pipeline.bench.report import compared_to_torchvision, draw_chart, format_table
from pipeline.config import load_config
from pipeline.data import load_image_sets
from figures import texts_outside
from runs import REPO, run_env

FAST = ["--steps=2", "--warmup=1", "--repeats=2", "wandb.mode=disabled", "data.num_threads=1",
        "data.train.min_side=34", "data.train.max_side=38", "data.train.crop=32",
        "train.global_batch_size=16"]
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


@pytest.mark.parametrize("argv, words", [
    (["loader", "--backends=dali,tochvision"], "argument --backends: unknown 'tochvision'; choose from dali, "
                                               "dali-gpu, dali-cpu, torchvision, synthetic"),
    (["loader", "--models=squeezenet1_1"], "unrecognized arguments: --models"),  # another kind's option
    ([], "error: say what to measure: one of loader, model, train, scaling, doctor, overhead, budget, report, export "
         "(then an optional CONFIG.yaml"),  # not "required: kind, [CONFIG.yaml]": the config is optional
    (["configs/quickstart.yaml"], "error: say what to measure: one of loader, "),
])
def test_bench_rejects_what_the_kind_cannot_use(argv, words, capsys):
    with pytest.raises(SystemExit) as info:
        bench_main(argv)
    assert info.value.code == 2 and words in capsys.readouterr().err


def test_loader_stages_without_a_dali_backend_is_an_error(tmp_path, capsys):
    assert bench_main(["loader", "--backends=torchvision", "--stages", *FAST, f"--out={tmp_path}"]) == 2
    assert "--stages: times the DALI graph" in capsys.readouterr().err
    assert not tmp_path.joinpath("results.json").exists()


@pytest.mark.parametrize("kind", [None, "loader", "model", "train", "scaling", "doctor", "budget", "report", "export"])
def test_every_bench_kind_has_its_own_help(kind, capsys):
    with pytest.raises(SystemExit) as info:
        bench_main([kind, "--help"] if kind else ["--help"])
    assert info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines at the terminal's width
    assert out.startswith(f"usage: python -m pipeline.bench{' ' + kind if kind else ''} ")
    if kind == "loader":
        assert "dali-cpu = DALI, CPU operators" in out and "--stages" in out and "--models" not in out
    if kind == "model":
        from pipeline.config import MODEL_NAMES

        assert "--batch-sizes" in out and "--backends" not in out
        assert f"networks, from {', '.join(MODEL_NAMES)}" in out  # the schema's names, every one
        assert "By default the config's own" in out and "--all measures every model" in out
        assert "says what it will measure and about how long" in out


def loader_rows() -> list[dict]:
    """Loader results as the issue measured them: real loaders in the thousands, synthetic input in the
    tens of millions of images/s, DALI's read-only stage in between."""
    def row(backend: str, median: float) -> dict:
        stat = {"median": median, "min": 0.95 * median, "max": 1.05 * median, "repeats": [median] * 2}
        ratio = {"vs_torchvision": median / 4_000} if compared_to_torchvision(backend) else {}
        return {"backend": backend, "source": "imagefolder", "batch_size": 64, "workers_or_threads": 2,
                "images_per_sec": stat, **ratio}
    return [row("dali-cpu", 12_000), row("torchvision", 4_000), row("synthetic", 57_000_000),
            row("dali-cpu:read", 300_000), row("dali-cpu:decode", 13_000), row("dali-cpu:full", 12_000)]


def test_loader_chart_keeps_every_bar_readable_beside_synthetic_input():
    """Each bar's drawn length, read back from the figure, is a visible share of the axis and grows with
    its value: the real loaders are not flattened against a 57M img/s synthetic bar."""
    import matplotlib.pyplot as plt

    fig = draw_chart("loader", loader_rows(), "loader")
    try:
        ax = fig.axes[0]
        fig.canvas.draw()
        x_min, x_max = ax.get_xlim()
        lengths = {}
        for label, bar in zip(ax.get_yticklabels(), ax.patches):
            ends = ax.transData.transform([(max(bar.get_x(), x_min), 0), (bar.get_x() + bar.get_width(), 0)])
            lengths[label.get_text()] = (ends[1, 0] - ends[0, 0]) / ax.bbox.width
        assert min(lengths.values()) > 0.05, lengths  # on a linear axis torchvision's bar is 0.007% of it
        assert lengths["torchvision"] < lengths["dali-cpu"] < lengths["dali-cpu:read"] < lengths["synthetic"]
        assert {"4,000", "12,000", "57,000,000"} <= {t.get_text() for t in ax.texts}  # each bar says its median
    finally:
        plt.close(fig)


# A machine's description as a GPU host gives it (envinfo.describe): the title every chart carries.
LONG_TITLE = ("model: Intel(R) Xeon(R) Platinum 8480+ (112 cores), 8x NVIDIA H200 (driver 570.86.15, 139 GiB); "
              "torch 2.14.1+cu130, CUDA 13.0, cuDNN 91002, DALI 2.4.0, git 6816d0730043-dirty")


def chart_rows(kind: str) -> list[dict]:
    """Rows of each chart kind, with the longest labels the kind draws."""
    stat = {"median": 1200.0, "min": 1100.0, "max": 1300.0, "repeats": [1200.0] * 2}
    if kind == "loader":
        return loader_rows()
    if kind == "model":
        return [{"model": name, "precision": "bf16", "memory_format": "channels_last", "compile": "max-autotune",
                 "batch_size": 1024, "size": 224, "images_per_sec": stat} for name in ("squeezenet1_0_bypass",
                                                                                          "resnet50")]
    return [{"model": "squeezenet_bypass", "processes": n, "source": "imagefolder", **{
        f"{feed}_images_per_sec": stat for feed in ("real", "torchvision", "synthetic")}} for n in (1, 8)]


@pytest.mark.parametrize("kind", ["loader", "model", "train"])
def test_every_bench_chart_fits_its_title_and_labels(kind):
    """The title names the machine and versions, wider than the figure: it is wrapped, not cut off
    (`...; git ...` ran past the picture's edges)."""
    import matplotlib.pyplot as plt

    fig = draw_chart(kind, chart_rows(kind), LONG_TITLE)
    try:
        assert texts_outside(fig) == []
        title = " ".join(fig.texts[0].get_text().split()) if fig.texts else ""
        assert title == LONG_TITLE  # every word of it, on as many lines as it takes
    finally:
        plt.close(fig)


def test_loader_table_keeps_its_columns_aligned_beside_synthetic_input():
    lines = format_table("loader", loader_rows()).splitlines()
    assert len({len(line.rsplit("  ", 1)[0]) for line in lines}) == 1, "\n".join(lines)
    assert "57,000,000" in lines[3]


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


def test_model_benchmark_settings_the_config_all_and_each_dimension():
    from pipeline.bench.model import describe_settings, settings
    from pipeline.config import MODEL_NAMES

    def chosen(*options: str, config: tuple[str, ...] = ()) -> list:
        args, cfg_path, overrides = parse_args(["model", *options, *config])
        return settings(load_config(cfg_path, overrides), args, torch.device("cpu"))

    (own,) = chosen(config=("configs/quickstart.yaml",))
    assert (own.model, own.precision, own.memory_format, own.compile, own.batch_size) == (
        "squeezenet_bypass", "fp32", "channels_last", "off", 64)  # precision auto is fp32 on a CPU
    every = chosen("--all", config=("configs/quickstart.yaml",))
    assert len(every) == 5 * 2 * 2 and {s.model for s in every} == set(MODEL_NAMES)
    assert describe_settings(every, 32) == ("20 settings (5 models x 2 precisions x 2 memory formats, compile off, "
                                            "batch 64, 32 px)")
    two = chosen("--models=resnet50,squeezenet1_0", "--compile=default", config=("train.precision=bf16",))
    assert [(s.model, s.precision, s.memory_format, s.compile) for s in two] == [
        ("resnet50", "bf16", "channels_last", "default"), ("squeezenet1_0", "bf16", "channels_last", "default")]


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


@pytest.mark.parametrize("rates, device, expected, knob", [
    ((500, 1000, 480, 1100), "cuda", "input-bound", "data.device=gpu"),  # data.device=cpu below
    ((5000, 1000, 700, 1100), "cuda", "input-bound (contention)", "data.num_threads=1"),
    ((5000, 1000, 990, 3000), "cuda", "launch-bound", "train.compile=reduce-overhead"),
    ((5000, 1000, 990, 1100), "cuda", "compute-bound", "max-autotune"),
])
def test_doctor_verdicts(rates, device, expected, knob):
    from pipeline.bench.doctor import diagnose

    cfg = load_config(None, ["data.device=cpu", "data.num_threads=2"])
    verdict = diagnose(*rates, cfg, torch.device(device), world_size=1)
    assert verdict["verdict"] == expected and knob in verdict["knob"], verdict


@pytest.mark.parametrize("rates", [(500, 1000, 480, 1100), (5000, 1000, 700, 1100), (5000, 1000, 990, 3000),
                                   (5000, 1000, 990, 1100)], ids=["input", "contention", "launch", "compute"])
def test_doctor_advises_only_knobs_that_act_on_the_device_it_ran_on(rates):
    """On a CPU: no CUDA graphs, torch.compile autotuning, bf16 or GPU decoding (none was measured to help)."""
    from pipeline.bench.doctor import diagnose

    cfg = load_config(None, ["data.device=cpu", "data.num_threads=2"])
    knob = diagnose(*rates, cfg, torch.device("cpu"), world_size=1)["knob"]
    assert not any(word in knob for word in ("train.compile", "bf16", "data.device=gpu", "CUDA")), knob
    if rates == (5000, 1000, 990, 1100):
        assert "train on a GPU" in knob
        # On a GPU, what the config does not do yet: precision auto is bf16 there already.
        on_gpu = diagnose(*rates, cfg, torch.device("cuda"), world_size=1)["knob"]
        assert "train.compile=max-autotune" in on_gpu and "bf16" not in on_gpu
        fp32 = load_config(None, ["train.precision=fp32"])
        assert "train.precision=bf16" in diagnose(*rates, fp32, torch.device("cuda"), world_size=1)["knob"]


def test_doctor_calls_a_busy_host_launch_bound_on_a_gpu_only():
    from pipeline.bench.doctor import diagnose

    cfg = load_config(None, ["data.device=cpu", "data.num_threads=2"])
    host = {"host_us": 9000, "wall_us": 10000, "non_model_us": 4000, "largest": "ema"}
    verdict = diagnose(5000, 1000, 990, 1100, cfg, torch.device("cuda"), world_size=1, host=host)
    assert verdict["verdict"] == "launch-bound" and "90%" in verdict["why"] and "ema" in verdict["why"]
    # On a CPU the host always runs the whole step: not evidence of anything.
    assert diagnose(5000, 1000, 990, 1100, cfg, torch.device("cpu"), world_size=1, host=host)["verdict"] == "compute-bound"


def test_doctor_does_not_call_noise_a_bottleneck():
    from pipeline.bench.doctor import diagnose

    cfg = load_config(None, [])
    assert diagnose(500, 1000, 900, 1100, cfg, torch.device("cpu"), 1, within_noise=True)["verdict"] == "compute-bound"


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


def test_the_overhead_ledger_counts_reads_uploads_and_ops_by_section():
    """The ledger's counters, on code whose reads and uploads are known."""
    from pipeline.bench.overhead import Ledger

    ledger = Ledger()
    x = torch.randn(8)
    with ledger.counting(torch.device("cpu")):
        with ledger.section("reads"):
            x.sum().item()        # 1: _local_scalar_dense
            bool(x[0] > 0)        # 1
            float(x.max())        # 1
            x.tolist()            # 1
            x.cpu()               # 1
            x.to("cpu")           # 1
            x.nonzero()           # 1: a data-dependent shape
        with ledger.section("uploads"):
            torch.tensor([1.0, 2.0])   # 1: a tensor from host data
            torch.as_tensor([3])       # 1
        with ledger.section("quiet"):
            y = x * 2 + 1              # 2 ops, nothing read
            with ledger.section("inner"):
                torch._foreach_add_([x, y], 1.0)  # 1 op, counted in the innermost section
    assert dict(ledger.reads) == {"reads": 7}
    assert dict(ledger.uploads) == {"uploads": 2}
    assert ledger.ops["quiet"] == 2 and ledger.ops["inner"] == 1
    assert set(ledger.ns) == {"reads", "uploads", "quiet", "inner"} and all(v > 0 for v in ledger.ns.values())


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
