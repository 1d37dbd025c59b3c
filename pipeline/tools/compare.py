"""Compare runs side by side: one table of what differs between them and what each one reached.

    python -m pipeline.tools.compare runs/quickstart-a runs/quickstart-b
    python -m pipeline.tools.compare 'runs/quick*'                      # glob patterns are expanded here too
    python -m pipeline.tools.compare 'runs/lr-sweep-*' --markdown      # a GitHub table for BENCHMARKS.md or a PR
    python -m pipeline.tools.compare runs/A runs/B --plot compare.png  # top-1 and loss vs epoch and wall time
    python -m pipeline.tools.compare runs/A runs/B --per-class         # each class's recall in A and B, largest change first

One row per run: its name, the config keys whose values differ between the runs (dotted keys of
each run's config.yaml; the run name, runs_dir and W&B name are left out), final top-1 (the last
evaluation), best top-1 and its epoch, time to accuracy, training images/sec (total images over
total time, warm-up and evaluation excluded), wall time (s) and why the run ended. Figures come
from runs/<name>/summary.json when the trainer wrote one at the end of the run; otherwise they are
derived from metrics.jsonl. A `-` marks what was never measured (no evaluation, no throughput window
past logging.perf_warmup_steps) and the end reason reads `unknown` (or `running?` while
metrics.jsonl is still growing).

Exit status 2, with one line naming the path, when an argument is not a run directory.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.config import NAMING_KEYS
from pipeline.errors import UserError
from pipeline.files import atomic_open
from pipeline.runs.changes import flatten, read_changes
from pipeline.runs.metrics import read_metrics
from pipeline.runs.per_class import differences, read_per_class

# Keys that differ between any two runs by construction: comparing them says nothing.
IGNORED_KEYS = NAMING_KEYS
# A run without summary.json whose metrics.jsonl changed this recently (s) and that has not
# evaluated its last epoch is shown as `running?`.
RUNNING_WINDOW_S = 300.0
MISSING = "-"


class CompareError(UserError):
    """An argument is not a readable run directory; the message names the path."""


@dataclass
class Run:
    """One run directory as read from disk."""

    name: str
    path: Path
    config: dict[str, Any]          # config.yaml, flattened: {"optim.lr": 0.1, ...}: what the run started with
    changes: list[dict[str, Any]]   # config-changes.jsonl: keys changed when the run continued, with the step
    records: list[dict[str, Any]]   # metrics.jsonl, `time` made continuous across resumes (s)
    summary: dict[str, Any]         # summary.json; {} when the trainer wrote none
    figures: dict[str, Any] = field(default_factory=dict)  # summary.json's keys: summary first, else derived

    def value(self, key: str) -> Any:
        """The value the run trains with now (its last recorded change, else config.yaml's)."""
        latest = [c["new"] for c in self.changes if c["key"] == key]
        return latest[-1] if latest else self.config.get(key, MISSING)

    def shown(self, key: str) -> str:
        """A config value for a table: 'old -> new @step N' for a key changed when the run continued."""
        text = format_value(self.config.get(key, MISSING))
        for change in self.changes:
            if change["key"] == key:
                text += f" -> {format_value(change['new'])} @step {change['step']}"
        return text


# ---------------------------------------------------------------------------------- reading


def continuous_time(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`time` restarts at 0 when a run resumes; add the time already spent so the axis keeps rising.

    The gap between the kill and the restart is not counted (nothing records it)."""
    offset, previous = 0.0, 0.0
    out = []
    for record in records:
        if "time" in record:
            if record["time"] + offset < previous:
                offset = previous
            previous = record["time"] + offset
            record = {**record, "time": previous}
        out.append(record)
    return out


def read_yaml_or_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise CompareError(f"{path}: cannot parse: {exc}") from None
    if not isinstance(data, dict):
        raise CompareError(f"{path}: expected a mapping")
    return data


def load_run(path: str | Path) -> Run:
    """Read one run directory; CompareError names the path when it is not one."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise CompareError(f"{path}: no such run directory")
    for required in ("config.yaml", "metrics.jsonl"):
        if not (path / required).is_file():
            raise CompareError(f"{path}: not a run directory (no {required})")
    summary_path = path / "summary.json"
    run = Run(
        name=path.resolve().name,
        path=path,
        config=flatten(read_yaml_or_json(path / "config.yaml")),
        changes=read_changes(path),
        records=continuous_time(read_metrics(path / "metrics.jsonl")),
        summary=read_yaml_or_json(summary_path) if summary_path.is_file() else {},
    )
    run.figures = {**derive_figures(run), **run.summary}
    return run


# ---------------------------------------------------------------------------------- figures


def derive_figures(run: Run) -> dict[str, Any]:
    """What metrics.jsonl says, under summary.json's keys (None where it cannot say)."""
    evals = [r for r in run.records if "val/top1" in r]
    rates = [r["perf/images_per_sec"] for r in run.records if "perf/images_per_sec" in r]
    best = max(evals, key=lambda r: r["val/top1"], default=None)  # max keeps the earliest of equals
    times = [r["time"] for r in run.records if "time" in r]
    return {
        "final/top1": evals[-1]["val/top1"] if evals else None,
        "best/top1": best["val/top1"] if best else None,
        "best/epoch": best["epoch"] if best else None,
        "perf/mean_images_per_sec": mean_rate(rates),
        "time/wall_seconds": times[-1] if times else None,
        "end/reason": "running?" if looks_running(run, evals) else "unknown",
    }


def mean_rate(rates: list[float]) -> float | None:
    """Images/sec over all logged windows: total images / total time. The windows hold equal numbers
    of images (log_every steps), so that is the harmonic mean of their rates; the arithmetic mean
    would let a few fast windows on a busy machine overstate throughput several times."""
    rates = [r for r in rates if isinstance(r, (int, float)) and math.isfinite(r) and r > 0]
    return len(rates) / sum(1 / r for r in rates) if rates else None


def looks_running(run: Run, evals: list[dict[str, Any]]) -> bool:
    age = time.time() - (run.path / "metrics.jsonl").stat().st_mtime
    epochs = run.value("train.epochs")
    done = bool(evals) and epochs is not None and evals[-1]["epoch"] >= epochs
    return age < RUNNING_WINDOW_S and not done


def tta_thresholds(runs: list[Run]) -> list[str]:
    """The accuracy targets (percent, as summary.json spells them: "92.6") any run reports."""
    pcts = {key.split("/")[1] for run in runs for key in run.summary if key.startswith("tta/")}
    return sorted(pcts, key=float)


def time_to_accuracy(run: Run, pct: str) -> tuple[Any, Any] | None:
    """(epoch, wall seconds) at which top-1 first reached pct %; summary.json first, else metrics.jsonl."""
    if f"tta/{pct}/epoch" in run.summary:
        return run.summary[f"tta/{pct}/epoch"], run.summary.get(f"tta/{pct}/wall_seconds")
    for record in run.records:
        if "val/top1" in record and 100 * record["val/top1"] >= float(pct):
            return record["epoch"], record.get("time")
    return None


# ------------------------------------------------------------------------------ comparison


def differing_keys(runs: list[Run]) -> list[str]:
    """Config keys whose values are not the same in every run (absent counts as a value)."""
    keys: dict[str, None] = {}
    for run in runs:
        keys.update(dict.fromkeys(run.config))
    return [key for key in keys if key not in IGNORED_KEYS
            and len({json.dumps(run.config[key]) + run.shown(key) if key in run.config else None for run in runs}) > 1]


def format_value(value: Any) -> str:
    """A config value as it would be written on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return repr(value)  # shortest round-trip form: two different values never print alike
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    return str(value) if value != "" else '""'


def percent(value: Any) -> str:
    return MISSING if value is None else f"{100 * value:.2f}"


def measured(value: Any) -> Any:
    """A rate or a duration, or None where it was never measured: the trainer writes 0 images/sec when
    every epoch was shorter than logging.perf_warmup_steps, and 0 is not a measurement."""
    return value if isinstance(value, (int, float)) and value > 0 else None


def number(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return MISSING
    return format(value, fmt)


def table_rows(runs: list[Run], keys: list[str]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the comparison, every cell already a string."""
    pcts = tta_thresholds(runs)
    header = ["run", *keys, "final top-1 %", "best top-1 %", "best epoch",
              *[f"to {pct}%: epoch, wall s" for pct in pcts], "img/s", "wall s", "end"]
    rows = []
    for run in runs:
        fig = run.figures
        evaluated = fig.get("final/top1") is not None
        tta_cells = []
        for pct in pcts:
            reached = time_to_accuracy(run, pct)
            tta_cells.append(MISSING if reached is None and not evaluated  # never evaluated: nothing to say
                             else "not reached" if reached is None
                             else f"{number(reached[0], 'g')}, {number(reached[1], '.0f')}")
        rows.append([run.name, *[run.shown(key) for key in keys],
                     percent(fig.get("final/top1")), percent(fig.get("best/top1")),
                     number(fig.get("best/epoch"), "g"), *tta_cells,
                     number(measured(fig.get("perf/mean_images_per_sec")), ",.0f"),
                     number(measured(fig.get("time/wall_seconds")), ".1f"), str(fig.get("end/reason") or "unknown")])
    return header, rows


def format_table(runs: list[Run], markdown: bool = False) -> str:
    """The comparison as aligned text (numbers right-aligned) or as a GitHub Markdown table."""
    header, rows = table_rows(runs, differing_keys(runs))
    numeric = [all(_is_number(row[i]) for row in rows) and bool(rows) for i in range(len(header))]
    if markdown:
        def line(cells: list[str]) -> str:
            return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"
        rule = ["---:" if num else "---" for num in numeric]
        return "\n".join([line(header), line(rule), *(line(row) for row in rows)]) + "\n"
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]

    def text(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric)).rstrip()
    return "\n".join([text(header), text(["-" * w for w in widths]), *(text(row) for row in rows)]) + "\n"


def _is_number(cell: str) -> bool:
    try:
        float(cell.replace(",", ""))
    except ValueError:
        return cell == MISSING
    return True


# ---------------------------------------------------------------------------------- figure


def plot_runs(runs: list[Run], path: str | Path) -> None:
    """draw_runs' figure as a PNG."""
    import matplotlib.pyplot as plt

    fig = draw_runs(runs)
    with atomic_open(path) as fh:  # the picture named by its suffix, as savefig(path) would (none: png)
        fig.savefig(fh, format=Path(path).suffix.lstrip(".") or None, dpi=90, bbox_inches="tight")
    plt.close(fig)


def draw_runs(runs: list[Run]) -> Any:
    """The matplotlib Figure of validation top-1 and training loss against epoch and against wall time.

    The legend names the runs, beside the panels (constrained layout makes room for it, whatever the
    names' length, for 2 to 20 runs); the keys that differ between them are a table below, one row per
    run, its name in the colour of its lines."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    keys = differing_keys(runs)
    rows = len(runs) + 1 if keys else 0
    fig = plt.figure(figsize=(12, 7.5 + 0.24 * rows), layout="constrained")
    grid = fig.add_gridspec(3 if keys else 2, 2, height_ratios=[3.5, 3.5, 0.24 * rows] if keys else [1, 1])
    panels = [("val/top1", 100.0, "validation top-1 (%)"), ("train/loss", 1.0, "training loss")]
    palette = plt.get_cmap("tab10" if len(runs) <= 10 else "tab20").colors  # a colour of its own for each of 20
    colors = {run.name: palette[i % len(palette)] for i, run in enumerate(runs)}
    for row, (metric, scale, ylabel) in enumerate(panels):
        first = None
        for col, (x, xlabel) in enumerate([("epoch", "epoch"), ("time", "wall time (s)")]):
            ax = fig.add_subplot(grid[row, col], sharey=first)
            first = first or ax
            for run in runs:
                xs = [r[x] for r in run.records if metric in r and x in r]
                ys = [scale * r[metric] for r in run.records if metric in r and x in r]
                style = {"marker": "o", "ms": 3} if metric.startswith("val/") else {}
                ax.plot(xs, ys, lw=1.2, label=run.name, color=colors[run.name], **style)
            ax.set(xlabel=xlabel, ylabel=ylabel if col == 0 else None)
            ax.grid(alpha=0.3)
    fig.legend(*fig.axes[0].get_legend_handles_labels(), loc="outside right upper", title="run",
               fontsize=8 if len(runs) > 10 else 9)
    if keys:
        key_table(fig.add_subplot(grid[2, :]), runs, keys, colors)
    return fig


def key_table(ax: Any, runs: list[Run], keys: list[str], colors: dict[str, Any]) -> None:
    """The config keys that differ between the runs, a row per run (as the text table shows them)."""
    ax.axis("off")
    table = ax.table(cellText=[[run.name, *(run.shown(key) for key in keys)] for run in runs],
                     colLabels=["run", *keys], cellLoc="left", colLoc="left", loc="upper center", edges="horizontal")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    table.auto_set_column_width(list(range(len(keys) + 1)))
    for (row, col), cell in table.get_celld().items():
        cell.set_edgecolor("0.8")
        if row and col == 0:  # the run's name, in the colour of its lines
            cell.get_text().set_color(colors[runs[row - 1].name])


# ------------------------------------------------------------------------------------ main


def expand_paths(args: list[str]) -> list[Path]:
    """Arguments -> run directories: globs expanded (directories only, sorted), duplicates dropped."""
    paths: dict[Path, Path] = {}
    for arg in args:
        if glob.has_magic(arg):
            matches = [Path(m) for m in sorted(glob.glob(str(Path(arg).expanduser()))) if Path(m).is_dir()]
            if not matches:
                raise CompareError(f"{arg}: no run directories match")
        else:
            matches = [Path(arg)]
        for match in matches:
            paths.setdefault(match.expanduser().resolve(), match)
    return list(paths.values())


def load_runs(args: list[str]) -> list[Run]:
    runs = [load_run(path) for path in expand_paths(args)]
    names = [run.name for run in runs]
    for run in runs:  # two runs_dirs can hold the same run name: show the paths then
        if names.count(run.name) > 1:
            run.name = str(run.path)
    return runs


def per_class_table(a: Run, b: Run, limit: int = 0) -> str:
    """Each class's recall (and F1) in two runs' per_class.csv and the change, the largest changes first."""
    rows = differences(read_per_class(a.path), read_per_class(b.path))
    shown = rows[:limit] if limit else rows
    header = ["class", "images", f"recall % {a.name}", f"recall % {b.name}", "change pt", "F1 A", "F1 B"]
    cells = [[r["class"], str(r["support"]), f"{100 * r['recall_a']:.1f}", f"{100 * r['recall_b']:.1f}",
              f"{100 * r['change']:+.1f}", f"{r['f1_a']:.3f}", f"{r['f1_b']:.3f}"] for r in shown]
    widths = [max(len(c) for c in col) for col in zip(header, *cells)]
    line = lambda row: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))  # noqa: E731
    more = f"\n({len(rows) - len(shown)} more classes; --per-class-rows 0 shows all)" if len(shown) < len(rows) else ""
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, cells)]) + more + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.tools.compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run directories or glob patterns (runs/quick*)")
    parser.add_argument("--markdown", action="store_true", help="print a GitHub Markdown table")
    parser.add_argument("--plot", metavar="PNG", help="also draw top-1 and loss curves of every run into PNG")
    parser.add_argument("--per-class", action="store_true", help="two runs: each class's recall in both (their "
                        "per_class.csv), the largest changes first")
    parser.add_argument("--per-class-rows", type=int, default=20, metavar="N",
                        help="--per-class: show the N largest changes (default 20; 0 = every class)")
    args = parser.parse_args(argv)
    try:
        runs = load_runs(args.runs)
        if args.per_class and len(runs) != 2:
            raise CompareError(f"--per-class compares two runs; {len(runs)} given")
        per_class = per_class_table(*runs, limit=args.per_class_rows) if args.per_class else ""
    except UserError as exc:  # CompareError, or a metrics.jsonl that is not JSON (RunDirError)
        print(f"compare error: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(format_table(runs, markdown=args.markdown))
    if per_class:
        sys.stdout.write("\nper class (recall: the share of each class's images predicted as it):\n" + per_class)
    if args.plot:
        plot_runs(runs, args.plot)
        print(f"figure: {args.plot}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
