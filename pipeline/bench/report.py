"""Results: the console tables, chart.png, results.json, the W&B benchmark job, and `bench report`."""

from __future__ import annotations

import argparse
import datetime
import json
import math
import sys
import textwrap
from pathlib import Path
from typing import Any

from pipeline.config import Config
from pipeline.files import atomic_open, atomic_write_text
from pipeline.runs.envinfo import describe, environment


def compared_to_torchvision(backend: str) -> bool:
    """Whether a loader row does the torchvision baseline's work: synthetic does none and a stage row
    ("dali:decode") part of it, so their ratios to torchvision would be noise, not a comparison."""
    return backend != "synthetic" and ":" not in backend


def format_table(kind: str, rows: list[dict[str, Any]]) -> str:
    if kind == "export":  # its own table (pipeline/bench/export.py)
        from pipeline.bench.export import format_table as export_table

        return export_table(rows)
    def rate(r: dict[str, Any]) -> str:
        return f"{r['median']:>10,.0f}  ({r['min']:,.0f}-{r['max']:,.0f})"

    lines = []
    if kind == "loader":
        rates = [rate(r["images_per_sec"]) for r in rows]
        width = max([30, *map(len, rates)])  # synthetic input's tens of millions widen the column, not one row
        lines.append(f"{'backend':<16} {'source':<12} {'batch':>5} {'threads':>7}  {'images/s (min-max)':>{width}}  "
                     "vs torchvision")
        for r, cell in zip(rows, rates):
            # Results written before synthetic and stage rows lost their ratio still carry one: not shown.
            compared = "vs_torchvision" in r and compared_to_torchvision(r["backend"])
            ratio = f"{r['vs_torchvision']:.2f}x" if compared else "-"
            lines.append(f"{r['backend']:<16} {r['source']:<12} {r['batch_size']:>5} {r['workers_or_threads']:>7}  "
                         f"{cell:>{width}}  {ratio}")
    elif kind == "model":
        lines.append(f"{'model':<18} {'prec':<5} {'format':<14} {'compile':<7} {'batch':>5} {'size':>4}  {'images/s (min-max)':>30}")
        for r in rows:
            lines.append(f"{r['model']:<18} {r['precision']:<5} {r['memory_format']:<14} {r['compile']:<7} "
                         f"{r['batch_size']:>5} {r['size']:>4}  {rate(r['images_per_sec']):>30}")
            if "roofline" in r:
                rl = r["roofline"]
                lines.append(f"    roofline: {rl['bytes_per_image'] / 2**20:.1f} MiB/image moved, "
                             f"{rl['bandwidth_bytes_per_sec'] / 1e12:.2f} TB/s copy bandwidth -> bound "
                             f"{rl['bound_images_per_sec']:,.0f} img/s; measured = {100 * rl['fraction_of_bound']:.0f}% of it")
    elif kind == "doctor":
        lines += doctor_lines(rows)
    elif kind == "overhead":
        lines += overhead_lines(rows)
    else:  # train / scaling
        def cell(r: dict[str, Any], feed: str) -> str:
            return rate(r[f"{feed}_images_per_sec"]) if f"{feed}_images_per_sec" in r else "-"

        def ratio(r: dict[str, Any], key: str, pct: bool = False) -> str:
            return "-" if key not in r else (f"{100 * r[key]:.0f}%" if pct else f"{r[key]:.2f}x")

        lines.append(f"{'model':<18} {'procs':>5} {'source':<12} {'compile':<15} {'DALI img/s (min-max)':>28} "
                     f"{'torchvision img/s (min-max)':>28} {'synthetic img/s (min-max)':>28} {'DALI/synth':>10} "
                     f"{'DALI/tv':>8} {'effic.':>6}")
        for r in rows:
            eff = r.get("real_scaling_efficiency", r.get("synthetic_scaling_efficiency"))
            lines.append(f"{r['model']:<18} {r['processes']:>5} {r['source']:<12} {str(r.get('compile', '-')):<15} "
                         f"{cell(r, 'real'):>28} {cell(r, 'torchvision'):>28} {cell(r, 'synthetic'):>28} "
                         f"{ratio(r, 'real_over_synthetic', pct=True):>10} {ratio(r, 'real_over_torchvision'):>8} "
                         f"{'-' if eff is None else f'{100 * eff:.0f}%':>6}")
    return "\n".join(lines)


def overhead_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The host-overhead ledger: per step and section, then the totals and the per-occasion rows."""
    def num(value: float) -> str:
        return f"{value:g}" if value == int(value) else f"{value:.2f}"

    lines = [f"{'per training step':<38} {'ops':>7} {'reads':>6} {'uploads':>8} {'host us (min-max)':>26}  top ops"]
    for r in rows:
        if "ops_per_step" not in r:
            continue
        if "host_us" in r:
            h = r["host_us"]
            host = f"{h['median']:>9,.1f} ({h['min']:,.1f}-{h['max']:,.1f})" if h else "-"
        else:
            host = f"{r['host_us_sum_of_medians']:>9,.1f} (sum)"
            if "wall_us_per_step" in r:
                host += f", wall {r['wall_us_per_step']:,.0f}"
        top = ", ".join(f"{k} {v:g}" for k, v in list(r.get("top_ops", {}).items())[:4])
        lines.append(f"{r['component']:<38} {num(r['ops_per_step']):>7} {num(r['reads_per_step']):>6} "
                     f"{num(r['uploads_per_step']):>8} {host:>26}  {top}")
    for r in rows:
        if "ops" in r:
            lines.append(f"{r['component']:<38} {num(r['ops']):>7} {num(r['reads']):>6} {num(r['uploads']):>8}")
        elif "ops_per_step" not in r and "host_us" in r:
            h = r["host_us"]
            lines.append(f"{r['component']:<38} {'':>7} {'':>6} {'':>8} {h['median']:>9,.1f} ({h['min']:,.1f}-{h['max']:,.1f})")
    return lines


def doctor_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The doctor's table (per process) and its verdict, for the console and `bench report`."""
    lines = [f"{'measurement (per process)':<32} {'images/s (min-max)':>30}"]
    for row in rows:
        if "images_per_sec" in row:
            r = row["images_per_sec"]
            lines.append(f"{row['what']:<32} {r['median']:>12,.0f}  ({r['min']:,.0f}-{r['max']:,.0f})")
        elif "host_us" in row:
            lines.append(f"{row['what']:<32} host {row['host_us']:,.0f} us of a {row['wall_us']:,.0f} us step; "
                         f"outside the model {row['non_model_ops']:g} operators, {row['non_model_us']:,.0f} us "
                         f"(most in {row['largest']}); {row['reads']:g} device reads")
        else:
            lines += [f"verdict: {row['verdict']}: {row['why']}", f"turn:    {row['knob']}"]
    return lines


# A chart whose largest bar is more than this many times its smallest is drawn on a log axis: the
# synthetic loader (tens of millions of img/s, no work) beside real loaders (thousands) would otherwise
# leave every real bar a few pixels wide.
LOG_SPREAD = 20


def chart_values(kind: str, rows: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """(bar labels, their {"median", "min", "max"} statistics) of a kind's chart."""
    if kind == "loader":
        return [r["backend"] for r in rows], [r["images_per_sec"] for r in rows]
    if kind == "model":
        return ([f"{r['model']} {r['precision']} {r['memory_format']} c={r['compile']} b{r['batch_size']}" for r in rows],
                [r["images_per_sec"] for r in rows])
    if kind == "doctor":
        measured = [r for r in rows if "images_per_sec" in r]
        return [r["what"] for r in measured], [r["images_per_sec"] for r in measured]
    if kind == "overhead":
        timed = [r for r in rows if r.get("host_us") and "ops_per_step" in r]
        return [r["component"] for r in timed], [r["host_us"] for r in timed]
    labels, stats = [], []
    for r in rows:
        for feed in ("real", "torchvision", "synthetic"):
            if f"{feed}_images_per_sec" in r:
                labels.append(f"{feed} x{r['processes']}")
                stats.append(r[f"{feed}_images_per_sec"])
    return labels, stats


def draw_chart(kind: str, rows: list[dict[str, Any]], title: str) -> Any:
    """The chart's matplotlib Figure: one bar per row (median, min-max whiskers), each labelled with its
    median; a log axis when the bars span more than LOG_SPREAD times, so that every bar stays readable."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, stats = chart_values(kind, rows)
    medians = [s["median"] for s in stats]
    errors = [[m - s["min"] for m, s in zip(medians, stats)], [s["max"] - m for m, s in zip(medians, stats)]]
    positive = [s["min"] for s in stats if s["min"] > 0]
    log = len(positive) > 1 and max(medians) / min(positive) > LOG_SPREAD
    # On a log axis bars start at a power of ten below the smallest value, not at 0 (which has no place on it).
    base = 10 ** math.floor(math.log10(min(positive))) if log else 0.0
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(labels) + 1.5))
    if log:
        ax.set_xscale("log")
    bars = ax.barh(range(len(labels)), [m - base for m in medians], left=base, xerr=errors, capsize=3,
                   color="#4c72b0")
    ax.bar_label(bars, labels=[f"{m:,.0f}" if m >= 10 else f"{m:.2g}" for m in medians], padding=4, fontsize=7)
    top = max((s["max"] for s in stats), default=1.0)
    ax.set_xlim(base if log else 0, top * (4 if log else 1.18))  # room for the labels
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    unit = "host microseconds per step" if kind == "overhead" else "images / second"
    ax.set_xlabel(f"{unit} (median, min-max{'; log scale' if log else ''})")
    ax.grid(axis="x", alpha=0.3)
    fit_title(fig, title)
    fig.tight_layout()
    return fig


def fit_title(fig: Any, title: str, fontsize: float = 9) -> None:
    """The figure's title, wrapped onto as many lines as it takes to fit the figure's width.

    A chart's title names the machine and versions (envinfo.describe), wider than the figure: set on
    one line over the axes it ran past both edges ("...; git ..." cut off). Centred on the figure and
    wrapped at the width that fits, it stays whole; tight_layout then leaves room for its lines."""
    renderer = fig.canvas.get_renderer()
    limit = 0.96 * fig.bbox.width
    for width in range(len(title), 0, -4):
        text = fig.suptitle(textwrap.fill(title, width=max(width, 20)), fontsize=fontsize)
        if text.get_window_extent(renderer).width <= limit or width <= 20:
            return


def chart(kind: str, rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib.pyplot as plt

    fig = draw_chart(kind, rows, title)
    with atomic_open(path) as fh:  # bbox_inches: whatever tight_layout could not fit (a long label) stays in
        fig.savefig(fh, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def write_results(kind: str, rows: list[dict[str, Any]], cfg: Config, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    env = environment()
    result = {
        "kind": kind,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python -m pipeline.bench", *sys.argv[1:]]),
        "environment": env,
        "settings": {"steps": args.steps, "warmup": args.warmup, "repeats": args.repeats, "config": cfg.to_dict()},
        "results": rows,
    }
    atomic_write_text(out / "results.json", json.dumps(result, indent=1))
    chart(kind, rows, out / "chart.png", f"{kind}: {describe(env)}")
    return result


def log_to_wandb(cfg: Config, result: dict[str, Any], out: Path) -> None:
    from pipeline.runs.resolved import environment_settings
    from pipeline.runs.tracking import Tracker

    tracker = Tracker(cfg.wandb, enabled=True, run_dir=out, run_name=out.name, experiment=cfg.name,
                      config={**cfg.to_dict(), "bench": result["settings"]}, environment=result["environment"],
                      job_type="benchmark", resolved=environment_settings(result["environment"]))
    if tracker.run is None:
        return
    import wandb

    rows = result["results"]
    flat = [{k: (v["median"] if isinstance(v, dict) and "median" in v else v) for k, v in r.items()
             if not isinstance(v, dict) or "median" in v} for r in rows]
    columns = sorted({k for r in flat for k in r})
    tracker.run.log({f"benchmark/{result['kind']}": wandb.Table(columns=columns,
                                                                 data=[[r.get(c) for c in columns] for r in flat])})
    tracker.finish()


def report(folder: Path) -> str:
    """The tables of every results.json under `folder`, with the machine they were measured on."""
    parts = []
    for path in sorted(folder.rglob("results.json")):
        result = json.loads(path.read_text())
        parts.append(f"== {result['kind']}: {path.parent.name} ({result['created']})\n"
                     f"{describe(result['environment'])}\n{format_table(result['kind'], result['results'])}")
    return "\n\n".join(parts) if parts else f"no results.json under {folder}"
