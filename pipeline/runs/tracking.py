"""Weights & Biases, from rank 0 only: stable metric names, honest run state, history that survives kills.

    tracker = Tracker(cfg.wandb, enabled=is_main, run_dir=..., run_name=..., experiment=cfg.name,
                      config=cfg.to_dict(), environment=env, resolved=values)
    tracker.backfill(metrics_records); tracker.settle(step, epoch_closed=True)   # on (re)start
    tracker.log(record)                    # live in the summary at once; history once settled
    tracker.settle(step, epoch_closed)     # after every checkpoint write
    tracker.finish(exit_code, preempting=False, final=True)

Mode `auto` is online when an API key is configured (WANDB_API_KEY or a netrc entry for
api.wandb.ai) and offline otherwise; `disabled` turns tracking off. The key itself is never
read into the config, the metrics or the logs. Training metrics use `step` and validation
metrics `epoch` as their x-axis; `val/top1` and `val/top5` keep their maximum and last value in
the summary, the losses their minimum and last.

History: what W&B holds equals metrics.jsonl, also after a kill and a resume
-----------------------------------------------------------------------------
metrics.jsonl is the record of truth; a resumed run keeps there only the records at or before its
checkpoint and redoes the steps after it. W&B history rows are keyed by our global step
(`run.log(row, step=global_step)`), one row per step holding every record of that step (an
epoch's last training record and that epoch's evaluation share one). W&B appends rows with a
larger step only and cannot take a row back, so:

- Rows go to W&B when they are *settled*: covered by a written checkpoint, so no resume will redo
  them (`settle`, called after each checkpoint write). A killed session never leaves W&B a row the
  resumed run logs again with other values. The row at a mid-epoch checkpoint's own step waits
  for the next checkpoint: a stop on an epoch's last step is checkpointed before that epoch's
  evaluation, which belongs in the same row.
- A SIGKILL loses what W&B's service had not written yet (its .wandb file grows in 32 KiB blocks;
  a short run killed leaves none). The service writes in order, so W&B holds every settled row up to
  some step. On resume the tracker learns that step (offline: the run's earlier offline .wandb
  files, pipeline/runs/wandb_files.py; online: the step wandb resumes at, `run.starting_step`) and sends
  first the metrics.jsonl records after it (`backfill`). Nothing twice, nothing missing.
- Live monitoring: every record goes to the summary under `live/` the moment it is logged (the
  runs table shows the current loss, lr and images/sec); history trails by at most one checkpoint
  interval (`checkpoint.every_steps`, else an epoch; evaluations show at once, the epoch-end
  checkpoint follows them). At a normal end every row is sent; after a crash or a non-finite stop
  the unsettled rows stay in metrics.jsonl only, since running the command again redoes them.

Not chosen: `wandb.init(resume_from="<id>?_step=N")` rewinds a run's history on the server, but it
is a private preview (absent on most accounts and on self-hosted servers) and rewinds nothing in
offline files; `fork_from` starts a new run id, splitting one run in two; logging at once and
skipping on resume the steps W&B holds keeps the killed session's rows for steps the resumed run
computes again, with other values than metrics.jsonl keeps.

State: `finish` passes the process's exit code (W&B shows 0 as finished, anything else as failed)
and marks a preemption with `run.mark_preempting()` first.
"""

from __future__ import annotations

import logging
import netrc
import os
import uuid
from pathlib import Path
from typing import Any

from pipeline.files import atomic_write_text
from pipeline.runs.resolved import auto_tags, merge_tags
from pipeline.runs.wandb_files import delivered_step, session_logs

log = logging.getLogger(__name__)

# Summary aggregates shown in the runs table (the summary keeps each as a {"max": .., "last": ..} entry).
SUMMARY_AGGREGATES = {"val/top1": ("epoch", "max,last"), "val/top5": ("epoch", "max,last"),
                      "val/loss": ("epoch", "min,last"), "train/loss": ("step", "min,last")}
LIVE_PREFIX = "live/"


def api_key_configured() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def resolve_mode(mode: str) -> str:
    if mode != "auto":
        return mode
    if os.environ.get("WANDB_MODE") in ("online", "offline", "disabled"):
        return os.environ["WANDB_MODE"]
    return "online" if api_key_configured() else "offline"


def merge_by_step(records: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """{step: one row with every record of that step}, steps ascending."""
    rows: dict[int, dict[str, Any]] = {}
    for record in sorted(records, key=lambda r: r["step"]):
        rows.setdefault(record["step"], {}).update(record)
    return rows


class Tracker:
    """A W&B run on rank 0; every method is a no-op elsewhere or when disabled."""

    def __init__(self, cfg: Any, *, enabled: bool, run_dir: Path, run_name: str, experiment: str,
                 config: dict[str, Any], environment: dict[str, Any], job_type: str = "train",
                 resolved: dict[str, Any] | None = None) -> None:
        self.run = None
        self.mode = resolve_mode(cfg.mode)
        self.pending: list[dict[str, Any]] = []  # logged, not yet settled: metrics.jsonl records without `time`
        self.delivered_step = -1  # the highest history step W&B holds
        if not enabled or self.mode == "disabled":
            return
        try:
            import wandb
        except ImportError:
            raise RuntimeError("wandb is not installed: run scripts/setup_env.sh, or set wandb.mode=disabled") from None
        # Own the W&B service: one inherited from a parent process (WANDB_SERVICE, set by any process
        # that used wandb before starting this one) outlives this process when it is killed and keeps
        # its run's stream open, and the resumed run is then refused ("run ID ... is in use").
        os.environ.pop("WANDB_SERVICE", None)
        id_file = run_dir / "wandb-run-id"
        run_id = id_file.read_text().strip() if id_file.exists() else uuid.uuid4().hex[:12]
        atomic_write_text(id_file, run_id)  # a kill mid-write must not leave an empty id: a second W&B run
        earlier_sessions = session_logs(run_dir, "offline-run", run_id)  # read before init adds this one
        resolved = resolved or {}
        self.run = wandb.init(
            project=cfg.project, entity=cfg.entity or None, group=cfg.group or experiment,
            tags=merge_tags(list(cfg.tags), auto_tags(resolved)), name=cfg.name or run_name, mode=self.mode,
            dir=str(run_dir), id=run_id, resume="allow", job_type=job_type,
            config={**config, "environment": environment, **resolved},
            # console="off": our own logs already go to train.log; silent: we print the one line that matters.
            settings=wandb.Settings(console="off", silent=True),
        )
        self.delivered_step = (delivered_step(earlier_sessions) if self.mode == "offline"
                               else self.run.starting_step - 1)
        self.run.define_metric("step")
        self.run.define_metric("epoch")
        self.run.define_metric("train/*", step_metric="step")
        self.run.define_metric("perf/*", step_metric="step")
        for evaluated in ("val/*", "val_ema/*", "val_raw/*", "tta/*"):  # per evaluation: against epochs
            self.run.define_metric(evaluated, step_metric="epoch")
        for name, (x_axis, aggregates) in SUMMARY_AGGREGATES.items():
            self.run.define_metric(name, step_metric=x_axis, summary=aggregates)
        if self.mode == "offline":
            log.info("W&B offline run %s; upload it later with: wandb sync %s", run_id, Path(self.run.dir).parent)
        else:
            log.info("W&B run %s", self.run.url)

    # ------------------------------------------------------------------------------ history

    def log(self, record: dict[str, Any]) -> None:
        """Show `record` in the summary under live/ now; queue it for history until a checkpoint settles it."""
        if self.run is None:
            return
        row = {k: v for k, v in record.items() if k != "time"}  # W&B keeps its own clock (_runtime)
        self.run.summary.update({LIVE_PREFIX + k: v for k, v in row.items()})
        self.pending.append(row)

    def settle(self, step: int, epoch_closed: bool) -> None:
        """A checkpoint at global `step` was written: send the rows it made durable.

        `epoch_closed`: the checkpoint ends an epoch after its evaluation, so the row at `step` is
        complete too; otherwise that row waits for the next checkpoint.
        """
        ready = [r for r in self.pending if r["step"] < step or (epoch_closed and r["step"] == step)]
        self.pending = [r for r in self.pending if not (r["step"] < step or (epoch_closed and r["step"] == step))]
        self._send(ready)

    def backfill(self, records: list[dict[str, Any]]) -> None:
        """On (re)start: queue the metrics.jsonl records after the last step W&B holds (a kill lost them)."""
        if self.run is None:
            return
        missing = [{k: v for k, v in r.items() if k != "time"} for r in records if r["step"] > self.delivered_step]
        if missing:
            log.info("W&B holds history up to step %d; sending %d record(s) from metrics.jsonl after it",
                     self.delivered_step, len(missing))
        self.pending = missing + self.pending

    def _send(self, records: list[dict[str, Any]]) -> None:
        for step, row in merge_by_step(records).items():
            if step <= self.delivered_step:  # W&B would drop it; cannot happen when rows are only sent settled
                log.warning("W&B already holds step %d; the record stays in metrics.jsonl only", step)
                continue
            self.run.log(row, step=step, commit=True)
            self.delivered_step = step

    # ------------------------------------------------------------------------------ the rest

    def summary(self, values: dict[str, Any]) -> None:
        if self.run is not None:
            self.run.summary.update(values)

    def attach(self, step: int, values: dict[str, Any]) -> None:
        """W&B-only values (tables, charts, images) for the history row of `step`: sent with it once settled."""
        if self.run is not None:
            self.pending.append({"step": step, **values})

    def log_model(self, path: Path, name: str, aliases: list[str], metadata: dict[str, Any]) -> None:
        """One file as a W&B Artifact of type `model` (offline too: `wandb sync` uploads it with the run)."""
        if self.run is None:
            return
        import wandb

        artifact = wandb.Artifact(name, type="model", metadata=metadata)
        artifact.add_file(str(path))
        self.run.log_artifact(artifact, aliases=aliases)

    def finish(self, exit_code: int = 0, *, preempting: bool = False, final: bool = False) -> None:
        """Close the run with the process's exit code; `final`: the run is over, send every queued row."""
        if self.run is None:
            return
        if final:
            self._send(self.pending)
            self.pending = []
        if preempting:
            self.run.mark_preempting()
        self.run.finish(exit_code=int(exit_code))
        self.run = None


def per_class_media(report: Any, image: Path, chart: bool = True) -> dict[str, Any]:
    """W&B's view of a per-class report (pipeline/runs/per_class.py): the per-class table, the confusion
    chart (W&B's confusion-matrix preset over the cells: every cell up to MATRIX_MAX_CLASSES classes, the
    most-confused pairs beyond), and confusion.png. `chart` False: the chart's cells as a table (summaries
    hold tables, not charts)."""
    import wandb

    from pipeline.runs.per_class import COLUMNS, MATRIX_MAX_CLASSES

    rows = report.rows()
    cells = report.cells() if len(report.classes) <= MATRIX_MAX_CLASSES else report.confused_pairs()
    table = wandb.Table(columns=["Actual", "Predicted", "nPredictions"], data=[list(c) for c in cells])
    media = {"per_class/table": wandb.Table(columns=list(COLUMNS), data=[[r[c] for c in COLUMNS] for r in rows]),
             "per_class/confusion_png": wandb.Image(str(image))}
    if chart:
        media["per_class/confusion"] = wandb.plot_table(
            "wandb/confusion_matrix/v1", table, {"Actual": "Actual", "Predicted": "Predicted",
                                                 "nPredictions": "nPredictions"}, {"title": "confusion"})
    else:
        media["per_class/confusion_cells"] = table
    return media
