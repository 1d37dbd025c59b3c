"""Checkpoints: plain state_dicts and counters, written atomically, loaded strictly and safely.

A checkpoint is one file written by rank 0: the run's trainable state (model, optimizer, scheduler,
scaler and EMA state_dicts: `Components.state_dict()`), the counters (pipeline/training/state.py:
step, epoch, the best result so far, the run clocks), the resolved config as plain data, the model
card (class names, the eval transform, a fine-tuned run's source: `ModelCard`, enough for
`python -m pipeline.predict` and `pipeline.export` to use the file alone), and per-rank state (each
rank's loader position and RNG states) gathered from every rank.
Files are written to a temporary name, fsync'ed and renamed, so a crash never leaves a partial
`last.pt`; loading uses `torch.load(weights_only=True)`, so a checkpoint cannot run code.

Names in the run directory: `last.pt` (end of an epoch), `best.pt` (best top-1),
`step-00001234.pt` (every `checkpoint.every_steps`, the newest `keep_last` kept). A run resumes from
the one that loads with the most progress, best.pt included (an emptied last.pt falls back to it;
on equal progress last.pt is the one named). When the directory holds checkpoints and none loads, the run stops (exit 2) naming
each file and why, before anything in the directory changes; `checkpoint.on_unreadable=restart`
starts it over instead, its earlier files moved aside (pipeline/runs/rundir.py `supersede`).

`CheckpointManager` is the component the trainer asks to find a resume point, restore it, and
save; the functions below it are the file-level operations it uses.

    manager = CheckpointManager(cfg.checkpoint, run_dir, dist, cfg.to_dict(), cfg.train.epochs)
    resume = manager.find_resume()              # None on a fresh run
    parts = build_components(cfg, dist, resume) # loaders restored to the saved position
    counters = manager.restore(resume, parts) if resume else Counters()
    manager.save_epoch(parts, counters, new_best=True)
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from pipeline import distributed
# Config keys and sections that must match to resume, whatever checkpoint.accept_changes says (parameter shapes,
# what a step means): the schema's fields declare them. Other keys may change with consent (pipeline/runs/changes.py).
from pipeline.config import MUST_MATCH
from pipeline.distributed import DistInfo
from pipeline.errors import CheckpointError, UserError
from pipeline.files import atomic_copy, atomic_open
from pipeline.runs.changes import Change, config_changes, flatten, refuse_unaccepted
from pipeline.runs.envinfo import git_revision
from pipeline.runs.rundir import supersede
from pipeline.training.state import Counters, rng_state, set_rng_state

__all__ = ["CheckpointError", "CheckpointManager", "ModelCard", "ResumePoint", "RunCheckpoints",
           "atomic_save", "load", "model_card", "scan_checkpoints", "unreadable_error"]

log = logging.getLogger(__name__)

# 2: the DALI graph draws its augmentation in the batch callback (a format-1 loader position does not
# restore into it) and the counters carry the run clocks and time to accuracy.
# 3: the loader position is (epoch, step), not a DALI checkpoint, and an epoch's augmentation is
# drawn at once from (seed, epoch): a format-2 mid-epoch position would resume other batches.
FORMAT_VERSION = 3
STEP_PATTERN = re.compile(r"^step-(\d{8,})\.pt$")
LAST, BEST = "last.pt", "best.pt"
# What every checkpoint holds (CheckpointManager._payload): a file without one of them cannot be resumed.
REQUIRED_KEYS = ("model", "optimizer", "scheduler", "counters", "config", "world_size", "rank_states")
REQUIRED_COUNTERS = ("epoch", "step_in_epoch", "global_step")
STATE_KEYS = ("model", "optimizer", "scheduler", "scaler", "ema")  # Components.state_dict(): scaler, ema may be None
WEIGHTS_KEYS = ("model", "config")  # what export, predict and fine-tuning read


def atomic_save(obj: dict[str, Any], path: Path) -> None:
    """Write `obj` to `path` so that readers see either the old file or the complete new one."""
    # Into a Python file: a full disk then reads "OSError: [Errno 27] File too large" in the traceback;
    # torch's own writer, given the path, says only "basic_ios::clear: iostream error".
    with atomic_open(path) as fh:
        torch.save(obj, fh)


class UnloadableCheckpoint(CheckpointError):
    """A checkpoint file that does not load: `path`, `reason` in a few words, and whether it is a checkpoint
    of another format (which the code that wrote it could still continue)."""

    def __init__(self, path: Path, reason: str, other_format: bool = False) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason, self.other_format = path, reason, other_format


def load(path: Path, required: tuple[str, ...] = REQUIRED_KEYS) -> dict[str, Any]:
    """Load a checkpoint safely; an empty, truncated, corrupt, foreign, incomplete or other-format file raises
    UnloadableCheckpoint naming it and why. `required`: the entries the reader needs (resuming needs all of
    REQUIRED_KEYS; reading the weights, WEIGHTS_KEYS)."""
    try:
        if path.stat().st_size == 0:
            raise UnloadableCheckpoint(path, "empty file (0 bytes)")
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UnloadableCheckpoint(path, "no such checkpoint") from None
    except UnloadableCheckpoint:
        raise
    except Exception as exc:  # truncated zip, bad pickle, disallowed global, ...
        raise UnloadableCheckpoint(path, f"unreadable or corrupt checkpoint ({type(exc).__name__}: "
                                         f"{' '.join(str(exc).split())})") from None
    if not isinstance(ckpt, dict) or not _is_int(ckpt.get("format_version")):
        raise UnloadableCheckpoint(path, "not a checkpoint of this project (" + (
            type(ckpt).__name__ if not isinstance(ckpt, dict) else "no format_version" if "format_version" not in ckpt
            else f"its format_version is a {type(ckpt['format_version']).__name__}") + ")")
    if ckpt["format_version"] != FORMAT_VERSION:
        writer = (f"by git {ckpt['code_revision']}" if isinstance(ckpt.get("code_revision"), str)
                  else "by an earlier version of this code")
        raise UnloadableCheckpoint(path, f"written in checkpoint format {ckpt['format_version']} {writer}; this "
                                         f"code (git {git_revision()}) reads format {FORMAT_VERSION}", other_format=True)
    missing = [key for key in required if key not in ckpt]
    if not missing and "counters" in required and isinstance(ckpt["counters"], dict):
        missing = [f"counters.{key}" for key in REQUIRED_COUNTERS if key not in ckpt["counters"]]
    if missing:
        raise UnloadableCheckpoint(path, "an incomplete checkpoint (no " + ", ".join(missing) + ")")
    wrong = _wrong_entries(ckpt, required)
    if wrong:
        raise UnloadableCheckpoint(path, "a damaged checkpoint (" + "; ".join(wrong) + ")")
    return ckpt


# What each entry a reader takes must be; a file whose entries are of other types is refused whole, not half-read.
ENTRY_TYPES = {"model": dict, "optimizer": dict, "scheduler": dict, "counters": dict, "config": dict,
               "world_size": int, "rank_states": list}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_a(value: Any, kind: type) -> bool:
    """isinstance, where a bool is no number and an int is a float too (as JSON and YAML write them)."""
    if kind is int:
        return _is_int(value)
    if kind is float:
        return _is_int(value) or isinstance(value, float)
    return isinstance(value, kind)


def _is_plain(value: Any) -> bool:
    """Plain data, as Config.to_dict() gives: what config.yaml, W&B and the change records can hold."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_is_plain(v) for v in value)
    return value is None or isinstance(value, (str, int, float, bool))


def _wrong_entries(ckpt: dict[str, Any], required: tuple[str, ...]) -> list[str]:
    """'key is a T' for each required entry of another type than its readers take (counters field by field)."""
    wrong = [f"{key} is a {type(ckpt[key]).__name__}" for key in required
             if key in ENTRY_TYPES and not _is_a(ckpt[key], ENTRY_TYPES[key])]
    if wrong:
        return wrong
    if "config" in required and not _is_plain(ckpt["config"]):
        wrong.append("config holds values that are not plain data")
    if "counters" in required:
        kinds = {f.name: type(f.default if f.default is not MISSING else f.default_factory()) for f in fields(Counters)}
        for name, value in ckpt["counters"].items():
            if name not in kinds:
                wrong.append(f"counters.{name} is not a counter of this version")
            elif not _is_a(value, kinds[name]):
                wrong.append(f"counters.{name} is a {type(value).__name__}")
    if "rank_states" in required:
        states = ckpt["rank_states"]
        if len(states) != ckpt["world_size"]:
            wrong.append(f"rank_states holds {len(states)} entries for world_size {ckpt['world_size']}")
        wrong += [f"rank_states[{rank}] is not a loader position and RNG state" for rank, state in enumerate(states)
                  if not _is_rank_state(state)]
    return wrong


def _is_rank_state(state: Any) -> bool:
    """{} (nothing recorded), or what _payload gathers: the loader's position (None, or its epoch and step) and
    the RNG states."""
    if state == {}:
        return True
    if not isinstance(state, dict) or not isinstance(state.get("rng"), dict) or "loader" not in state:
        return False
    loader = state["loader"]
    return loader is None or isinstance(loader, dict) and all(_is_int(loader.get(k)) for k in ("epoch", "step"))


def config_differences(saved: dict[str, Any], current: dict[str, Any], keys: tuple[str, ...] = MUST_MATCH) -> list[str]:
    """`["model.name: 'a' in the checkpoint, 'b' now", ...]` for keys under `keys` that differ."""
    old, new = flatten(saved), flatten(current)
    diffs = []
    for key in sorted(set(old) | set(new)):
        if any(key == k or key.startswith(k + ".") for k in keys) and old.get(key) != new.get(key):
            diffs.append(f"{key}: {old.get(key)!r} in the checkpoint, {new.get(key)!r} now")
    return diffs


def check_compatible(ckpt: dict[str, Any], config: dict[str, Any], path: Path) -> None:
    diffs = config_differences(ckpt["config"], config)
    if diffs:
        raise CheckpointError(f"{path}: refusing to resume from a checkpoint of a different setup: " + "; ".join(diffs))


def step_path(run_dir: Path, step: int) -> Path:
    return run_dir / f"step-{step:08d}.pt"


def checkpoint_files(run_dir: Path) -> list[Path]:
    """The run directory's checkpoints: last.pt, the step checkpoints, then best.pt (a result, and a resume
    point when a later checkpoint does not load; on equal progress the earlier in this list is resumed)."""
    steps = sorted(p for p in run_dir.glob("step-*.pt") if STEP_PATTERN.match(p.name))
    return [p for p in (run_dir / LAST, *steps, run_dir / BEST) if p.is_file()]


@dataclass(frozen=True)
class RunCheckpoints:
    """What a run directory's checkpoints offer: the newest that loads, and why each other one does not."""

    newest: tuple[Path, dict[str, Any]] | None
    unreadable: tuple[UnloadableCheckpoint, ...]

    @property
    def none_loads(self) -> bool:
        """There are checkpoints, and not one of them loads: resuming would silently start over."""
        return self.newest is None and bool(self.unreadable)


def scan_checkpoints(run_dir: Path) -> RunCheckpoints:
    """Load every checkpoint of `run_dir`: the one with the most progress, and the ones that fail."""
    newest: tuple[Path, dict[str, Any]] | None = None
    unreadable = []
    for path in checkpoint_files(run_dir):
        try:
            ckpt = load(path)
        except UnloadableCheckpoint as exc:
            unreadable.append(exc)
            continue
        if newest is None or _progress(ckpt) > _progress(newest[1]):
            newest = (path, ckpt)
    return RunCheckpoints(newest, tuple(unreadable))


def unreadable_error(run_dir: Path, found: RunCheckpoints, new_run: str, restart: str) -> CheckpointError:
    """The refusal when none of a run's checkpoints loads: each file and why, and the ways forward.

    `new_run`: how to start a new run instead; `restart`: the command (or key) that starts this one over."""
    files = "; ".join(f"{exc.path.name}: {exc.reason}" for exc in found.unreadable)
    older = " or finish it with the code that wrote it;" if any(exc.other_format for exc in found.unreadable) else ""
    return CheckpointError(
        f"run {run_dir.name} ({run_dir}) holds checkpoints and none of them loads: {files}. Nothing in the run "
        f"was changed. To go on: put a good copy of one of these files back;{older} or {new_run}; or start this "
        f"run over, its files moved into {run_dir.name}/superseded-<time>/ (nothing is deleted): {restart}")


def _progress(ckpt: dict[str, Any]) -> tuple[int, bool]:
    """How far a checkpoint got: its global step, then whether the evaluation at that step is done."""
    counters = ckpt["counters"]
    return counters["global_step"], not counters.get("eval_pending", False)


def prune_step_checkpoints(run_dir: Path, keep: int) -> None:
    steps = sorted((int(m.group(1)), p) for p in run_dir.glob("step-*.pt") if (m := STEP_PATTERN.match(p.name)))
    for _, path in steps[:-keep]:
        path.unlink(missing_ok=True)


# ------------------------------------------------------------------------------ model card


@dataclass(frozen=True)
class ModelCard:
    """What the weights need to be used on their own (export, predict, fine-tuning): in every checkpoint."""

    classes: list[str] | None  # class names in label order; None: the data has none (data.source=synthetic)
    eval_transform: dict[str, Any]  # pipeline/data/transform.py EvalTransform.to_dict(): decode, resize, crop, normalize
    init_from: dict[str, Any] | None = None  # train.init_from: {"path", "sha256", "weights"}; None: trained from scratch


def eval_transform_of(config: dict[str, Any]) -> dict[str, Any]:
    """The eval transform (pipeline/data/transform.py) a config (plain data) describes, as plain data."""
    from pipeline.config import DataConfig
    from pipeline.data.transform import EvalTransform

    return EvalTransform.from_config(DataConfig.model_validate(config.get("data", {}))).to_dict()


def model_card(ckpt: dict[str, Any], path: Path) -> tuple[ModelCard, list[str]]:
    """The checkpoint's class names and eval transform, and notes on where they came from.

    Checkpoints written before these were recorded get them from their run's config, as that run
    read them: the eval transform from its `data` section, the class names by listing its data
    (the note says so; CheckpointError naming the file when that data is gone)."""
    from pipeline.config import DataConfig
    from pipeline.data.sources import open_images
    from pipeline.data.transform import EvalTransform

    notes: list[str] = []
    config = ckpt.get("config") or {}
    transform = ckpt.get("eval_transform")
    try:
        if transform is None:
            transform = eval_transform_of(config)
            notes.append("the eval transform is not recorded in this checkpoint (written before it was): taken "
                         "from its run's config")
        transform = EvalTransform.from_dict(transform).to_dict()
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise CheckpointError(f"{path}: no usable eval transform ({' '.join(str(exc).split())[:200]})") from None
    if "classes" in ckpt:
        classes = ckpt["classes"]
        if not (classes is None or isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
            raise CheckpointError(f"{path}: its class names are a {type(classes).__name__}, not a list of names")
        return ModelCard(classes, transform, ckpt.get("init_from")), notes
    try:
        data = DataConfig.model_validate(config.get("data", {}))
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise CheckpointError(f"{path}: written before checkpoints recorded class names, and its config's data "
                              f"section is not valid here ({' '.join(str(exc).split())[:200]})") from None
    if data.source == "synthetic":
        return ModelCard(None, transform), notes
    try:
        classes = open_images(data.model_copy(update={"download": False}))[0].classes
    except UserError as exc:
        raise CheckpointError(f"{path}: written before checkpoints recorded class names, and its run's data is "
                              f"not readable here to list them ({exc})") from None
    notes.append(f"class names are not recorded in this checkpoint (written before they were): listed from its "
                 f"run's data (data.source={data.source}{', data.root=' + data.root if data.root else ''})")
    return ModelCard(classes, transform), notes


# ------------------------------------------------------------------------------ run state


def parameter_digest(model: nn.Module) -> str:
    """SHA-256 of every parameter and buffer: equal on all ranks unless DDP replicas diverged.

    The tensors' bytes, in memory order (channels_last weights are viewed, not copied: every rank
    wraps its model alike, wrap_model), are joined on the device and copied to the host once.
    """
    state = model.state_dict()
    flat = [t.detach().as_strided((t.numel(),), (1,)).view(torch.uint8) if t.numel() else t.detach().view(-1)
            .view(torch.uint8) for t in state.values()]
    h = hashlib.sha256("\n".join(state).encode())
    h.update(torch.cat(flat).cpu().numpy().tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class ResumePoint:
    """A loaded checkpoint to continue from."""

    path: Path
    ckpt: dict[str, Any]
    changes: tuple[Change, ...] = ()  # config keys whose values differ from the checkpoint's (all allowed)

    @property
    def epoch(self) -> int:
        """Epochs completed when it was written."""
        return self.ckpt["counters"]["epoch"]

    def rank_state(self, dist: DistInfo) -> dict[str, Any] | None:
        """This rank's loader position and RNG, or None when the process count changed."""
        if self.ckpt["world_size"] != dist.world_size:
            return None
        return self.ckpt["rank_states"][dist.rank] or None  # {}: nothing recorded for this rank

    def loader_state(self, dist: DistInfo) -> dict[str, Any] | None:
        state = self.rank_state(dist)
        return state["loader"] if state else None


def apply_configured_hyperparameters(parts: "Checkpointable", configured: list[dict[str, Any]], path: Path) -> None:
    """After loading the optimizer and scheduler state: the config's hyperparameters, the checkpoint's state.

    load_state_dict restores the saved hyperparameters (lr, momentum, weight decay) and the
    scheduler's base learning rates with the momentum buffers and the step. They equal the config's
    unless a continued run accepted a change (checkpoint.accept_changes, pipeline/runs/changes.py),
    and then the accepted values are the ones to train with: re-applied here, and the learning rate
    of the current step recomputed from the (possibly new) schedule. Nothing changes otherwise.
    """
    scheduler = parts.scheduler
    before = [group["lr"] for group in parts.optimizer.param_groups]
    for group, conf in zip(parts.optimizer.param_groups, configured):
        group.update({k: v for k, v in conf.items() if k != "lr"})
    scheduler.base_lrs = [conf["initial_lr"] for conf in configured]
    for group, base, factor in zip(parts.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
        group["lr"] = base * factor(scheduler.last_epoch)
    after = [group["lr"] for group in parts.optimizer.param_groups]
    if after != before:
        log.warning("%s: learning rate at this step %.6g under the checkpoint's settings, %.6g under this run's "
                    "(accepted changes)", path.name, before[0], after[0])


# ------------------------------------------------------------------------------ the manager


class Checkpointable(Protocol):
    """What a checkpoint saves and restores: the parts of a run (pipeline/training/components.py `Components`)."""

    model: nn.Module  # the parameter digest's
    optimizer: torch.optim.Optimizer  # apply_configured_hyperparameters'
    scheduler: torch.optim.lr_scheduler.LRScheduler

    classes: list[str] | None  # the model card's (ModelCard)
    init_from: dict[str, Any] | None

    @property
    def train_loader(self) -> Any: ...  # its state_dict() is the loader position

    def state_dict(self) -> dict[str, Any]: ...  # STATE_KEYS

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def sync_buffers(self) -> None: ...

    def weights_are_finite(self) -> bool: ...


class SaveObserver(Protocol):
    """Told around every checkpoint write (e.g. RunRecords: stamps the run time, then releases
    the records the checkpoint made durable to W&B)."""

    def before_save(self, counters: Counters) -> None: ...

    def after_save(self, counters: Counters) -> None: ...


class CheckpointManager:
    """Finds the resume point, restores it into the components, writes and prunes checkpoints."""

    def __init__(self, cfg: Any, run_dir: Path, dist: DistInfo, config: dict[str, Any], epochs: int) -> None:
        self.cfg, self.run_dir, self.dist = cfg, run_dir, dist
        self.config = config  # the resolved config as plain data, saved in every checkpoint
        self.epochs = epochs
        self.observers: list[SaveObserver] = []
        self.written: tuple[int, bool] | None = None  # Counters.position of the newest checkpoint (restored or written)
        # train.time_budget's plans and pace (pipeline/training/budget_run.py RunBudget): its state_dict() is
        # kept in every checkpoint
        self.budget: Any = None
        self.eval_transform = eval_transform_of(config)  # in every checkpoint's model card
        self.code_revision = git_revision()  # in every checkpoint: a format mismatch can say which code wrote it

    def find_resume(self) -> ResumePoint | None:
        """checkpoint.resume: auto = the run's newest checkpoint that loads; never = start over; a path.

        Rank 0 picks (and with never, or on_unreadable=restart, moves the earlier files aside); every rank
        then loads the same file, or raises the same refusal."""
        mode = self.cfg.resume
        if mode in ("auto", "never"):
            picked, refusal = None, ""
            if self.dist.is_main:
                try:
                    picked = self._pick_in_run_dir()
                except CheckpointError as exc:
                    refusal = str(exc)
            picked, refusal = distributed.broadcast_object((picked, refusal))
            if refusal:
                error = CheckpointError(refusal)
                error.reported = not self.dist.is_main  # type: ignore[attr-defined]  # one line, rank 0's
                raise error
            if picked is None:
                return None
            path = Path(picked)
        else:
            path = Path(mode).expanduser()
        ckpt = load(path)
        check_compatible(ckpt, self.config, path)
        changes = config_changes(ckpt["config"], self.config)
        if not self.config["eval"]["only"]:  # evaluating a checkpoint trains nothing: any settings will do
            refuse_unaccepted(changes, self.config["checkpoint"]["accept_changes"], self.run_dir.name)
        if ckpt["world_size"] != self.dist.world_size and ckpt["counters"]["step_in_epoch"] != 0:
            raise CheckpointError(
                f"{path}: written mid-epoch by {ckpt['world_size']} process(es); exact resume needs the same "
                f"number (this run has {self.dist.world_size}). Resume from an epoch-end checkpoint instead "
                f"(checkpoint.resume={path.parent / 'last.pt'})")
        return ResumePoint(path, ckpt, tuple(changes))

    def _pick_in_run_dir(self) -> str | None:
        """Rank 0: the checkpoint to resume from (None: start from the beginning), or the refusal."""
        if self.cfg.resume == "never":
            supersede(self.run_dir)
            return None
        found = scan_checkpoints(self.run_dir)
        if found.none_loads and (self.cfg.on_unreadable == "refuse" or self.config["eval"]["only"]):
            raise unreadable_error(self.run_dir, found, new_run="start a new run (another logging.run_name)",
                                   restart="checkpoint.on_unreadable=restart")
        for exc in found.unreadable:
            log.warning("skipping a checkpoint: %s", exc)
        if found.none_loads:  # checkpoint.on_unreadable=restart
            supersede(self.run_dir)
            return None
        return str(found.newest[0]) if found.newest else None

    def restore(self, resume: ResumePoint, parts: Checkpointable) -> Counters:
        """Load every state_dict strictly into `parts`; returns the saved counters."""
        ckpt = resume.ckpt
        configured = [{k: v for k, v in group.items() if k != "params"} for group in parts.optimizer.param_groups]
        parts.load_state_dict({key: ckpt.get(key) for key in STATE_KEYS})
        apply_configured_hyperparameters(parts, configured, resume.path)
        counters = Counters(**ckpt["counters"])
        self.written = counters.position
        rank_state = resume.rank_state(self.dist)
        if rank_state is not None:
            set_rng_state(rank_state["rng"], self.dist.device)
        if self.dist.is_main:  # in the user's terms: 1-based epochs, and what runs next
            c = counters
            if c.step_in_epoch:
                where = (f": epoch {c.epoch + 1} continues after its step {c.step_in_epoch} of "
                         f"{len(parts.train_loader)} (global step {c.global_step})")
            else:
                where = f" (end of epoch {c.epoch}): " + (f"epoch {c.epoch + 1} starts from its beginning"
                                                          if c.epoch < self.epochs else "every epoch is done")
            log.info("resumed from %s%s", resume.path, where)
        return counters

    def holds(self, counters: Counters) -> bool:
        """Does the newest checkpoint hold this position (or is there nothing trained to keep)?"""
        return self.written == counters.position or counters.position == (0, False)

    def save_step(self, parts: Checkpointable, counters: Counters) -> None:
        """A mid-epoch checkpoint step-<global step>.pt; keeps the newest checkpoint.keep_last."""
        self._write(parts, counters, [step_path(self.run_dir, counters.global_step)])
        if self.dist.is_main:
            prune_step_checkpoints(self.run_dir, self.cfg.keep_last)

    def save_epoch(self, parts: Checkpointable, counters: Counters, new_best: bool, final: bool = False) -> None:
        """last.pt every checkpoint.every_epochs and after the last epoch (or `final`: a run that stops
        early); best.pt on a new best."""
        names = []
        if counters.epoch % self.cfg.every_epochs == 0 or counters.epoch == self.epochs or final:
            names.append(self.run_dir / "last.pt")
        if new_best and self.cfg.save_best:
            names.append(self.run_dir / "best.pt")
        if names:
            self._write(parts, counters, names)

    def _write(self, parts: Checkpointable, counters: Counters, names: list[Path]) -> None:
        if distributed.any_rank(not parts.weights_are_finite()):
            log.error("weights are not finite: not writing %s", ", ".join(p.name for p in names))
            return
        for observer in self.observers:
            observer.before_save(counters)
        payload = self._payload(parts, counters)
        if payload is not None:
            atomic_save(payload, names[0])
            for path in names[1:]:  # last.pt and best.pt hold the same bytes: serialised once
                atomic_copy(names[0], path)
        distributed.barrier()  # nobody resumes or exits before the file is complete
        if any(path.name != "best.pt" for path in names):  # best.pt is a result, not a resume point
            self.written = counters.position
        for observer in self.observers:
            observer.after_save(counters)

    def _payload(self, parts: Checkpointable, counters: Counters) -> dict[str, Any] | None:
        """The full checkpoint on rank 0 (None elsewhere); every rank contributes its own state."""
        parts.sync_buffers()
        # The digest checks that every rank holds the same model: nothing to compare with one rank.
        digest = parameter_digest(parts.model) if self.dist.distributed else None
        rank_states = distributed.gather_objects({"loader": parts.train_loader.state_dict(),
                                                  "rng": rng_state(self.dist.device), "digest": digest})
        if not self.dist.is_main:
            return None
        if len({r["digest"] for r in rank_states}) > 1:
            raise RuntimeError("model replicas differ between ranks (parameter digests disagree); "
                               "this is a bug in the distributed setup, not in the data")
        return {
            "format_version": FORMAT_VERSION,
            "code_revision": self.code_revision,
            **parts.state_dict(),  # STATE_KEYS: model, optimizer, scheduler, scaler, ema
            "counters": asdict(counters),
            "config": self.config,
            "world_size": self.dist.world_size,
            "rank_states": rank_states,
            "budget": self.budget.state_dict() if self.budget is not None else None,
            **asdict(ModelCard(parts.classes, self.eval_transform, parts.init_from)),
        }
