"""pipeline.bench's command line, tables, charts and the doctor's verdicts, without measuring.
"""

from __future__ import annotations

import pytest
import torch
from figures import texts_outside
from support.bench import FAST

from pipeline.bench.__main__ import main as bench_main
from pipeline.bench.__main__ import parse_args
from pipeline.bench.report import compared_to_torchvision, draw_chart, format_table
from pipeline.config import load_config


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


def test_the_budget_benchmark_is_a_kind_with_its_own_options(capsys):
    with pytest.raises(SystemExit):
        bench_main(["budget", "--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m pipeline.bench budget ") and "--load-at SECONDS" in out
    assert "--steps" not in out  # it times whole runs
    assert bench_main(["budget", "--budget", "1m", "train.epochz=3"]) == 2  # bad config: one line, before any run
    assert "config error: train.epochz: unknown key" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench_main(["budget", "--budget", "soon"])
    assert "--budget: 'soon' is not a duration" in capsys.readouterr().err

