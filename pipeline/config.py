"""Typed configuration: one schema for YAML files and command-line overrides.

Every entry point is configured the same way: a YAML file supplies values, `key.sub=value`
arguments override them, and both go through the schema below (types converted and checked,
unknown keys and impossible values rejected with the key named) before any work starts.

    python -m pipeline.config configs/quickstart.yaml train.epochs=5   # print the validated config
    python -m pipeline.config --markdown                               # the reference table alone
    python -m pipeline.config --docs                                   # rewrite docs/configuration.md

Each section is a pydantic model (a typed dataclass with validation); each field carries its
default, its meaning and its unit. Components receive only their own section
(`build_loader(cfg.data, ...)`, `build_optimizer(cfg.optim, ...)`).
"""

from __future__ import annotations

import argparse
import difflib
import logging
import re
import sys
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.constants import (AUTO_AUGMENT_POLICIES, AUTO_AUGMENTS, INTERPOLATIONS, MAX_IMAGE_PIXELS, MAX_MEMBER_MB,
                                MAX_PROGRESSIVE_SIZES, REPO_ROOT)
from pipeline.errors import ConfigError
from pipeline.files import atomic_write_text

__all__ = ["Config", "ConfigError", "config_from_cli", "load_config", "load_config_args", "save_config", "split_args"]


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are re-validated, and every
    float (lists of floats too) must be finite: an inf learning rate would train NaN steps, not fail."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _yaml_off(cls, values: Any) -> Any:
        """YAML reads a bare `off` as false (YAML 1.1): `logging.progress=off`, `cache: off` and
        `train.time_budget=off` (a text key whose default is off) mean "off"."""
        if not isinstance(values, dict):
            return values
        fixed = dict(values)
        for name, value in values.items():
            field = cls.model_fields.get(name)
            if (isinstance(value, bool) and not value and field is not None
                    and ("off" in _choices(field.annotation) or field.default == "off")):
                fixed[name] = "off"
        return fixed


def _choices(annotation: Any) -> tuple[Any, ...]:
    """The values a Literal annotation (or a union holding one) allows; () for other types."""
    if typing.get_origin(annotation) is Literal:
        return typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return tuple(c for arg in typing.get_args(annotation) for c in _choices(arg))
    return ()


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
    # The levers (pipeline/data/levers.py): in the DALI graph, training only, drawn from train.seed; off by default.
    auto_augment: Literal[AUTO_AUGMENTS] = _f(  # type: ignore[valid-type]
        "none", "automatic augmentation of the crop (nvidia.dali.auto_aug): trivial_augment (TrivialAugment Wide), "
        "rand_augment (rand_augment_n, rand_augment_m), auto_augment (auto_augment_policy); none = off")
    rand_augment_n: int = _f(2, "rand_augment: operations per image (RandAugment's N; timm's rand-m9-n2)", ge=1)
    rand_augment_m: int = _f(9, "rand_augment: magnitude of every operation on the 0-10 scale (RandAugment's M)",
                             ge=0, le=10)
    auto_augment_policy: Literal[AUTO_AUGMENT_POLICIES] = _f(  # type: ignore[valid-type]
        "image_net", "auto_augment: the AutoAugment policy (image_net, as DeepLearningExamples' DALI ResNet-50; "
        "reduced_cifar10 was searched on CIFAR-10)")
    erase_prob: float = _f(0.0, "random erasing (Zhong et al. 2017): probability that an image gets one rectangle "
                           "filled with erase_value; 0 = off", ge=0.0, le=1.0)
    erase_area: list[float] = _f([0.02, 1 / 3], "random erasing: [min, max] area of the rectangle, as a fraction of "
                                 "the image's (timm's scale)", min_length=2, max_length=2)
    erase_aspect: list[float] = _f([0.3, 3.3], "random erasing: [min, max] height / width of the rectangle, drawn "
                                   "log-uniformly (timm's ratio)", min_length=2, max_length=2)
    erase_value: list[int] = _f([124, 116, 104], "random erasing: R, G, B fill (0-255, before normalization; the "
                                "ImageNet mean, which channel normalization maps to ~0)", min_length=3, max_length=3)
    progressive_start_crop: int = _f(0, "progressive resizing: crop side at the start of the run (px), growing to "
                                     "crop; min_side and max_side scale with it; 0 = off", ge=0)
    progressive_ramp: list[float] = _f([0.7, 0.85], "progressive resizing: [start, end] of the growth as fractions "
                                       "of the run's steps; crop after end (FFCV's ResNet-50: about 0.7-0.85)",
                                       min_length=2, max_length=2)
    progressive_multiple: int = _f(16, "progressive resizing: sizes during the growth are rounded to multiples of "
                                   "this (px)", gt=0)


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
    verify_checksums: bool = _f(True, "cifar10: check each batch against the official archive's MD5 before reading "
                                "it; false for an archive you made (scripts/make_cifar_archive.py), still read by "
                                "an unpickler that cannot run code")
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
    cache: Literal["auto", "off"] = _f(
        "auto", "decode once: auto = when every image has the same size and both splits fit cache_max_gb "
        "decoded, decode them at start-up (DALI) and train from the arrays (GPU: resident on the GPU); off = "
        "decode every batch. The log says which path was taken")
    cache_max_gb: float = _f(4.0, "data.cache=auto: most decoded bytes per process, both splits together (GiB)",
                             gt=0.0)
    check_images: Literal["off", "error", "skip"] = _f(
        "off",
        "up-front decode of every file: off = no scan (a bad file still fails with its path named); "
        "error = scan and fail listing bad files; skip = scan and leave bad files out, with a count",
    )
    max_pixels: int = _f(MAX_IMAGE_PIXELS, "largest image accepted, width x height read from its header before "
                         "anything decodes it, under every check_images policy (pixels; Pillow's limit: 9,459 x "
                         "9,459, 268 MB decoded); 0 = no limit", ge=0)
    max_member_mb: float = _f(MAX_MEMBER_MB, "largest file read from an archive (imagefolder .tar/.tar.gz, the "
                              "sample) or a tar shard, checked from its header before it is read (MiB)", gt=0.0)
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
    label_smoothing: float = _f(0.0, "cross-entropy label smoothing (applied to mixed targets too)", ge=0.0, lt=1.0)
    mixup_alpha: float = _f(0.0, "mixup (Zhang et al. 2018) on the device: the batch's weight ~ Beta(alpha, alpha) "
                            "per batch; 0 = off (timm: 0.8)", ge=0.0)
    cutmix_alpha: float = _f(0.0, "CutMix (Yun et al. 2019) on the device: the kept area ~ Beta(alpha, alpha) per "
                             "batch; 0 = off (timm: 1.0)", ge=0.0)
    mix_prob: float = _f(1.0, "mixup/CutMix: probability that a batch is mixed at all", ge=0.0, le=1.0)
    mix_switch_prob: float = _f(0.5, "mixup and CutMix both on: probability that a mixed batch uses CutMix",
                                ge=0.0, le=1.0)
    ema_decay: float = _f(0.0, "weight EMA decay per step; 0 = no EMA", ge=0.0, lt=1.0)
    ema_warmup: bool = _f(True, "EMA decay of update n is min(ema_decay, (1 + n) / (10 + n)), so the EMA follows "
                                "the weights from the first epoch; false = ema_decay from the second update on")
    tta_thresholds: list[float] = _f([], "time to accuracy: headline top-1 levels (fractions, at most one decimal "
                                     "in percent) whose first crossing is recorded; empty = none (the CIFAR-10 "
                                     "and ImageNet recipes set their published levels)")
    target_accuracy: float = _f(0.0, "stop (exit 0) after the first evaluation whose headline top-1 reaches this "
                                "fraction; 0 = off", ge=0.0, le=1.0)
    max_steps_per_epoch: int = _f(0, "cap on steps per epoch, for smoke tests; 0 = full epochs", ge=0)
    max_steps: int = _f(0, "stop after this many optimizer steps in all (the last epoch may end early); the "
                           "schedule runs over them; 0 = train.epochs whole epochs", ge=0)
    time_budget: str = _f("off", "fit the run to this wall-clock time from process start (e.g. 300s, 5m, 2h): it "
                                 "measures its steps, then plans train.epochs/max_steps and scales the schedule "
                                 "(docs/training.md); off = train.epochs as given")
    nonfinite_limit: int = _f(10, "stop after this many consecutive steps with a non-finite loss", gt=0)
    init_from: str = _f("", "fine-tuning: start from the weights of this run directory (its best.pt, else last.pt) "
                        "or checkpoint file; optimizer, schedule and epochs start fresh; empty = random weights")
    init_weights: Literal["ema", "raw"] = _f("ema", "init_from: its EMA weights (its raw ones when it has no EMA), "
                                             "or its raw weights")
    freeze: Literal["none", "features"] = _f("none", "features: train the classifier only (the backbone's weights "
                                             "frozen, its BatchNorm statistics too); none = train everything")
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
    tta: Literal["none", "flip"] = _f(
        "none", "test-time augmentation: flip = the mean of the logits of each image and its mirror, the headline "
        "val/*, with the plain figures as val/*_noflip (not time to accuracy: that is train.tta_thresholds, tta/*)")


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

    resume: str = _f("auto", "auto = continue from the run's newest checkpoint that loads; never = start the run over "
                     "(its earlier files move into superseded-<time>/ in its directory); or a file path")
    on_unreadable: Literal["refuse", "restart"] = _f(
        "refuse", "resume=auto in a run directory whose checkpoints all fail to load (emptied, corrupt, another "
        "checkpoint format): refuse = stop (exit 2) naming each file, changing nothing; restart = move the run's "
        "files into superseded-<time>/ in its directory and train from the start")
    every_epochs: int = _f(1, "write 'last' every N epochs", gt=0)
    every_steps: int = _f(0, "also write a mid-epoch checkpoint every N steps; 0 = off", ge=0)
    keep_last: int = _f(2, "step checkpoints kept (older ones deleted)", gt=0)
    save_best: bool = _f(True, "keep a copy of the best-top-1 checkpoint as 'best'")
    accept_changes: list[str] = _f([], "continuing a run with other values of keys that change the experiment "
                                   "(optim, schedule, data, train.epochs, ...): the keys whose new values to accept, "
                                   "or [all]; each change is recorded in config-changes.jsonl (docs/fault-tolerance.md)")


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
        batch = self.train.global_batch_size
        if batch % world_size:
            fits = [n for n in (batch // world_size * world_size, (batch // world_size + 1) * world_size) if n > 0]
            raise ConfigError(
                f"train.global_batch_size: {batch} is not divisible by the {world_size} processes of this run "
                f"(e.g. {' or '.join(f'train.global_batch_size={n}' for n in fits)})"
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
        if isinstance(part, int) and parts:  # an item of a list: schedule.milestones[1]
            parts[-1] += f"[{part}]"
            continue
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
            where = ".".join(str(p) for p in err["loc"][:-1]) or "the top level"
            hint = (f" (did you mean '{close[0]}'?)" if close
                    else f" (the keys of {where}: {', '.join(parent.model_fields)})")
        return f"{key}: unknown key{hint}"
    return f"{key}: {err['msg']} (got {err.get('input')!r})"


# The data.source values that read each source-specific key of `data` (docs/configuration.md shows
# this table). A key given a value for a source that does not read it is
# - an error when it selects data (DATA_KEYS) and the source reads other images (sample, cifar10):
#   `data.root=/my/images` without `data.source=imagefolder` would train on the shipped sample
#   without a word, and hours of training on the wrong data is what a missed warning costs;
# - a warning in the run's log otherwise: ignoring it changes nothing that trains (`download` only
#   fetches a missing archive, `check_images` finds bad files where files are decoded,
#   `synthetic_images` sizes synthetic epochs), and data.source=synthetic replaces the data on
#   purpose (a throughput ceiling with a real config, whose data.root then stays unused).
SOURCE_KEYS: dict[str, tuple[str, ...]] = {
    "root": ("imagefolder", "cifar10", "webdataset"),
    "train_split": ("imagefolder", "webdataset"),
    "eval_split": ("imagefolder", "webdataset"),
    "eval_labels": ("imagefolder",),  # a flat validation folder
    "eval_label_map": ("imagefolder",),
    "shuffle_buffer": ("webdataset",),
    "download": ("cifar10",),
    "verify_checksums": ("cifar10",),
    "check_images": ("sample", "imagefolder", "webdataset"),  # cifar10 arrives decoded: nothing to scan
    "max_pixels": ("sample", "imagefolder", "webdataset"),
    "max_member_mb": ("sample", "imagefolder", "webdataset"),
    "cache": ("sample", "imagefolder"),  # cifar10 arrives decoded; shards are read in stream order
    "cache_max_gb": ("sample", "imagefolder"),
    "synthetic_images": ("synthetic",),
}
DATA_KEYS = ("root", "train_split", "eval_split", "eval_labels", "eval_label_map")
SOURCE_NAMES = {"sample": "the CIFAR-10 sample shipped in data/", "cifar10": "the official python archive",
                "imagefolder": "a class-per-folder tree", "webdataset": "tar shards",
                "synthetic": "random images"}


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


def _number(value: float) -> str:
    """A float as a person would type it in an override: 0.75, 7.5, 150."""
    return f"{round(value, 3):g}"


def _scaled_milestones(milestones: list[float], epochs: int) -> str:
    """The milestones moved so that the last sits at 3/4 of the run, as the reference's 225 of 300 does."""
    factor = 0.75 * epochs / milestones[-1]
    return "[" + ",".join(_number(m * factor) for m in milestones) + "]"


# What data.root is for each source that needs one (the error when it is missing says so).
ROOT_HINTS = {
    "imagefolder": "the folder that holds the train/ and val/ class folders (e.g. data.root=/data/my-images)",
    "cifar10": "the folder for cifar-10-python.tar.gz (e.g. data.root=data/cifar10 data.download=true)",
    "webdataset": "the folder of .tar shards, a glob or a list file (e.g. data.root=/data/shards; write them with "
                  "python -m pipeline.data.shards)",
}

def _check_consistency(cfg: Config) -> None:
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


def _leaf_fields(section: type[BaseModel], prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, field info) of every leaf key of `section`, nested sections flattened, in schema order."""
    leaves = []
    for name, info in section.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            leaves += _leaf_fields(ann, f"{prefix}{name}.")
        else:
            leaves.append((prefix + name, info))
    return leaves


def _check_accepted_keys(keys: list[str]) -> None:
    """checkpoint.accept_changes names config keys (or `all`): a typo would accept nothing."""
    known = [key for key, _ in _leaf_fields(Config)]
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


# What yaml.safe_load raises on bad input: its own errors, and its constructors' on a scalar that matches a
# type's pattern but is no such value (a date 2026-13-45, `!!int abc`, `!!bool maybe`), or on deep nesting.
YAML_ERRORS = (yaml.YAMLError, ValueError, KeyError, AttributeError, RecursionError)


def yaml_reason(exc: BaseException) -> str:
    """A YAML error in one line: PyYAML's (with its position) or the constructor's complaint."""
    reason = " ".join(str(exc).split())
    return reason if isinstance(exc, yaml.YAMLError) else f"{type(exc).__name__}: {reason}"


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """`["optim.lr=0.2", "schedule.milestones=[10,20]"]` -> nested dict; values parsed as YAML scalars."""
    tree: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected key.sub=value (e.g. train.epochs=5)")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except YAML_ERRORS as exc:
            raise ConfigError(f"{key}: cannot parse value {raw!r} as YAML ({yaml_reason(exc)}; quote "
                              "the value, or write lists as [a,b])") from None
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
            shipped = ", ".join(str(p.relative_to(REPO_ROOT)) for p in sorted((REPO_ROOT / "configs").glob("*.yaml"))
                                if p.name != "sweep.yaml")
            raise ConfigError(f"config file {path}: not found (the shipped ones: {shipped})")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {path}: cannot read it as UTF-8 text ({exc})") from None
        try:
            loaded = yaml.safe_load(text)
        except YAML_ERRORS as exc:
            raise ConfigError(f"config file {path}: invalid YAML: {yaml_reason(exc)}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {path}: expected a mapping of sections at the top level")
        values = loaded or {}
    cli = parse_overrides(overrides or [])
    values = _merge(_drop_unread_data_keys(values, cli, path), cli)
    if not values.get("name"):
        values["name"] = path.stem if path is not None else "default"
    return from_dict(values)


def _drop_unread_data_keys(values: dict[str, Any], cli: dict[str, Any], path: Path | None) -> dict[str, Any]:
    """A data.source given on the command line over a YAML that selects other data is a choice, not the
    trap of a forgotten data.source (`configs/x.yaml data.source=sample` where x.yaml sets data.root):
    the YAML's data keys that source does not read are left out, with a warning, so the run's
    config.yaml says what was read."""
    cli_data, yaml_data = cli.get("data"), values.get("data")
    if not (isinstance(cli_data, dict) and isinstance(yaml_data, dict) and isinstance(cli_data.get("source"), str)):
        return values
    source = cli_data["source"]
    unread = [k for k in DATA_KEYS if k in yaml_data and k not in cli_data and source not in SOURCE_KEYS[k]]
    for key in unread:
        logging.getLogger(__name__).warning("data.%s: %r from %s is not read by data.source=%s: left out", key,
                                            yaml_data[key], path, source)
    return {**values, "data": {k: v for k, v in yaml_data.items() if k not in unread}}


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
    atomic_write_text(path, cfg.to_yaml())


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


def _reference_row(key: str, info: Any) -> str:
    default = info.get_default(call_default_factory=True)
    kind = _type_name(info.annotation)
    bounds = _bounds(info)
    if bounds:
        kind += f" ({bounds})"
    shown = yaml.safe_dump(default, default_flow_style=True).strip().removesuffix("...").strip()
    cells = [f"`{key}`", kind, f"`{shown}`", info.description or ""]
    return "| " + " | ".join(c.replace("|", "\\|") if i else c for i, c in enumerate(cells)) + " |"


def _reference_rows(model: type[BaseModel], prefix: str) -> list[str]:
    """One table row per leaf key of `model`, nested sections flattened to dotted keys."""
    return [_reference_row(key, info) for key, info in _leaf_fields(model, prefix)]


TABLE_HEADER = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]


def markdown_reference() -> str:
    """The configuration reference as one Markdown table, generated from the schema."""
    return "\n".join(TABLE_HEADER + _reference_rows(Config, "")) + "\n"


DOCS_PAGE = REPO_ROOT / "docs" / "configuration.md"

_PAGE_INTRO = """\
# Configuration reference

<!-- Generated from the schema in pipeline/config.py by `python -m pipeline.config --docs`; edit the
schema, not this page (tests/test_docs.py fails when the two differ). -->

Every entry point takes the same arguments: an optional YAML file, then `key.sub=value` overrides.

```bash
./launch.sh configs/quickstart.yaml train.epochs=5 optim.lr=0.2
python train_dist.py configs/quickstart.yaml data.source=imagefolder data.root=/data/my-images model.num_classes=auto
python -m pipeline.config configs/quickstart.yaml train.epochs=5      # print the validated config, run nothing
```

- **Precedence:** the defaults below, then the YAML file, then the overrides; the result is validated
  as one. The defaults are the reference recipe's settings (`configs/squeezenet_cifar10.yaml`) on the
  shipped sample.
- **Values are YAML:** `train.epochs=5`, `optim.lr=1e-2`, `train.compile=true`,
  `schedule.milestones=[10,20]`, `wandb.tags=[a,b]`; an empty value is an empty string (`data.root=`).
- **Mistakes stop the run before it starts**, with one line naming the key and a value to try, and exit
  status 2: an unknown key (`optim.lrr: unknown key (did you mean 'lr'?)`), a wrong type, a value out
  of range, `inf` or `nan` for any number (`optim.lr: Input should be a finite number (got 'inf')`), or
  keys that contradict each other (`schedule.milestones` past `train.epochs`).
- **`auto`** values are decided at start-up on the machine that trains (`train.precision: auto` is
  bf16 on CUDA, fp32 on CPU; `model.num_classes: auto` counts the class folders of the training
  data). `python train_dist.py CONFIG [key=value ...] --resolve` shows what they become on this machine
  without training. Every run saves its config, with `model.num_classes` resolved, as
  `runs/<run-name>/config.yaml`, and the other resolved values in `runs/<run-name>/resolved.json`.

## Keys that belong to one data source

Given for a `data.source` that does not read it, `data.root`, `data.train_split` or
`data.eval_split` stops the run before it starts when the source reads other images (`sample`,
`cifar10`): `data.root=/my/images` without `data.source=imagefolder` would otherwise train on the
shipped sample. Any other key of this table that the source does not read (or any of them with
`data.source=synthetic`, which replaces the data on purpose) is named in a warning in the run's
log: ignoring it changes nothing that trains.

"""


def configuration_page() -> str:
    """docs/configuration.md: how configuration works, which data keys each source reads, every key by section."""
    lines = [_PAGE_INTRO.rstrip("\n"), "", "| key | read by data.source |", "| --- | --- |"]
    lines += [f"| `data.{key}` | {', '.join(readers)} |" for key, readers in SOURCE_KEYS.items()]
    top = [_reference_row(name, info) for name, info in Config.model_fields.items()
           if not (isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel))]
    lines += ["", "## Top level", "", *TABLE_HEADER, *top]
    for name, info in Config.model_fields.items():
        section = info.annotation
        if isinstance(section, type) and issubclass(section, BaseModel):
            lines += ["", f"## `{name}`: {section.__doc__.strip().splitlines()[0]}", "", *TABLE_HEADER,
                      *_reference_rows(section, f"{name}.")]
    return "\n".join(lines) + "\n"


def auto_keys(cfg: Config) -> dict[str, str]:
    """{dotted key: its description} for every value of `cfg` that is still `auto`."""
    found: dict[str, str] = {}

    def walk(section: BaseModel, prefix: str) -> None:
        for name, info in type(section).model_fields.items():
            value = getattr(section, name)
            if isinstance(value, BaseModel):
                walk(value, f"{prefix}{name}.")
            elif value == "auto":
                found[f"{prefix}{name}"] = info.description or ""
    walk(cfg, "")
    ignored = {f"data.{key}" for key, readers in SOURCE_KEYS.items() if cfg.data.source not in readers}
    return {key: doc for key, doc in found.items() if key not in ignored}


def validated_yaml(cfg: Config, resolved: bool = False) -> str:
    """The config as YAML, headed by comments that say what it is and which values are still `auto`."""
    head = ["# The validated config: defaults <- YAML file <- key=value overrides. Nothing ran."]
    autos = auto_keys(cfg)
    if autos:
        head.append("# `auto` values " + ("left, decided by each run:" if resolved
                                          else "are decided at start-up on the machine that trains:"))
        head += [f"#   {key}: {doc}" for key, doc in autos.items()]
        if not resolved:
            head.append("# To see what they become here (it lists the data): python train_dist.py ... --resolve")
    return "\n".join(head) + "\n" + cfg.to_yaml()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.config", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Print the config that CONFIG.yaml and key=value overrides describe, validated by the schema "
                    "(nothing runs). Values left at `auto` are decided at start-up, on the machine that trains; "
                    "`python train_dist.py CONFIG [key=value ...] --resolve` shows what they become here.",
        epilog="examples:\n"
               "  python -m pipeline.config configs/quickstart.yaml train.epochs=5\n"
               "  python -m pipeline.config --markdown        # the reference table alone\n"
               "  python -m pipeline.config --docs            # rewrite docs/configuration.md from the schema\n"
               "exit status: 0 valid, 2 a bad key or value (one line naming it)")
    parser.add_argument("args", nargs="*", metavar="[CONFIG.yaml] [key=value ...]",
                        help="an optional YAML file, then overrides such as optim.lr=0.2")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--markdown", action="store_true", help="print the reference of every key as a Markdown table")
    what.add_argument("--docs", nargs="?", const=str(DOCS_PAGE), metavar="PATH",
                      help=f"write the configuration reference page to PATH "
                           f"(default {DOCS_PAGE.relative_to(REPO_ROOT)})")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.markdown:
        sys.stdout.write(markdown_reference())
        return 0
    if args.docs:
        Path(args.docs).write_text(configuration_page())
        print(f"wrote {args.docs}", file=sys.stderr)
        return 0
    cfg = config_from_cli(args.args)
    if cfg is None:
        return 2
    sys.stdout.write(validated_yaml(cfg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
