"""`bench export`: onnxruntime throughput and latency of an exported model, fp32 and int8 side by side.

    python -m pipeline.bench export [MODEL] [--out DIR] [--iterations 100] [--seconds 10]

MODEL: an export folder (python -m pipeline.export), a run directory (its export/), or an .onnx file
(with its model.int8.onnx sibling when there is one); default: the newest runs/*/export/. For each model,
execution provider (CPU; CUDA where onnxruntime-gpu and a GPU are present), thread count (1 and all) and
batch (1, 8, 64): warm-up runs, then timed runs of one batch of random pixels until `--iterations` runs
or `--seconds`, whichever comes first (10 at least); img/s and p50/p90/p99 latency. The CPU model and its
int8 features (VNNI, AMX: what makes int8 kernels fast) and the versions are recorded. No speed-up is
claimed that was not measured: on a CPU without VNNI, int8 is often slower than fp32.
Outputs: the table, results.json and chart.png in --out (default bench-results/export-<time>/).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from pathlib import Path
from typing import Any

from pipeline.constants import BENCH_RESULTS_DIR
from pipeline.deploy.export import int8_features
from pipeline.deploy.graph import ModelFileError, read_metadata
from pipeline.deploy.runtime import available_providers, latency, open_session, session_runner
from pipeline.errors import ExitCode, UserError
from pipeline.files import atomic_open, atomic_write_text
from pipeline.runs.envinfo import describe, environment

BATCHES = (1, 8, 64)


def model_files(text: str | None) -> list[Path]:
    """The .onnx files MODEL names: fp32 first, then int8."""
    if text is None:
        found = sorted(Path("runs").glob("*/export"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise ModelFileError("no runs/*/export/ folder: export a run first (python -m pipeline.export RUN_DIR), "
                                 "or name the model")
        folder = found[-1]
    else:
        path = Path(text).expanduser()
        if path.suffix == ".onnx":
            if not path.is_file():
                raise ModelFileError(f"{path}: no such file")
            folder = path.parent if path.name == "model.onnx" else None
            if folder is None:
                return [path]
        else:
            folder = path / "export" if (path / "export").is_dir() else path
    files = [folder / name for name in ("model.onnx", "model.int8.onnx") if (folder / name).is_file()]
    if not files:
        raise ModelFileError(f"{folder}: no model.onnx here (python -m pipeline.export writes one)")
    return files


def bench_export(args: argparse.Namespace, model: str | None) -> list[dict[str, Any]]:
    rows = []
    threads = sorted({1, os.cpu_count() or 1})
    for path in model_files(model):
        side = read_metadata(path).transform.crop
        for provider in available_providers():
            for n in threads:
                run = session_runner(open_session(path, provider, n))
                for batch in BATCHES:
                    timing = latency(run, batch, side, seconds=args.seconds, min_iters=10, max_iters=args.iterations)
                    rows.append({"model": path.name, "provider": provider, "threads": n, **timing})
                    print(f"{path.name:16s} {provider:4s} {n:2d} thread(s) batch {batch:3d}: "
                          f"{timing['images_per_sec']:9,.0f} img/s  p99 {timing['p99_ms']:8.2f} ms", file=sys.stderr)
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    header = ["model", "provider", "threads", "batch", "img/s", "p50 ms", "p90 ms", "p99 ms", "runs"]
    cells = [[r["model"], r["provider"], str(r["threads"]), str(r["batch"]), f"{r['images_per_sec']:,.0f}",
              f"{r['p50_ms']:.2f}", f"{r['p90_ms']:.2f}", f"{r['p99_ms']:.2f}", str(r["iterations"])] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(header, *cells)]
    line = lambda c: "  ".join(x.ljust(w) if i < 2 else x.rjust(w) for i, (x, w) in enumerate(zip(c, widths)))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, cells)])


def draw_chart(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['model'].removesuffix('.onnx')} {r['provider']} t{r['threads']} b{r['batch']}" for r in rows]
    fig, ax = plt.subplots(figsize=(9, 0.3 * len(rows) + 1.5))
    colors = ["tab:orange" if "int8" in r["model"] else "tab:blue" for r in rows]
    ax.barh(range(len(rows)), [r["images_per_sec"] for r in rows], color=colors)
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set(xlabel="images / second (onnxruntime)", title=title)
    fig.tight_layout()
    with atomic_open(path) as fh:
        fig.savefig(fh, format="png", dpi=100)
    plt.close(fig)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.bench export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=["export"], help=argparse.SUPPRESS)
    parser.add_argument("model", nargs="?", metavar="MODEL", help="export folder, run directory or .onnx file")
    parser.add_argument("--out", type=Path, help="results folder (default bench-results/export-<time>)")
    parser.add_argument("--iterations", type=int, default=100, help="timed runs per cell, at most (default 100)")
    parser.add_argument("--seconds", type=float, default=10.0, help="time per cell, at most (default 10)")
    args = parser.parse_args(argv)
    try:
        rows = bench_export(args, args.model)
    except UserError as exc:
        print(f"bench export error: {exc}", file=sys.stderr)
        return int(ExitCode.BAD_INPUT)
    import onnxruntime

    env = environment()
    env.update(onnxruntime=onnxruntime.__version__, int8_features=int8_features())
    out = args.out or BENCH_RESULTS_DIR / f"export-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    result = {"kind": "export", "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "command": " ".join(["python -m pipeline.bench", *argv]), "environment": env,
              "settings": {"iterations": args.iterations, "seconds": args.seconds, "batches": list(BATCHES)},
              "results": rows}
    atomic_write_text(out / "results.json", json.dumps(result, indent=1))
    features = ", ".join(env["int8_features"]) or "none"
    draw_chart(rows, out / "chart.png", f"export: {env['cpu']} (int8 features: {features})")
    print(format_table(rows))
    print(f"{describe(env)}; onnxruntime {env['onnxruntime']}; CPU int8 features: {features}")
    print(f"results: {out / 'results.json'}, chart: {out / 'chart.png'}")
    return int(ExitCode.OK)
