"""The schema: one pydantic section per part of the job, and `Config`, the whole job.

Each field carries its default, its meaning (with unit), optional bounds and what a new value does
when a run continues (`on_resume`, below), through `_f`; nested sections are flattened to dotted
keys (`data.train.crop`) everywhere else: overrides, errors, the reference page, the resume rules.
Checks that involve several fields live in checks.py.
"""

from __future__ import annotations

import types
import typing
from enum import Enum
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipeline.constants import AUTO_AUGMENT_POLICIES, AUTO_AUGMENTS, INTERPOLATIONS, MAX_IMAGE_PIXELS, MAX_MEMBER_MB
from pipeline.errors import ConfigError
from pipeline.sources import SOURCES, readers


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


class OnResume(str, Enum):
    """What a key's new value does when a run continues (pipeline/runs/changes.py; resume.py derives the lists).

    A field declares it with `_f(..., on_resume=OnResume.FREE)`; a section of `Config` declares it for
    all its keys (`_section(..., on_resume=...)`), where a key may narrow FREE to NAMING. A key that
    declares nothing is EXPERIMENT, new keys included: a key changes freely only when someone decided so.
    """

    EXPERIMENT = "experiment"  # changes what is trained: refused unless checkpoint.accept_changes names it
    FREE = "free"  # changes nothing trained (where logs go, cadences, how fast the loader runs): passes, recorded
    NAMING = "naming"  # names the run rather than saying what it trains (free; compare and continuation skip it)
    MUST_MATCH = "must_match"  # parameter shapes or what a step means: refused whatever accept_changes says
    NOT_COMPARED = "not_compared"  # the acceptance itself


def _f(default: Any, doc: str, on_resume: OnResume | None = None, **constraints: Any) -> Any:
    """A field with its default, a one-line meaning (with unit), what a new value does when a run continues
    (None: its section's class, else EXPERIMENT) and optional bounds (gt=0, ...)."""
    extra = {"on_resume": on_resume.value} if on_resume is not None else None
    if isinstance(default, (list, dict)):
        return Field(default_factory=lambda d=default: type(d)(d), description=doc, json_schema_extra=extra,
                     **constraints)
    return Field(default, description=doc, json_schema_extra=extra, **constraints)


def _section(section: type[BaseModel], doc: str, on_resume: OnResume | None = None) -> Any:
    """A nested section at its defaults; `on_resume` declares it for all its keys (None: each key declares its own)."""
    extra = {"on_resume": on_resume.value} if on_resume is not None else None
    return Field(default_factory=section, description=doc, json_schema_extra=extra)


# --------------------------------------------------------------------------------------- model


# The networks of the model registry (models/__init__.py; tests/unit/test_models.py checks that the two agree):
# the schema is where docs/configuration.md, docs/training.md and `bench model --help` read them from.
ModelName = Literal["squeezenet_bypass", "squeezenet1_0", "squeezenet1_1", "squeezenet1_0_bypass", "resnet50"]
MODEL_NAMES: tuple[str, ...] = typing.get_args(ModelName)


class ModelConfig(Section):
    """The network (a registry name from `models`)."""

    name: ModelName = _f("squeezenet_bypass", "the network (docs/training.md#models)")
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
    # The levers (pipeline/data/augment/levers.py): in the DALI graph, training only, drawn from train.seed; off by default.
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

    source: Literal[tuple(SOURCES)] = _f(  # type: ignore[valid-type]
        "sample", "; ".join(f"{s.name}: {s.description}" for s in SOURCES.values()), on_resume=OnResume.MUST_MATCH)
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
                                "an unpickler that cannot run code", on_resume=OnResume.FREE)
    # Free on resume: how the loader runs, not what it yields (decoding once gives the same batches, tests/unit/test_loader.py).
    device: Literal["auto", "gpu", "cpu"] = _f("auto", "where DALI augments: auto = gpu when CUDA is available",
                                               on_resume=OnResume.FREE)
    num_threads: int = _f(2, "DALI CPU worker threads per pipeline (ranks x threads <= cores per node)", gt=0,
                          on_resume=OnResume.FREE)
    prefetch_queue_depth: int = _f(2, "batches DALI prepares ahead of the training step", gt=0,
                                   on_resume=OnResume.FREE)
    hw_decoder_load: float = _f(
        0.65, "GPU JPEG decoding: share of each batch sent to the hardware decoder (A100/H100/H200), the rest "
        "to the CUDA decoder", ge=0.0, le=1.0, on_resume=OnResume.FREE)
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
                                     "buffers up front (px); 0 = DALI's default", ge=0, on_resume=OnResume.FREE)
    preallocate_height_hint: int = _f(0, "GPU decoding: tallest image expected (px); 0 = DALI's default", ge=0,
                                      on_resume=OnResume.FREE)
    device_memory_padding: int = _f(16 << 20, "GPU decoding: extra bytes per device buffer, so larger images "
                                    "do not reallocate (bytes)", ge=0, on_resume=OnResume.FREE)
    host_memory_padding: int = _f(8 << 20, "GPU decoding: extra bytes per pinned host buffer (bytes)", ge=0,
                                  on_resume=OnResume.FREE)
    cache: Literal["auto", "off"] = _f(
        "auto", "decode once: auto = when every image has the same size and both splits fit cache_max_gb "
        "decoded, decode them at start-up (DALI) and train from the arrays (GPU: resident on the GPU); off = "
        "decode every batch. The log says which path was taken", on_resume=OnResume.FREE)
    cache_max_gb: float = _f(4.0, "data.cache=auto: most decoded bytes per process, both splits together (GiB)",
                             gt=0.0, on_resume=OnResume.FREE)
    check_images: Literal["off", "error", "skip"] = _f(
        "off",
        "up-front decode of every file: off = no scan (a bad file still fails with its path named); "
        "error = scan and fail listing bad files; skip = scan and leave bad files out, with a count",
    )
    max_pixels: int = _f(MAX_IMAGE_PIXELS, "largest image accepted, width x height read from its header before "
                         "anything decodes it, under every check_images policy (pixels; Pillow's limit: 9,459 x "
                         "9,459, 268 MB decoded); 0 = no limit", ge=0)
    max_member_mb: float = _f(MAX_MEMBER_MB, "largest file read from an archive (imagefolder .tar/.tar.gz, the "
                              "sample) or a tar shard, checked from its header before it is read (MiB)", gt=0.0,
                              on_resume=OnResume.FREE)  # it refuses a run, never leaves an image out
    synthetic_images: int = _f(50_000, "synthetic: training images per epoch (random, already at crop size)", gt=0)
    train: TrainAugmentConfig = _section(TrainAugmentConfig, "training augmentation")
    eval: EvalAugmentConfig = _section(EvalAugmentConfig, "evaluation preprocessing")


# --------------------------------------------------------------------------------- optimisation


class OptimConfig(Section):
    """SGD with momentum; the learning rate scales with batch size if lr_scaling = linear."""

    lr: float = _f(0.1, "peak learning rate at reference_batch_size (per step)", gt=0.0)
    momentum: float = _f(0.9, "momentum coefficient (classical unless nesterov)", ge=0.0, lt=1.0)
    nesterov: bool = _f(False, "use Nesterov momentum")
    weight_decay: float = _f(1e-4, "L2 penalty added to the gradient", ge=0.0)
    decay_norm_and_bias: bool = _f(True, "also decay BatchNorm weights and biases (the reference does)",
                                   on_resume=OnResume.MUST_MATCH)
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
    global_batch_size: int = _f(64, "images per optimizer step over all processes", gt=0,
                                on_resume=OnResume.MUST_MATCH)
    precision: Literal["auto", "bf16", "fp16", "fp32"] = _f(
        "auto", "autocast dtype: auto = bf16 on CUDA, fp32 on CPU; fp16 adds a GradScaler"
    )
    compile: CompileMode = _f(
        "off", "torch.compile mode: off | default | reduce-overhead (CUDA graphs: removes kernel-launch overhead "
        "at small batches) | max-autotune | max-autotune-no-cudagraphs; true/false mean default/off",
        on_resume=OnResume.FREE)
    seed: int = _f(0, "base seed: data order, weights, augmentation (rank r uses seed + r)", ge=0)
    deterministic: bool = _f(False, "deterministic algorithms (slower; for bit-exact resume checks)",
                             on_resume=OnResume.FREE)
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
                                     "and ImageNet recipes set their published levels)", on_resume=OnResume.FREE)
    target_accuracy: float = _f(0.0, "stop (exit 0) after the first evaluation whose headline top-1 reaches this "
                                "fraction; 0 = off", ge=0.0, le=1.0, on_resume=OnResume.FREE)
    max_steps_per_epoch: int = _f(0, "cap on steps per epoch, for smoke tests; 0 = full epochs", ge=0)
    max_steps: int = _f(0, "stop after this many optimizer steps in all (the last epoch may end early); the "
                           "schedule runs over them; 0 = train.epochs whole epochs", ge=0)
    time_budget: str = _f("off", "fit the run to this wall-clock time from process start (e.g. 300s, 5m, 2h): it "
                                 "measures its steps, then plans train.epochs/max_steps and scales the schedule, "
                                 "and re-plans from the pace it measures (docs/training.md); off = train.epochs "
                                 "as given")
    nonfinite_limit: int = _f(10, "stop after this many consecutive steps with a non-finite loss", gt=0,
                              on_resume=OnResume.FREE)
    init_from: str = _f("", "fine-tuning: start from the weights of this run directory (its best.pt, else last.pt) "
                        "or checkpoint file; optimizer, schedule and epochs start fresh; empty = random weights")
    init_weights: Literal["ema", "raw"] = _f("ema", "init_from: its EMA weights (its raw ones when it has no EMA), "
                                             "or its raw weights")
    freeze: Literal["none", "features"] = _f("none", "features: train the classifier only (the backbone's weights "
                                             "frozen, its BatchNorm statistics too); none = train everything")
    debug_nan_step: int = _f(-1, "testing aid: make the loss NaN from this global step on; -1 = off", ge=-1)
    debug_budget_clock: list[float] = _f([], "testing aid: train.time_budget reads a simulated clock, [seconds a "
                                         "training step, an evaluation, a checkpoint, the global step after which "
                                         "all three take twice as long (0 = never)]; [] = the wall clock")

    @field_validator("compile", mode="before")
    @classmethod
    def _compile_bool(cls, value: Any) -> Any:
        """Configs written when compile was a switch keep working: true = default mode, false = off."""
        return {True: "default", False: "off"}.get(value, value) if isinstance(value, bool) else value


class EvalConfig(Section):
    """Evaluation on the validation split."""

    every: int = _f(1, "evaluate every N epochs (the last epoch always); 0 = only at the end", ge=0,
                    on_resume=OnResume.FREE)
    batch_size: int = _f(256, "images per evaluation step per process", gt=0, on_resume=OnResume.FREE)
    weights: Literal["ema", "raw", "both"] = _f(
        "ema", "ema: the EMA weights when train.ema_decay > 0, else the raw ones; raw; both: EMA (the headline: "
        "val/*, best, final, time to accuracy) and raw, also logged as val_ema/* and val_raw/*. "
        "The former eval.use_ema=true/false still means ema/raw"
    )
    only: bool = _f(False, "evaluate the checkpoint named by checkpoint.resume (auto: the latest of logging.run_name's "
                           "run) into <run>/eval/<checkpoint>-<split>-<time>/eval.json, then exit; trains nothing "
                           "and changes none of the run's records", on_resume=OnResume.FREE)
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

    runs_dir: str = _f("runs", "parent directory of run directories", on_resume=OnResume.NAMING)
    run_name: str = _f("", "run directory name under runs_dir; empty = <name>-<timestamp>",
                       on_resume=OnResume.NAMING)
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
    name: str = _f("", "W&B run name; empty = the run directory name", on_resume=OnResume.NAMING)


class CheckpointConfig(Section):
    """Checkpoints in the run directory: written atomically, loaded with weights_only=True."""

    resume: str = _f("auto", "auto = continue from the run's newest checkpoint that loads; never = start the run over "
                     "(its earlier files move into superseded-<time>/ in its directory); or a file path",
                     on_resume=OnResume.FREE)
    on_unreadable: Literal["refuse", "restart"] = _f(
        "refuse", "resume=auto in a run directory whose checkpoints all fail to load (emptied, corrupt, another "
        "checkpoint format): refuse = stop (exit 2) naming each file, changing nothing; restart = move the run's "
        "files into superseded-<time>/ in its directory and train from the start", on_resume=OnResume.FREE)
    every_epochs: int = _f(1, "write 'last' every N epochs", gt=0, on_resume=OnResume.FREE)
    every_steps: int = _f(0, "also write a mid-epoch checkpoint every N steps; 0 = off", ge=0, on_resume=OnResume.FREE)
    keep_last: int = _f(2, "step checkpoints kept (older ones deleted)", gt=0, on_resume=OnResume.FREE)
    save_best: bool = _f(True, "keep a copy of the best-top-1 checkpoint as 'best'", on_resume=OnResume.FREE)
    accept_changes: list[str] = _f([], "continuing a run with other values of keys that change the experiment "
                                   "(optim, schedule, data, train.epochs, ...): the keys whose new values to accept, "
                                   "or [all]; each change is recorded in config-changes.jsonl (docs/fault-tolerance.md)",
                                   on_resume=OnResume.NOT_COMPARED)


# ------------------------------------------------------------------------------------------ root


class Config(Section):
    """The whole job."""

    name: str = _f("", "experiment name; empty = the YAML file's stem. Names run directories and the W&B group",
                   on_resume=OnResume.FREE)
    model: ModelConfig = _section(ModelConfig, "network", on_resume=OnResume.MUST_MATCH)  # parameter shapes
    data: DataConfig = _section(DataConfig, "input pipeline")
    optim: OptimConfig = _section(OptimConfig, "optimizer")
    schedule: ScheduleConfig = _section(ScheduleConfig, "learning-rate schedule")
    train: TrainConfig = _section(TrainConfig, "training loop")
    eval: EvalConfig = _section(EvalConfig, "evaluation")
    dist: DistConfig = _section(DistConfig, "distributed training", on_resume=OnResume.FREE)
    logging: LoggingConfig = _section(LoggingConfig, "run directory and logs", on_resume=OnResume.FREE)
    wandb: WandbConfig = _section(WandbConfig, "Weights & Biases", on_resume=OnResume.FREE)
    checkpoint: CheckpointConfig = _section(CheckpointConfig, "checkpoints")

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




def leaf_fields(section: type[BaseModel], prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, field info) of every leaf key of `section`, nested sections flattened, in schema order."""
    leaves = []
    for name, info in section.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            leaves += leaf_fields(ann, f"{prefix}{name}.")
        else:
            leaves.append((prefix + name, info))
    return leaves


# The data.source values that read each source-specific key of `data` (pipeline/sources.py's rows), in schema
# order; docs/configuration.md shows this table. A key given a value for a source that does not read it is
# - an error when it selects data (DATA_KEYS) and the source reads other images (sample, cifar10):
#   `data.root=/my/images` without `data.source=imagefolder` would train on the shipped sample
#   without a word, and hours of training on the wrong data is what a missed warning costs;
# - a warning in the run's log otherwise: ignoring it changes nothing that trains (`download` only
#   fetches a missing archive, `check_images` finds bad files where files are decoded,
#   `synthetic_images` sizes synthetic epochs), and data.source=synthetic replaces the data on
#   purpose (a throughput ceiling with a real config, whose data.root then stays unused).
SOURCE_KEYS: dict[str, tuple[str, ...]] = {key: readers(key) for key in DataConfig.model_fields if readers(key)}
SOURCE_NAMES = {name: source.description for name, source in SOURCES.items()}
# What data.root is for each source that needs one (the error when it is missing says so).
ROOT_HINTS = {name: source.root_hint for name, source in SOURCES.items() if source.root_hint}
