"""Checks the field types cannot express, and the one-line messages every config error becomes.

    check_consistency(cfg)                   # ConfigError naming the key to change and a value to try
    format_errors(exc.errors(), Config)      # pydantic's errors -> one "key: what is wrong (got x)" per key

Each rule names the key to change and, where one exists, a value that passes
(tests/unit/test_config.py checks that the suggested override is accepted).
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from pipeline.config.schema import (ROOT_HINTS, SOURCE_KEYS, SOURCE_NAMES, Config, DataConfig, TrainAugmentConfig,
                                    TrainConfig, leaf_fields)
from pipeline.constants import MAX_PROGRESSIVE_SIZES
from pipeline.errors import ConfigError
from pipeline.sources import DATA_KEYS

# ------------------------------------------------------------------------------ error messages


def _error_key(loc: tuple[Any, ...], section: type[BaseModel]) -> str:
    """The dotted key of an error's location, without the member tags pydantic adds inside a union
    (`model.num_classes.constrained-int` -> `model.num_classes`)."""
    parts: list[str] = []
    model: type[BaseModel] | None = section
    for part in loc:
        if isinstance(part, str) and model is None:
            continue  # past a leaf field: a union member's tag
        if isinstance(part, int) and parts:  # an item of a list: schedule.milestones[1]
            parts[-1] += f"[{part}]"
            continue
        parts.append(str(part))
        if isinstance(part, str) and model is not None:
            ann = model.model_fields[part].annotation if part in model.model_fields else None
            model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    return ".".join(parts)


def format_errors(errors: list[dict[str, Any]], section: type[BaseModel]) -> list[str]:
    """One message per key; the alternatives of a union type are joined with 'or'."""
    by_key: dict[str, list[dict[str, Any]]] = {}
    for err in errors:
        by_key.setdefault(_error_key(err["loc"], section), []).append(err)
    lines = []
    for key, errs in by_key.items():
        if len(errs) == 1 or errs[0]["type"] == "extra_forbidden":
            lines.append(_format_error(errs[0], section))
        else:
            lines.append(f"{key}: {' or '.join(e['msg'] for e in errs)} (got {errs[0].get('input')!r})")
    return lines


def _format_error(err: dict[str, Any], section: type[BaseModel]) -> str:
    key = _error_key(err["loc"], section)
    if err["type"] == "extra_forbidden":
        parent = section
        for part in err["loc"][:-1]:
            ann = parent.model_fields[str(part)].annotation if isinstance(part, str) else None
            parent = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
            if parent is None:
                break
        hint = ""
        if parent is not None:
            close = difflib.get_close_matches(str(err["loc"][-1]), list(parent.model_fields), n=1)
            where = ".".join(str(p) for p in err["loc"][:-1]) or "the top level"
            hint = (f" (did you mean '{close[0]}'?)" if close
                    else f" (the keys of {where}: {', '.join(parent.model_fields)})")
        return f"{key}: unknown key{hint}"
    return f"{key}: {err['msg']} (got {err.get('input')!r})"


# ------------------------------------------------------------------------- keys of other sources


def ignored_data_keys(data: DataConfig) -> list[str]:
    """The source-specific `data` keys given a value that data.source does not read."""
    return [key for key, readers in SOURCE_KEYS.items()
            if data.source not in readers and getattr(data, key) != DataConfig.model_fields[key].default]


def describe_ignored(data: DataConfig, key: str) -> str:
    """'data.root: '/x' is not read by data.source=sample (...); to use it set ..., or reset it (data.root='')'."""
    choices = " or ".join(f"data.source={r} ({SOURCE_NAMES.get(r, r)})" for r in SOURCE_KEYS[key])
    default = DataConfig.model_fields[key].default
    reset = "''" if default == "" else str(default).lower() if isinstance(default, bool) else str(default)
    return (f"data.{key}: {getattr(data, key)!r} is not read by data.source={data.source} "
            f"({SOURCE_NAMES.get(data.source, data.source)}); to use it set {choices}, or reset it "
            f"(data.{key}={reset})")


def _check_source_keys(data: DataConfig) -> None:
    if data.source == "synthetic":
        return
    wrong = [key for key in ignored_data_keys(data) if key in DATA_KEYS]
    if wrong:
        others = f" (also: {', '.join('data.' + k for k in wrong[1:])})" if wrong[1:] else ""
        raise ConfigError(describe_ignored(data, wrong[0]) + others)


# ---------------------------------------------------------------------------- the rules


def _number(value: float) -> str:
    """A float as a person would type it in an override: 0.75, 7.5, 150."""
    return f"{round(value, 3):g}"


def _scaled_milestones(milestones: list[float], epochs: int) -> str:
    """The milestones moved so that the last sits at 3/4 of the run, as the reference's 225 of 300 does."""
    factor = 0.75 * epochs / milestones[-1]
    return "[" + ",".join(_number(m * factor) for m in milestones) + "]"


def check_consistency(cfg: Config) -> None:
    """Rules that involve several fields; each error names the key to change and a value to try."""
    aug = cfg.data.train
    if aug.max_side < aug.min_side:
        raise ConfigError(f"data.train.max_side: {aug.max_side} is smaller than data.train.min_side {aug.min_side} "
                          f"(e.g. data.train.max_side={aug.min_side})")
    if aug.kind == "reference" and aug.crop > aug.min_side:
        raise ConfigError(
            f"data.train.crop: a {aug.crop}px crop does not fit the smallest resized side "
            f"data.train.min_side = {aug.min_side}px (e.g. data.train.crop={aug.min_side}, or raise "
            f"data.train.min_side and data.train.max_side to {aug.crop} or more)"
        )
    _check_data_ranges(cfg.data)
    _check_progressive(aug)
    if cfg.data.eval.crop > cfg.data.eval.size:
        raise ConfigError(f"data.eval.crop: {cfg.data.eval.crop} is larger than data.eval.size {cfg.data.eval.size} "
                          f"(e.g. data.eval.size={cfg.data.eval.crop})")
    if cfg.model.num_classes == "auto" and cfg.data.source == "synthetic":
        raise ConfigError("model.num_classes: auto counts the classes of the data, and data.source = synthetic "
                          "has none; give a number (e.g. model.num_classes=10)")
    if cfg.data.source in ROOT_HINTS and not cfg.data.root:
        raise ConfigError(f"data.root: required for data.source = {cfg.data.source}: {ROOT_HINTS[cfg.data.source]}")
    _check_source_keys(cfg.data)
    sched, epochs = cfg.schedule, cfg.train.epochs
    if sched.name == "multistep":
        ms = sched.milestones
        if any(m <= 0 for m in ms) or any(b <= a for a, b in zip(ms, ms[1:])):
            raise ConfigError(f"schedule.milestones: must be positive and increasing (got {ms}; "
                              "e.g. schedule.milestones=[150,225])")
        if ms and ms[-1] >= epochs:
            raise ConfigError(
                f"schedule.milestones: milestone {ms[-1]} is not before the last epoch (train.epochs = {epochs}); "
                f"scale the milestones to the run (e.g. schedule.milestones={_scaled_milestones(ms, epochs)}) or "
                "drop the decay steps with schedule.milestones=[]"
            )
    if sched.warmup_epochs >= epochs:
        raise ConfigError(f"schedule.warmup_epochs: {sched.warmup_epochs} is not shorter than train.epochs = {epochs} "
                          f"(e.g. schedule.warmup_epochs={_number(0.05 * epochs)}, or 0 for none)")
    for threshold in cfg.train.tta_thresholds:
        if not 0.0 < threshold <= 1.0 or abs(threshold * 1000 - round(threshold * 1000)) > 1e-6:
            raise ConfigError(f"train.tta_thresholds: {threshold} must be a fraction in (0, 1] with at most one "
                              "decimal in percent (0.926 = 92.6%; e.g. train.tta_thresholds=[0.9,0.926])")
    if len(set(cfg.train.tta_thresholds)) != len(cfg.train.tta_thresholds):
        raise ConfigError(f"train.tta_thresholds: repeated values in {cfg.train.tta_thresholds}; give each once")
    if cfg.eval.weights == "both" and cfg.train.ema_decay == 0:
        raise ConfigError("eval.weights: both needs an EMA (train.ema_decay > 0); set train.ema_decay=0.999 or "
                          "eval.weights=raw")
    if cfg.eval.only and cfg.checkpoint.resume == "never":
        raise ConfigError("eval.only: needs a checkpoint: checkpoint.resume=auto (the latest of "
                          "logging.run_name=<run>) or checkpoint.resume=<path to a .pt file>")
    _check_accepted_keys(cfg.checkpoint.accept_changes)
    if cfg.train.init_from and cfg.checkpoint.resume not in ("auto", "never"):
        raise ConfigError("train.init_from: starts a new run from other weights, and checkpoint.resume continues one "
                          "from its checkpoint; give one of the two")
    if cfg.train.init_from and cfg.eval.only:
        raise ConfigError("train.init_from: eval.only evaluates a checkpoint and trains nothing; evaluate the source "
                          f"itself (checkpoint.resume={cfg.train.init_from})")
    _check_time_budget(cfg.train)
    _check_home_directories(cfg)
    name = cfg.logging.run_name
    if name and (name in (".", "..") or "/" in name or "\\" in name or name.startswith("~")):
        raise ConfigError(f"logging.run_name: {name!r} must be a plain directory name (it may not leave runs_dir; "
                          "e.g. logging.run_name=my-run)")


# Keys that name a file or folder: a leading ~ or ~user means a home directory, which must exist.
PATH_KEYS = ("data.root", "data.eval_labels", "data.eval_label_map", "logging.runs_dir", "train.init_from",
             "checkpoint.resume")


def _check_home_directories(cfg: Config) -> None:
    """`~nobody/data` would fail deep in the data or run code (Path.expanduser raises RuntimeError): name the key."""
    for key in PATH_KEYS:
        section, field = key.split(".")
        value = getattr(getattr(cfg, section), field)
        try:
            Path(value).expanduser()
        except RuntimeError:
            raise ConfigError(f"{key}: {value!r} starts with a home directory that does not exist here "
                              f"({value.split('/')[0]}; give the full path)") from None


def duration_seconds(text: str) -> float:
    """'300s', '5m', '2h', '1h30m' or plain seconds -> seconds; ValueError for anything else."""
    text = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", text)
    if not parts or "".join(f"{n}{u}" for n, u in parts) != text:
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


def _check_time_budget(train: TrainConfig) -> None:
    if train.time_budget == "off":
        return
    try:
        seconds = duration_seconds(train.time_budget)
    except ValueError:
        raise ConfigError(f"train.time_budget: {train.time_budget!r} is not a duration (e.g. train.time_budget=300s, "
                          "5m, 2h or 1h30m; off for none)") from None
    if seconds <= 0:
        raise ConfigError(f"train.time_budget: {train.time_budget!r} must be longer than zero (or off)")
    if train.max_steps:
        raise ConfigError("train.max_steps: train.time_budget plans the number of steps; give one of the two")
    clock = train.debug_budget_clock
    if clock and (len(clock) != 4 or min(clock) < 0 or clock[0] <= 0 or clock[3] != int(clock[3])):
        raise ConfigError(f"train.debug_budget_clock: {clock} is not [step s > 0, evaluation s, checkpoint s, "
                          "slow-down step] (e.g. train.debug_budget_clock=[0.1,1,0.2,40])")


def _check_accepted_keys(keys: list[str]) -> None:
    """checkpoint.accept_changes names config keys (or `all`): a typo would accept nothing."""
    known = [key for key, _ in leaf_fields(Config)]
    for key in keys:
        if key != "all" and key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else " (a dotted config key, e.g. optim.lr, or all)"
            raise ConfigError(f"checkpoint.accept_changes: {key!r} is not a config key{hint}")


def _check_data_ranges(data: DataConfig) -> None:
    """The list-valued data keys (their lengths are checked by the schema): ranges and statistics."""
    ranges = (("area", data.train.area, 1.0), ("aspect", data.train.aspect, None),
              ("erase_area", data.train.erase_area, 1.0), ("erase_aspect", data.train.erase_aspect, None))
    for key, (low, high), bound in ranges:
        if not 0 < low <= high or (bound is not None and high > bound):
            limit = f"0 < min <= max <= {bound}" if bound is not None else "0 < min <= max"
            raise ConfigError(f"data.train.{key}: expected [min, max] with {limit} (got {[low, high]})")
    if not all(0 <= v <= 255 for v in data.train.erase_value):
        raise ConfigError(f"data.train.erase_value: R, G, B must each lie in 0-255 (got {data.train.erase_value})")
    if min(data.std) <= 0:
        raise ConfigError(f"data.std: every channel's standard deviation must be positive (got {data.std})")
    if data.eval_label_map and not data.eval_labels:
        raise ConfigError("data.eval_label_map: maps the IDs of a labels file, so it needs data.eval_labels")


def _check_progressive(aug: TrainAugmentConfig) -> None:
    """Progressive resizing: a start below the final crop, a ramp inside the run, a bounded number of sizes."""
    start, (begin, end), multiple = aug.progressive_start_crop, aug.progressive_ramp, aug.progressive_multiple
    if not start:
        return
    if start >= aug.crop:
        raise ConfigError(f"data.train.progressive_start_crop: {start} must be smaller than data.train.crop "
                          f"{aug.crop} (e.g. data.train.progressive_start_crop={aug.crop * 3 // 4}), or 0 for off")
    if not 0.0 <= begin <= end < 1.0:
        raise ConfigError(f"data.train.progressive_ramp: expected [start, end] with 0 <= start <= end < 1, fractions "
                          f"of the run, the last part at the final size (got {[begin, end]}; e.g. [0.7,0.85])")
    def count(step: int) -> int:  # as ProgressiveResize.sides: the start, the multiples between, the final crop
        return 2 + len(range((start // step + 1) * step, aug.crop, step))

    sizes = count(multiple)
    if sizes > MAX_PROGRESSIVE_SIZES:
        fits = next(m for m in range(multiple, aug.crop + 1) if count(m) <= MAX_PROGRESSIVE_SIZES)
        raise ConfigError(f"data.train.progressive_multiple: {multiple} px gives {sizes} sizes from {start} to "
                          f"{aug.crop}, more than {MAX_PROGRESSIVE_SIZES} (each compiles once under train.compile; "
                          f"e.g. data.train.progressive_multiple={fits})")

