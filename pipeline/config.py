"""Typed configuration: one schema for YAML files and command-line overrides.

Every entry point is configured the same way: a YAML file supplies values, `key.sub=value`
arguments override them, and both go through the schema below (types converted and checked,
unknown keys and impossible values rejected with the key named) before any work starts.

    python -m pipeline.config configs/quickstart.yaml train.epochs=5   # print the resolved config
    python -m pipeline.config --markdown                               # the README's reference

Each section is a pydantic model (a typed dataclass with validation); each field carries its
default, its meaning and its unit. Components receive only their own section
(`build_loader(cfg.data, ...)`, `build_optimizer(cfg.optim, ...)`).
"""

from __future__ import annotations

import difflib
import sys
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipeline.constants import INTERPOLATIONS
from pipeline.errors import ConfigError

__all__ = ["Config", "ConfigError", "config_from_cli", "load_config", "load_config_args", "save_config", "split_args"]


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are re-validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _f(default: Any, doc: str, **constraints: Any) -> Any:
    """A field with its default, a one-line meaning (with unit) and optional bounds (gt=0, ...)."""
    if isinstance(default, (list, dict)):
        return Field(default_factory=lambda d=default: type(d)(d), description=doc, **constraints)
    return Field(default, description=doc, **constraints)


# --------------------------------------------------------------------------------------- model


class ModelConfig(Section):
    """The network (a registry name from `models`)."""

    name: str = _f("squeezenet_bypass", "registry name: squeezenet_bypass | squeezenet1_0 | squeezenet1_1")
    num_classes: Annotated[int, Field(gt=1)] | Literal["auto"] = _f(
        10, "number of output classes; auto = the classes of the training data (not with data.source=synthetic)"
    )
    dropout: float = _f(0.5, "dropout probability before the classifier", ge=0.0, lt=1.0)


# ---------------------------------------------------------------------------------------- data

Interpolation = Literal[(*INTERPOLATIONS, "random")]  # type: ignore[valid-type]


class TrainAugmentConfig(Section):
    """Training augmentation: the reference's random-side resize + random crop, or a random-resized crop; flip."""

    kind: Literal["reference", "random_resized_crop"] = _f(
        "reference", "reference: resize the shorter side to [min_side, max_side], random crop x crop; "
        "random_resized_crop: a window of random area and aspect decoded from the file, resized to crop x crop")
    min_side: int = _f(124, "reference: smallest resized shorter side, drawn uniformly from [min_side, max_side] (px)",
                       gt=0)
    max_side: int = _f(132, "reference: largest resized shorter side (px)", gt=0)
    crop: int = _f(122, "side of the square image fed to the network (px)", gt=0)
    area: list[float] = _f([0.08, 1.0], "random_resized_crop: [min, max] area of the window, as a fraction of the "
                           "image's (torchvision's scale)", min_length=2, max_length=2)
    aspect: list[float] = _f([3 / 4, 4 / 3], "random_resized_crop: [min, max] width / height of the window, drawn "
                             "log-uniformly (torchvision's ratio)", min_length=2, max_length=2)
    roi_decode: bool = _f(True, "random_resized_crop: decode only the window (fn.decoders.image_slice); false = "
                          "decode the whole image, then slice")
    flip_prob: float = _f(0.5, "probability of a horizontal flip", ge=0.0, le=1.0)
    interpolation: Interpolation = _f(
        "bilinear", "resize filter; 'random' picks nearest/bilinear/bicubic per image as the reference did"
    )


class EvalAugmentConfig(Section):
    """Evaluation preprocessing: deterministic resize, center crop, per-image standardization."""

    size: int = _f(128, "resized shorter side (px); square images become size x size", gt=0)
    crop: int = _f(128, "side of the center crop (px); equal to size means no crop", gt=0)
    interpolation: Literal[INTERPOLATIONS] = _f("bilinear", "resize filter")  # type: ignore[valid-type]


class DataConfig(Section):
    """Input pipeline: where images come from and how DALI prepares them."""

    source: Literal["sample", "cifar10", "imagefolder", "webdataset", "synthetic"] = _f(
        "sample",
        "sample: CIFAR-10 subset shipped in data/; cifar10: official python archive in root; "
        "imagefolder: class-per-folder JPEG/PNG tree in root; webdataset: tar shards in root; synthetic: random images",
    )
    root: str = _f("", "data directory (cifar10: holds cifar-10-python.tar.gz; imagefolder: holds the splits; "
                   "webdataset: the folder of shards, or a glob / list file of the training shards)")
    train_split: str = _f("train", "imagefolder: sub-folder with the training images; webdataset: the training "
                          "shards: a name (root/<name>-*.tar or root/<name>/*.tar), a glob or a .txt list file")
    eval_split: str = _f("auto", "validation sub-folder (imagefolder) or shards (webdataset, as train_split); "
                         "auto = the first of val, test, validation")
    eval_labels: str = _f("", "imagefolder: labels file of a flat validation folder (no class folders): one label "
                          "per line in sorted-file order (ILSVRC2012 ground truth), or file,label lines")
    eval_label_map: str = _f("", "imagefolder: with a one-label-per-line eval_labels file, the class folder name of "
                             "label 1, 2, ... one per line (the ILSVRC2012 devkit's ID -> synset order)")
    shuffle_buffer: int = _f(2048, "webdataset: samples each rank shuffles among while reading its shards in order "
                             "(memory: this many encoded images per rank)", ge=0)
    download: bool = _f(False, "cifar10: download the archive (checksum verified) when root lacks it")
    device: Literal["auto", "gpu", "cpu"] = _f("auto", "where DALI augments: auto = gpu when CUDA is available")
    num_threads: int = _f(2, "DALI CPU worker threads per pipeline (ranks x threads <= cores per node)", gt=0)
    prefetch_queue_depth: int = _f(2, "batches DALI prepares ahead of the training step", gt=0)
    hw_decoder_load: float = _f(
        0.65, "GPU JPEG decoding: share of each batch sent to the hardware decoder (A100/H100/H200), the rest "
        "to the CUDA decoder", ge=0.0, le=1.0)
    std_eps: float = _f(1e-5, "normalize=image: added to the per-image variance before the square root "
                        "(pixel units^2)", ge=0.0)
    normalize: Literal["image", "channel"] = _f(
        "image", "image: (x - mean) / std over each image's pixels and channels (the reference); channel: "
        "(x / 255 - mean[c]) / std[c] with the data-set statistics below (the ImageNet convention)")
    mean: list[float] = _f([0.485, 0.456, 0.406], "normalize=channel: R, G, B means on the 0-1 scale",
                           min_length=3, max_length=3)
    std: list[float] = _f([0.229, 0.224, 0.225], "normalize=channel: R, G, B standard deviations on the 0-1 scale",
                          min_length=3, max_length=3)
    preallocate_width_hint: int = _f(0, "GPU decoding: widest image expected, to size the hardware decoder's "
                                     "buffers up front (px); 0 = DALI's default", ge=0)
    preallocate_height_hint: int = _f(0, "GPU decoding: tallest image expected (px); 0 = DALI's default", ge=0)
    device_memory_padding: int = _f(16 << 20, "GPU decoding: extra bytes per device buffer, so larger images "
                                    "do not reallocate (bytes)", ge=0)
    host_memory_padding: int = _f(8 << 20, "GPU decoding: extra bytes per pinned host buffer (bytes)", ge=0)
    check_images: Literal["off", "error", "skip"] = _f(
        "off",
        "up-front decode of every file: off = no scan (a bad file still fails with its path named); "
        "error = scan and fail listing bad files; skip = scan and leave bad files out, with a count",
    )
    synthetic_images: int = _f(50_000, "synthetic: training images per epoch (random, already at crop size)", gt=0)
    train: TrainAugmentConfig = Field(default_factory=TrainAugmentConfig, description="training augmentation")
    eval: EvalAugmentConfig = Field(default_factory=EvalAugmentConfig, description="evaluation preprocessing")


# --------------------------------------------------------------------------------- optimisation


class OptimConfig(Section):
    """SGD with momentum; the learning rate scales with batch size if lr_scaling = linear."""

    lr: float = _f(0.1, "peak learning rate at reference_batch_size (per step)", gt=0.0)
    momentum: float = _f(0.9, "momentum coefficient (classical unless nesterov)", ge=0.0, lt=1.0)
    nesterov: bool = _f(False, "use Nesterov momentum")
    weight_decay: float = _f(1e-4, "L2 penalty added to the gradient", ge=0.0)
    decay_norm_and_bias: bool = _f(True, "also decay BatchNorm weights and biases (the reference does)")
    lr_scaling: Literal["none", "linear"] = _f("none", "linear: lr x global_batch_size / reference_batch_size")
    reference_batch_size: int = _f(64, "global batch size at which lr applies unscaled (images)", gt=0)
    impl: Literal["auto", "foreach", "fused", "apex"] = _f(
        "auto", "SGD kernel: auto = fused on CUDA, else foreach; apex = NVIDIA apex FusedSGD (optional install)"
    )


class ScheduleConfig(Section):
    """Learning-rate schedule, stepped every iteration; epochs may be fractional."""

    name: Literal["multistep", "cosine", "onecycle", "poly", "constant"] = _f("multistep", "schedule shape")
    milestones: list[float] = _f([150, 225], "multistep: epochs after which lr is multiplied by gamma")
    gamma: float = _f(0.1, "multistep: factor applied at each milestone", gt=0.0, le=1.0)
    warmup_epochs: float = _f(0.0, "linear warm-up length (epochs); 0 = none", ge=0.0)
    warmup_start_factor: float = _f(0.1, "lr factor at the first warm-up step", ge=0.0, le=1.0)
    min_lr_factor: float = _f(0.0, "cosine: final lr as a fraction of the peak", ge=0.0, le=1.0)
    power: float = _f(0.5, "poly: lr x (1 - progress)^power, reaching 0 at the last step (Caffe's lr_policy poly)",
                      gt=0.0)
    pct_start: float = _f(0.25, "onecycle: fraction of training spent rising to the peak", gt=0.0, lt=1.0)
    div_factor: float = _f(25.0, "onecycle: peak lr / starting lr", ge=1.0)
    final_div_factor: float = _f(1e4, "onecycle: starting lr / final lr", ge=1.0)


# -------------------------------------------------------------------------------------- training


CompileMode = Literal["off", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]


class TrainConfig(Section):
    """The training loop."""

    epochs: int = _f(300, "number of passes over the training set", gt=0)
    global_batch_size: int = _f(64, "images per optimizer step over all processes", gt=0)
    precision: Literal["auto", "bf16", "fp16", "fp32"] = _f(
        "auto", "autocast dtype: auto = bf16 on CUDA, fp32 on CPU; fp16 adds a GradScaler"
    )
    compile: CompileMode = _f(
        "off", "torch.compile mode: off | default | reduce-overhead (CUDA graphs: removes kernel-launch overhead "
        "at small batches) | max-autotune | max-autotune-no-cudagraphs; true/false mean default/off")
    seed: int = _f(0, "base seed: data order, weights, augmentation (rank r uses seed + r)", ge=0)
    deterministic: bool = _f(False, "deterministic algorithms (slower; for bit-exact resume checks)")
    label_smoothing: float = _f(0.0, "cross-entropy label smoothing", ge=0.0, lt=1.0)
    ema_decay: float = _f(0.0, "weight EMA decay per step; 0 = no EMA", ge=0.0, lt=1.0)
    ema_warmup: bool = _f(True, "EMA decay of update n is min(ema_decay, (1 + n) / (10 + n)), so the EMA follows "
                                "the weights from the first epoch; false = ema_decay from the second update on")
    tta_thresholds: list[float] = _f([0.90, 0.92, 0.926], "time to accuracy: headline top-1 levels (fractions, "
                                     "at most one decimal in percent) whose first crossing is recorded")
    target_accuracy: float = _f(0.0, "stop (exit 0) after the first evaluation whose headline top-1 reaches this "
                                "fraction; 0 = off", ge=0.0, le=1.0)
    max_steps_per_epoch: int = _f(0, "cap on steps per epoch, for smoke tests; 0 = full epochs", ge=0)
    nonfinite_limit: int = _f(10, "stop after this many consecutive steps with a non-finite loss", gt=0)
    debug_nan_step: int = _f(-1, "testing aid: make the loss NaN from this global step on; -1 = off", ge=-1)

    @field_validator("compile", mode="before")
    @classmethod
    def _compile_bool(cls, value: Any) -> Any:
        """Configs written when compile was a switch keep working: true = default mode, false = off."""
        return {True: "default", False: "off"}.get(value, value) if isinstance(value, bool) else value


class EvalConfig(Section):
    """Evaluation on the validation split."""

    every: int = _f(1, "evaluate every N epochs (the last epoch always); 0 = only at the end", ge=0)
    batch_size: int = _f(256, "images per evaluation step per process", gt=0)
    weights: Literal["ema", "raw", "both"] = _f(
        "ema", "ema: the EMA weights when train.ema_decay > 0, else the raw ones; raw; both: EMA (the headline: "
        "val/*, best, final, time to accuracy) and raw, also logged as val_ema/* and val_raw/*. "
        "The former eval.use_ema=true/false still means ema/raw"
    )
    only: bool = _f(False, "evaluate the checkpoint named by checkpoint.resume (or the run's latest), then exit")


class DistConfig(Section):
    """Distributed data parallel (one process per GPU under torchrun)."""

    backend: Literal["auto", "nccl", "gloo"] = _f("auto", "auto = nccl with CUDA, gloo on CPU")
    sync_bn: bool = _f(False, "SyncBatchNorm: batch statistics over all processes (small per-GPU batches; GPU only)")
    timeout_s: int = _f(1800, "collective-operation timeout (s)", gt=0)


class LoggingConfig(Section):
    """Run directory, console output and metrics files."""

    runs_dir: str = _f("runs", "parent directory of run directories")
    run_name: str = _f("", "run directory name under runs_dir; empty = <name>-<timestamp>")
    log_every: int = _f(50, "steps between metric lines, progress updates and throughput windows", gt=0)
    perf_warmup_steps: int = _f(20, "steps excluded from throughput at the start of each epoch", ge=0)
    progress: Literal["auto", "bar", "lines", "off"] = _f("auto", "auto = bar on a terminal, lines otherwise")


class WandbConfig(Section):
    """Weights & Biases tracking, from rank 0 only. The API key comes from WANDB_API_KEY, never from here."""

    mode: Literal["auto", "online", "offline", "disabled"] = _f(
        "auto", "auto = online with an API key configured, else offline"
    )
    project: str = _f("squeezenet-dali", "W&B project")
    entity: str = _f("", "W&B team or user; empty = the key's default")
    group: str = _f("", "run group; empty = the experiment name, so variants sit side by side")
    tags: list[str] = _f([], "run tags")
    name: str = _f("", "W&B run name; empty = the run directory name")


class CheckpointConfig(Section):
    """Checkpoints in the run directory: written atomically, loaded with weights_only=True."""

    resume: str = _f("auto", "auto = continue from the run's latest good checkpoint; never; or a file path")
    every_epochs: int = _f(1, "write 'last' every N epochs", gt=0)
    every_steps: int = _f(0, "also write a mid-epoch checkpoint every N steps; 0 = off", ge=0)
    keep_last: int = _f(2, "step checkpoints kept (older ones deleted)", gt=0)
    save_best: bool = _f(True, "keep a copy of the best-top-1 checkpoint as 'best'")


# ------------------------------------------------------------------------------------------ root


class Config(Section):
    """The whole job."""

    name: str = _f("", "experiment name; empty = the YAML file's stem. Names run directories and the W&B group")
    model: ModelConfig = Field(default_factory=ModelConfig, description="network")
    data: DataConfig = Field(default_factory=DataConfig, description="input pipeline")
    optim: OptimConfig = Field(default_factory=OptimConfig, description="optimizer")
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig, description="learning-rate schedule")
    train: TrainConfig = Field(default_factory=TrainConfig, description="training loop")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="evaluation")
    dist: DistConfig = Field(default_factory=DistConfig, description="distributed training")
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="run directory and logs")
    wandb: WandbConfig = Field(default_factory=WandbConfig, description="Weights & Biases")
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig, description="checkpoints")

    def to_dict(self) -> dict[str, Any]:
        """Plain data (dicts, lists, str, numbers): what goes into config.yaml, W&B and checkpoints."""
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def check_world_size(self, world_size: int) -> None:
        """Checks that depend on the number of processes, known only at launch."""
        if self.train.global_batch_size % world_size:
            raise ConfigError(
                f"train.global_batch_size: {self.train.global_batch_size} is not divisible by the "
                f"{world_size} processes of this run"
            )


# ------------------------------------------------------------------------------------- loading


def _error_key(loc: tuple[Any, ...], section: type[BaseModel]) -> str:
    """The dotted key of an error's location, without the member tags pydantic adds inside a union
    (`model.num_classes.constrained-int` -> `model.num_classes`)."""
    parts: list[str] = []
    model: type[BaseModel] | None = section
    for part in loc:
        if isinstance(part, str) and model is None:
            continue  # past a leaf field: a union member's tag
        parts.append(str(part))
        if isinstance(part, str) and model is not None:
            ann = model.model_fields[part].annotation if part in model.model_fields else None
            model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    return ".".join(parts)


def _format_errors(errors: list[dict[str, Any]], section: type[BaseModel]) -> list[str]:
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
            hint = f" (did you mean '{close[0]}'?)" if close else ""
        return f"{key}: unknown key{hint}"
    return f"{key}: {err['msg']} (got {err.get('input')!r})"


def _check_consistency(cfg: Config) -> None:
    """Rules that involve several fields; each error names the key to change."""
    aug = cfg.data.train
    if aug.max_side < aug.min_side:
        raise ConfigError(f"data.train.max_side: {aug.max_side} is smaller than data.train.min_side {aug.min_side}")
    if aug.kind == "reference" and aug.crop > aug.min_side:
        raise ConfigError(
            f"data.train.crop: a {aug.crop}px crop does not fit the smallest resized side "
            f"data.train.min_side = {aug.min_side}px"
        )
    _check_data_ranges(cfg.data)
    if cfg.data.eval.crop > cfg.data.eval.size:
        raise ConfigError(f"data.eval.crop: {cfg.data.eval.crop} is larger than data.eval.size {cfg.data.eval.size}")
    if cfg.model.num_classes == "auto" and cfg.data.source == "synthetic":
        raise ConfigError("model.num_classes: auto counts the classes of the data, and data.source = synthetic "
                          "has none; give a number (e.g. model.num_classes=10)")
    if cfg.data.source in ("cifar10", "imagefolder", "webdataset") and not cfg.data.root:
        raise ConfigError(f"data.root: required for data.source = {cfg.data.source}")
    sched, epochs = cfg.schedule, cfg.train.epochs
    if sched.name == "multistep":
        ms = sched.milestones
        if any(m <= 0 for m in ms) or any(b <= a for a, b in zip(ms, ms[1:])):
            raise ConfigError(f"schedule.milestones: must be positive and increasing (got {ms})")
        if ms and ms[-1] >= epochs:
            raise ConfigError(
                f"schedule.milestones: milestone {ms[-1]} is not before the last epoch (train.epochs = {epochs})"
            )
    if sched.warmup_epochs >= epochs:
        raise ConfigError(f"schedule.warmup_epochs: {sched.warmup_epochs} is not shorter than train.epochs = {epochs}")
    for threshold in cfg.train.tta_thresholds:
        if not 0.0 < threshold <= 1.0 or abs(threshold * 1000 - round(threshold * 1000)) > 1e-6:
            raise ConfigError(f"train.tta_thresholds: {threshold} must be a fraction in (0, 1] with at most one "
                              "decimal in percent (0.926 = 92.6%)")
    if len(set(cfg.train.tta_thresholds)) != len(cfg.train.tta_thresholds):
        raise ConfigError(f"train.tta_thresholds: repeated values in {cfg.train.tta_thresholds}")
    if cfg.eval.weights == "both" and cfg.train.ema_decay == 0:
        raise ConfigError("eval.weights: both needs an EMA (train.ema_decay > 0)")
    if cfg.eval.only and cfg.checkpoint.resume == "never":
        raise ConfigError("eval.only: needs a checkpoint (checkpoint.resume = auto or a file path)")
    name = cfg.logging.run_name
    if name and (name in (".", "..") or "/" in name or "\\" in name or name.startswith("~")):
        raise ConfigError(f"logging.run_name: {name!r} must be a plain directory name (it may not leave runs_dir)")


def _check_data_ranges(data: DataConfig) -> None:
    """The list-valued data keys (their lengths are checked by the schema): ranges and statistics."""
    for key, (low, high), bound in (("area", data.train.area, 1.0), ("aspect", data.train.aspect, None)):
        if not 0 < low <= high or (bound is not None and high > bound):
            limit = f"0 < min <= max <= {bound}" if bound is not None else "0 < min <= max"
            raise ConfigError(f"data.train.{key}: expected [min, max] with {limit} (got {[low, high]})")
    if min(data.std) <= 0:
        raise ConfigError(f"data.std: every channel's standard deviation must be positive (got {data.std})")
    if data.eval_label_map and not data.eval_labels:
        raise ConfigError("data.eval_label_map: maps the IDs of a labels file, so it needs data.eval_labels")


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """`["optim.lr=0.2", "schedule.milestones=[10,20]"]` -> nested dict; values parsed as YAML scalars."""
    tree: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected key.sub=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"{key}: cannot parse value {raw!r}: {exc}") from None
        node = tree
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{key}: '{part}' is both a value and a section in the overrides")
        node[parts[-1]] = value
    return tree


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _migrate_legacy_keys(values: dict[str, Any]) -> dict[str, Any]:
    """Keys of earlier versions, rewritten to their replacements (configs and overrides keep working)."""
    section = values.get("eval")
    if not (isinstance(section, dict) and "use_ema" in section):
        return values
    section = dict(section)
    use_ema = section.pop("use_ema")
    if not isinstance(use_ema, bool):
        raise ConfigError(f"eval.use_ema: expected true or false (got {use_ema!r}); it is now eval.weights: ema | raw | both")
    if "weights" in section:
        raise ConfigError("eval.use_ema: replaced by eval.weights; give only eval.weights")
    section["weights"] = "ema" if use_ema else "raw"
    return {**values, "eval": section}


def from_dict(values: dict[str, Any]) -> Config:
    """Validate plain data against the schema; raise ConfigError naming every bad key."""
    values = _migrate_legacy_keys(values)
    try:
        cfg = Config.model_validate(values)
    except ValidationError as exc:
        lines = _format_errors(exc.errors(), Config)
        raise ConfigError("; ".join(lines)) from None
    _check_consistency(cfg)
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults <- YAML file <- `key=value` overrides, validated as one; the name defaults to the file stem."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path}: not found")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path}: invalid YAML: {exc}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {path}: expected a mapping of sections at the top level")
        values = loaded or {}
    values = _merge(values, parse_overrides(overrides or []))
    if not values.get("name"):
        values["name"] = path.stem if path is not None else "default"
    return from_dict(values)


def split_args(args: list[str]) -> tuple[str | None, list[str]]:
    """Command-line words `[CONFIG.yaml] [key=value ...]` -> (the config path or None, the overrides)."""
    if args and "=" not in args[0]:
        return args[0], list(args[1:])
    return None, list(args)


def load_config_args(args: list[str]) -> Config:
    """The config an entry point's arguments describe (`[CONFIG.yaml] [key=value ...]`)."""
    return load_config(*split_args(args))


def config_from_cli(args: list[str]) -> Config | None:
    """For entry points: the config `[CONFIG.yaml] [key=value ...]` describes, or None after
    printing the one-line error (the caller exits with status 2)."""
    try:
        return load_config_args(args)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return None


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(cfg.to_yaml())


# ------------------------------------------------------------------------------- documentation


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return " | ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin is Annotated:
        base, *meta = typing.get_args(annotation)
        bounds = ", ".join(b for b in (_bounds(m) for m in meta if hasattr(m, "metadata")) if b)
        return _type_name(base) + (f" ({bounds})" if bounds else "")
    if origin is Literal:
        return " | ".join(str(a) for a in typing.get_args(annotation))
    if origin is list:
        return f"list[{_type_name(typing.get_args(annotation)[0])}]"
    return getattr(annotation, "__name__", str(annotation))


def _bounds(info: Any) -> str:
    symbols = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
    parts = []
    for meta in info.metadata:
        for attr, symbol in symbols.items():
            value = getattr(meta, attr, None)
            if value is not None:
                parts.append(f"{symbol} {value}")
    return ", ".join(parts)


def markdown_reference() -> str:
    """The configuration reference as a Markdown table, generated from the schema."""
    rows = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, info in model.model_fields.items():
            ann = info.annotation
            key = f"{prefix}{name}"
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                walk(ann, key + ".")
                continue
            default = info.get_default(call_default_factory=True)
            kind = _type_name(ann)
            bounds = _bounds(info)
            if bounds:
                kind += f" ({bounds})"
            shown = yaml.safe_dump(default, default_flow_style=True).strip().removesuffix("...").strip()
            cells = [f"`{key}`", kind, f"`{shown}`", info.description or ""]
            rows.append("| " + " | ".join(c.replace("|", "\\|") if i else c for i, c in enumerate(cells)) + " |")

    walk(Config, "")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--markdown"]:
        sys.stdout.write(markdown_reference())
        return 0
    cfg = config_from_cli(argv)
    if cfg is None:
        return 2
    sys.stdout.write(cfg.to_yaml())
    return 0


if __name__ == "__main__":
    sys.exit(main())
