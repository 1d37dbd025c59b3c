"""The typed configuration: defaults, YAML + overrides, rejected values, YAML round trip.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from pipeline.config import Config, ConfigError, from_dict, load_config
from pipeline.config import main as config_main
from pipeline.constants import REPO_ROOT as ROOT  # noqa: E402
from pipeline.training.optim import scaled_lr


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


def float_keys(section=Config, prefix=""):
    """(dotted key, is a list) of every float-valued key of the schema, nested sections included."""
    found = []
    for name, info in section.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            found += float_keys(ann, f"{prefix}{name}.")
        elif ann is float or ann == list[float]:
            found.append((prefix + name, ann != float))
    return found


# configs/sweep.yaml is a W&B sweep specification, not a run config (tests/unit/test_compare.py checks it).
RUN_CONFIGS = sorted(p for p in (ROOT / "configs").glob("*.yaml") if p.name != "sweep.yaml")


def suggested_override(message: str, key: str) -> str:
    """The `key=value` an error message suggests (the first one that names `key`)."""
    return re.search(rf"\b{re.escape(key)}=(\[[^\]]*\]|[^\s),;]+)", message).group(0)


# Every key whose new value in a continued run is not an experiment change, by class, as the code that acts on
# them had them listed before the schema declared them (runs/changes.py FREE_KEYS, NAMING_KEYS, IGNORED_KEYS;
# training/checkpoint.py MUST_MATCH), but for data.max_member_mb, now free (below). Every other key is
# "experiment". A class changes here, on purpose, or not at all.
RESUME_CLASSES = {
    "free": {
        "name", "checkpoint.every_epochs", "checkpoint.every_steps", "checkpoint.keep_last", "checkpoint.save_best",
        "checkpoint.resume", "checkpoint.on_unreadable", "eval.every", "eval.batch_size", "eval.only",
        "data.num_threads", "data.prefetch_queue_depth", "data.hw_decoder_load", "data.preallocate_width_hint",
        "data.preallocate_height_hint", "data.device_memory_padding", "data.host_memory_padding", "data.cache",
        "data.cache_max_gb", "data.device", "data.verify_checksums", "data.max_member_mb", "train.compile",
        "train.deterministic",
        "train.tta_thresholds", "train.target_accuracy", "train.nonfinite_limit",
        "logging.log_every", "logging.perf_warmup_steps", "logging.progress", "dist.backend", "dist.sync_bn",
        "dist.timeout_s", "wandb.mode", "wandb.project", "wandb.entity", "wandb.group", "wandb.tags",
    },
    "naming": {"logging.run_name", "logging.runs_dir", "wandb.name"},
    "not_compared": {"checkpoint.accept_changes"},
    "must_match": {"model.name", "model.num_classes", "model.dropout", "data.source", "optim.decay_norm_and_bias",
                   "train.global_batch_size"},
}


def class_in_use(key: str) -> str:
    """What the code that acts on a key does with a new value of it in a continued run: not compared, a change
    that must not happen (the checkpoint's check), a change of a key that names the run (compare leaves those
    out), or a change classified free or experiment."""
    from pipeline.runs.changes import config_changes, unflatten
    from pipeline.tools.compare import IGNORED_KEYS as LEFT_OUT_BY_COMPARE
    from pipeline.training.checkpoint import config_differences

    saved, current = unflatten({key: "before"}), unflatten({key: "after"})
    changes = config_changes(saved, current)
    if not changes:
        return "not_compared"
    (change,) = changes
    if config_differences(saved, current):
        assert change.kind == "experiment", key
        return "must_match"
    if key in LEFT_OUT_BY_COMPARE:
        assert change.kind == "free", key
        return "naming"
    return change.kind


def test_defaults_are_the_reference_recipe():
    cfg = load_config()
    assert cfg.model.name == "squeezenet_bypass"
    assert (cfg.optim.lr, cfg.optim.momentum, cfg.optim.nesterov, cfg.optim.weight_decay) == (0.1, 0.9, False, 1e-4)
    assert cfg.schedule.milestones == [150, 225] and cfg.train.epochs == 300
    assert cfg.train.global_batch_size == 64
    assert (cfg.data.train.min_side, cfg.data.train.max_side, cfg.data.train.crop) == (124, 132, 122)
    assert (cfg.data.eval.size, cfg.data.eval.crop) == (128, 128)


def test_yaml_then_overrides_with_precedence_and_types(tmp_path):
    path = write(tmp_path, "optim:\n  lr: 0.05\n  momentum: 0.8\ntrain:\n  epochs: 20\nschedule:\n  milestones: [5, 10]\n")
    cfg = load_config(path, ["optim.lr=0.2", "train.compile=true", "schedule.milestones=[3, 7.5]", "wandb.tags=[a,b]"])
    assert cfg.optim.lr == 0.2 and isinstance(cfg.optim.lr, float)  # override beats YAML
    assert cfg.optim.momentum == 0.8  # YAML beats default
    assert cfg.train.epochs == 20 and isinstance(cfg.train.epochs, int)
    assert cfg.train.compile == "default"  # true: the switch configs used before compile modes
    assert cfg.schedule.milestones == [3.0, 7.5]
    assert cfg.wandb.tags == ["a", "b"]
    assert cfg.name == "exp"  # the file stem


def test_string_override_is_converted_to_the_field_type():
    assert load_config(None, ["eval.every=7"]).eval.every == 7
    assert load_config(None, ["optim.lr=1e-2"]).optim.lr == 0.01


@pytest.mark.parametrize(
    "override, key, words",
    [
        (["optim.lrr=0.1"], "optim.lrr", "unknown key (did you mean 'lr'?)"),
        (["bogus.x=1"], "bogus", "unknown key"),
        (["train.epochs=abc"], "train.epochs", "valid integer"),
        (["train.compile=maybe"], "train.compile", "'reduce-overhead'"),
        (["optim.lr=-0.1"], "optim.lr", "greater than 0"),
        (["train.global_batch_size=0"], "train.global_batch_size", "greater than 0"),
        (["data.device=tpu"], "data.device", "'auto', 'gpu' or 'cpu'"),
        (["data.train.crop=130"], "data.train.crop", "does not fit"),
        (["data.train.min_side=140"], "data.train.max_side", "smaller than"),
        (["data.eval.crop=200"], "data.eval.crop", "larger than"),
        (["schedule.milestones=[150, 400]"], "schedule.milestones", "not before the last epoch"),
        (["schedule.milestones=[20, 10]"], "schedule.milestones", "increasing"),
        (["schedule.warmup_epochs=300"], "schedule.warmup_epochs", "not shorter"),
        (["data.source=imagefolder"], "data.root", "required"),
        (["logging.run_name=../escape"], "logging.run_name", "plain directory name"),
        (["model.num_classes=1"], "model.num_classes", "greater than 1 or Input should be 'auto'"),
        (["model.num_classes=many"], "model.num_classes", "should be 'auto'"),
        (["model.num_classes=auto", "data.source=synthetic"], "model.num_classes", "give a number"),
        # the augmentation levers
        (["data.train.auto_augment=autoaugment"], "data.train.auto_augment", "'trivial_augment'"),
        (["data.train.rand_augment_m=11"], "data.train.rand_augment_m", "less than or equal to 10"),
        (["data.train.auto_augment_policy=cifar10"], "data.train.auto_augment_policy", "'reduced_cifar10'"),
        (["data.train.erase_prob=1.5"], "data.train.erase_prob", "less than or equal to 1"),
        (["data.train.erase_area=[0.4,0.1]"], "data.train.erase_area", "0 < min <= max <= 1.0"),
        (["data.train.erase_aspect=[0,3]"], "data.train.erase_aspect", "0 < min <= max"),
        (["data.train.erase_value=[0,0,300]"], "data.train.erase_value", "0-255"),
        (["data.train.progressive_start_crop=122"], "data.train.progressive_start_crop", "smaller than"),
        (["data.train.progressive_start_crop=96", "data.train.progressive_ramp=[0.8,1.0]"],
         "data.train.progressive_ramp", "0 <= start <= end < 1"),
        (["train.mixup_alpha=-0.2"], "train.mixup_alpha", "greater than or equal to 0"),
        (["train.mix_switch_prob=2"], "train.mix_switch_prob", "less than or equal to 1"),
        (["eval.tta=hflip"], "eval.tta", "'none' or 'flip'"),
    ],
)
def test_bad_values_name_the_key(override, key, words):
    with pytest.raises(ConfigError) as info:
        load_config(None, override)
    message = str(info.value)
    assert message.startswith(key + ":") or f"; {key}:" in message, message
    assert words in message
    assert "\n" not in message  # one line


def test_every_float_key_refuses_inf_and_nan_naming_the_key():
    keys = float_keys()
    assert len(keys) >= 30 and ("optim.lr", False) in keys and ("schedule.milestones", True) in keys
    for key, is_list in keys:
        default = getattr(load_config(), key.split(".")[0])
        for part in key.split(".")[1:]:
            default = getattr(default, part)
        for bad in ("inf", "-inf", "nan", ".inf"):
            value = f"[{', '.join([bad] + [str(v) for v in default[1:]])}]" if is_list else bad
            if is_list and not default:
                value = f"[{bad}]"
            with pytest.raises(ConfigError) as info:
                load_config(None, [f"{key}={value}"])
            message = str(info.value)
            assert message.startswith(f"{key}") and "finite number" in message, (key, value, message)


def test_num_classes_is_a_number_or_auto():
    assert load_config(None, ["model.num_classes=auto"]).model.num_classes == "auto"
    assert load_config(None, ["model.num_classes=7"]).model.num_classes == 7
    assert load_config(None).model.num_classes == 10  # the default stays a number: the benchmarks read it


def test_bad_yaml_key_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"^data\.train\.flip_probability: unknown key \(did you mean 'flip_prob'\?\)"):
        load_config(write(tmp_path, "data:\n  train:\n    flip_probability: 0.3\n"))


def test_global_batch_must_divide_among_processes():
    cfg = load_config(None, ["train.global_batch_size=64"])
    cfg.check_world_size(4)
    with pytest.raises(ConfigError, match=r"^train\.global_batch_size: 64 is not divisible by the 3 processes of "
                                          r"this run \(e\.g\. train\.global_batch_size=63 or "
                                          r"train\.global_batch_size=66\)"):
        cfg.check_world_size(3)


def test_malformed_override_and_file():
    with pytest.raises(ConfigError, match="expected key.sub=value"):
        load_config(None, ["optim.lr"])
    with pytest.raises(ConfigError, match="not found"):
        load_config("/nonexistent/x.yaml")


def test_written_yaml_loads_back_equal(tmp_path):
    cfg = load_config(None, ["optim.lr=0.3", "wandb.tags=[x]", "schedule.milestones=[1.5, 2]", "train.epochs=3"])
    path = tmp_path / "resolved.yaml"
    path.write_text(cfg.to_yaml())
    again = load_config(path)
    assert again == cfg
    assert yaml.safe_load(path.read_text())["optim"]["lr"] == 0.3


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    cfg = load_config(path)
    assert isinstance(cfg, Config) and cfg.name == path.stem


def test_squeezenet_imagenet_recipe_is_the_public_v1_0_solver():
    """forresti/SqueezeNet SqueezeNet_v1.0/solver.prototxt: 32 x iter_size 32, base_lr 0.08, poly 0.5,
    max_iter 85,000, momentum 0.9, weight_decay 0.0002, 227 px crops."""
    cfg = load_config(ROOT / "configs" / "squeezenet_imagenet.yaml")
    assert (cfg.model.name, cfg.model.num_classes, cfg.train.global_batch_size) == ("squeezenet1_0", 1000, 1024)
    assert (cfg.optim.lr, cfg.optim.reference_batch_size, cfg.optim.momentum, cfg.optim.weight_decay) == (
        0.08, 1024, 0.9, 2e-4)
    assert scaled_lr(cfg.optim, 1024) == 0.08  # the solver's base_lr at its batch
    assert (cfg.schedule.name, cfg.schedule.power, cfg.schedule.warmup_epochs) == ("poly", 0.5, 0)
    steps = cfg.train.epochs * (1_281_167 // 1024)  # ImageNet's training set, full batches
    assert abs(steps - 85_000) < 1251, "the solver's 85,000 iterations, to within an epoch"
    assert (cfg.data.train.crop, cfg.data.eval.crop, cfg.data.source) == (227, 227, "webdataset")
    modern = load_config(ROOT / "configs" / "squeezenet_imagenet_modern.yaml")
    assert (modern.data.train.kind, modern.data.train.crop, modern.data.eval.size, modern.data.eval.crop) == (
        "random_resized_crop", 224, 256, 224)
    assert (modern.schedule.name, modern.train.precision, modern.model.name) == ("cosine", "bf16", "squeezenet1_0_bypass")
    assert modern.train.label_smoothing > 0 and modern.train.ema_decay > 0 and modern.train.epochs == cfg.train.epochs


def test_reference_recipe_config():
    cfg = load_config(ROOT / "configs" / "squeezenet_cifar10.yaml")
    assert cfg.train.epochs == 300 and cfg.train.global_batch_size == 64
    assert (cfg.optim.lr, cfg.optim.momentum, cfg.optim.nesterov, cfg.optim.weight_decay) == (0.1, 0.9, False, 1e-4)
    assert cfg.optim.decay_norm_and_bias and cfg.schedule.name == "multistep"
    assert cfg.schedule.milestones == [150, 225] and cfg.schedule.gamma == 0.1
    assert cfg.train.label_smoothing == 0 and cfg.train.ema_decay == 0


def test_a_bare_off_means_off_not_false():
    """YAML 1.1 reads `off` as false; every choice that has an "off" takes it, from YAML and overrides alike."""
    cfg = load_config(None, ["logging.progress=off", "data.check_images=off", "data.cache=off", "train.compile=off"])
    assert (cfg.logging.progress, cfg.data.check_images, cfg.data.cache, cfg.train.compile) == ("off",) * 4
    with pytest.raises(ConfigError, match=r"data\.cache: Input should be 'auto' or 'off' \(got True\)"):
        load_config(None, ["data.cache=true"])


@pytest.mark.parametrize("overrides, key, fix", [
    (["data.root=/my/images"], "data.root", "data.source=imagefolder"),  # the default source is the sample
    (["data.source=cifar10", "data.root=data/cifar10", "data.train_split=training"], "data.train_split",
     "data.source=imagefolder"),
    (["data.eval_split=val"], "data.eval_split", "data.source=imagefolder"),
])
def test_a_data_key_the_source_does_not_read_is_an_error_naming_the_source(overrides, key, fix):
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    message = str(info.value)
    assert message.startswith(f"{key}: ") and "is not read by data.source=" in message and fix in message, message
    assert "\n" not in message
    load_config(None, [*overrides, fix, "data.root=/my/images"])  # the fix works


@pytest.mark.parametrize("overrides, key", [
    (["data.source=imagefolder", "data.root=/x", "data.download=true"], "download"),  # the reference config's
    (["data.source=cifar10", "data.root=data/cifar10", "data.check_images=error"], "check_images"),
    (["data.synthetic_images=64"], "synthetic_images"),
    (["data.source=synthetic", "data.root=/my/images"], "root"),  # synthetic replaces the data on purpose
])
def test_keys_whose_neglect_changes_nothing_trained_are_accepted_and_named(overrides, key):
    from pipeline.config import describe_ignored, ignored_data_keys

    cfg = load_config(None, overrides)
    assert ignored_data_keys(cfg.data) == [key]  # the run's log warns with this line
    assert describe_ignored(cfg.data, key).startswith(f"data.{key}: ") and "data.source=" in describe_ignored(
        cfg.data, key)


def test_source_keys_at_their_defaults_are_fine_and_a_saved_config_loads_back(tmp_path):
    cfg = load_config(None, ["data.source=sample", "data.root=", "data.download=false", "data.train_split=train"])
    path = tmp_path / "config.yaml"
    path.write_text(cfg.to_yaml())  # every key written out, source-specific ones at their defaults
    assert load_config(path) == cfg
    for config in RUN_CONFIGS:
        load_config(config)


@pytest.mark.parametrize("config, overrides, key", [
    ("squeezenet_cifar10.yaml", ["train.epochs=1"], "schedule.milestones"),  # the natural smoke test
    ("squeezenet_cifar10.yaml", ["train.epochs=10"], "schedule.milestones"),
    ("squeezenet_cifar10_fast.yaml", ["train.epochs=2"], "schedule.warmup_epochs"),
    (None, ["data.train.crop=130"], "data.train.crop"),
    (None, ["data.train.min_side=140"], "data.train.max_side"),
    (None, ["data.eval.crop=200"], "data.eval.size"),
    (None, ["eval.weights=both"], "train.ema_decay"),
    (None, ["data.source=imagefolder"], "data.root"),
])
def test_the_value_an_error_suggests_is_accepted(config, overrides, key):
    path = ROOT / "configs" / config if config else None
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    fix = suggested_override(str(info.value), key)
    load_config(path, [*overrides, fix])


def test_milestones_past_a_short_run_say_how_to_scale_them():
    with pytest.raises(ConfigError) as info:
        load_config(ROOT / "configs" / "squeezenet_cifar10.yaml", ["train.epochs=1"])
    message = str(info.value)
    assert "schedule.milestones=[0.5,0.75]" in message and "schedule.milestones=[]" in message
    assert load_config(ROOT / "configs" / "squeezenet_cifar10.yaml",
                       ["train.epochs=1", "schedule.milestones=[]"]).schedule.milestones == []


def test_an_unknown_key_without_a_close_match_lists_the_section_s_keys():
    with pytest.raises(ConfigError, match=r"^optim\.zzz: unknown key \(the keys of optim: lr, momentum, "):
        load_config(None, ["optim.zzz=1"])
    with pytest.raises(ConfigError, match=r"^bogus: unknown key \(the keys of the top level: name, model, data"):
        load_config(None, ["bogus.x=1"])
    with pytest.raises(ConfigError, match=r"not found \(the shipped ones: configs/quickstart\.yaml"):
        load_config("no-such-config.yaml")


def test_config_cli_help_exits_0(capsys):
    with pytest.raises(SystemExit) as info:
        config_main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m pipeline.config") and "--resolve" in out and "--docs" in out


def test_config_cli_says_which_values_are_still_auto(capsys):
    assert config_main(["configs/quickstart.yaml", "model.num_classes=auto"]) == 0
    out = capsys.readouterr().out
    head = [line for line in out.splitlines() if line.startswith("#")]
    assert head[0].startswith("# The validated config") and "resolved" not in head[0]
    assert any(line.startswith("#   model.num_classes: ") for line in head)
    assert any(line.startswith("#   train.precision: ") for line in head)
    assert not any("data.eval_split" in line for line in head)  # the sample has no splits to choose
    assert yaml.safe_load(out)["model"]["num_classes"] == "auto"  # printed as given, not pretended resolved
    assert config_main(["optim.lr=-1"]) == 2


def test_resolve_lists_the_data_and_applies_this_machine_s_rules(tiny_tree):
    import torch

    from pipeline.training.resolve import resolve_auto

    cfg = load_config(None, ["data.source=imagefolder", f"data.root={tiny_tree}", "model.num_classes=auto"])
    resolved, notes = resolve_auto(cfg)
    assert resolved.model.num_classes == 3 and notes["model.num_classes"].startswith("auto -> 3 (")
    cuda = torch.cuda.is_available()
    assert resolved.train.precision == ("bf16" if cuda else "fp32")
    assert resolved.data.device == ("gpu" if cuda else "cpu")
    assert resolved.optim.impl == ("fused" if cuda else "foreach")
    given = load_config(None, ["data.source=imagefolder", f"data.root={tiny_tree}", "train.precision=fp16"])
    assert resolve_auto(given)[0].train.precision == "fp16" and "train.precision" not in resolve_auto(given)[1]


def test_every_source_is_described_and_every_source_key_is_a_data_key():
    """A new data.source must say which of these keys it reads (SOURCE_KEYS) and get a short name."""
    from typing import get_args

    from pipeline.config import DATA_KEYS, SOURCE_KEYS, SOURCE_NAMES, DataConfig

    sources = set(get_args(DataConfig.model_fields["source"].annotation))
    assert set(SOURCE_NAMES) == sources
    assert set(SOURCE_KEYS) <= set(DataConfig.model_fields) and set(DATA_KEYS) <= set(SOURCE_KEYS)
    assert all(set(readers) <= sources for readers in SOURCE_KEYS.values())


def test_each_source_is_one_row_that_the_schema_reads():
    """pipeline/sources.py is where a source's static facts live: the data.source choices are its rows, every key
    a row reads is a key of `data`, and a source that needs data.root reads it."""
    from typing import get_args

    from pipeline.config import ROOT_HINTS, SOURCE_KEYS, DataConfig
    from pipeline.sources import SOURCES

    assert get_args(DataConfig.model_fields["source"].annotation) == tuple(SOURCES)
    for name, source in SOURCES.items():
        assert set(source.reads) <= set(DataConfig.model_fields) - {"source", "train", "eval"}, name
        assert all(name in SOURCE_KEYS[key] for key in source.reads), name
        assert (name in ROOT_HINTS) == ("root" in source.reads), name
        assert source.description in DataConfig.model_fields["source"].description, name
    assert {name for name, source in SOURCES.items() if source.decode_once} == {"sample", "imagefolder"}


def test_a_command_line_source_over_a_yaml_that_selects_other_data_leaves_its_keys_out(caplog):
    """`configs/x.yaml data.source=sample` is a choice (a benchmark on the shipped sample), not a forgotten
    data.source: the YAML's data.root is left out with a warning, and the saved config loads back."""
    with caplog.at_level("WARNING"):
        cfg = load_config(ROOT / "configs" / "squeezenet_cifar10_fast.yaml", ["data.source=sample"])
    assert cfg.data.source == "sample" and cfg.data.root == ""
    assert "data.root: 'data/cifar10' from" in caplog.text and "left out" in caplog.text
    assert from_dict(cfg.to_dict()).to_dict() == cfg.to_dict()
    with pytest.raises(ConfigError, match=r"data\.root: '/x' is not read by data\.source=sample"):
        load_config(ROOT / "configs" / "squeezenet_cifar10_fast.yaml", ["data.source=sample", "data.root=/x"])


def test_each_key_keeps_its_class_on_resume():
    """The classification, key by key, is the one the hand-written lists gave (this test passes on that code too)."""
    from pipeline.runs.changes import flatten

    expected = {key: cls for cls, keys in RESUME_CLASSES.items() for key in keys}
    leaves = list(flatten(Config().to_dict()))
    assert set(expected) <= set(leaves)
    assert {key: class_in_use(key) for key in leaves} == {key: expected.get(key, "experiment") for key in leaves}
    # A key a saved config holds and the schema no longer does follows its section.
    assert [class_in_use(k) for k in ("logging.gone", "wandb.gone", "dist.gone", "model.gone", "optim.gone")] == [
        "free", "free", "free", "must_match", "experiment"]


def test_every_key_declares_one_class_on_resume_and_the_lists_follow_the_declarations():
    """Each leaf key has exactly one class, read from its field or its section's; the lists the resume code
    uses are made from those declarations, so they name only keys that exist."""
    from pipeline.config import FREE_KEYS, MUST_MATCH, NAMING_KEYS, NOT_COMPARED_KEYS, OnResume, key_classes
    from pipeline.config.resume import declarations, owners
    from pipeline.runs.changes import flatten

    found = declarations()
    for key, (cls, _) in found.items():  # a key inside a declared section may only narrow free to naming
        outer = [found[o][0] for o in owners(key)[1:] if o in found]
        assert not outer or (outer[0], cls) == (OnResume.FREE, OnResume.NAMING), f"{key}: {cls} inside {outer[0]}"
    classes = key_classes()
    assert list(classes) == list(flatten(Config().to_dict()))  # every leaf, once
    assert {key: cls.value for key, cls in classes.items()} == {key: class_in_use(key) for key in classes}
    sections = {key for key, (_, is_section) in found.items() if is_section}
    assert {k.rstrip(".") for k in FREE_KEYS + MUST_MATCH} <= set(classes) | sections
    assert NAMING_KEYS | NOT_COMPARED_KEYS <= set(classes)


def test_a_limit_that_only_refuses_input_changes_freely_on_resume():
    """data.max_member_mb stops a run at listing when a member is larger; it never leaves one out. A run that
    trained read every member under its limit, so another limit trains the same images or refuses to start:
    nothing trained changes, and a continued run takes it without checkpoint.accept_changes. data.max_pixels
    stays an experiment key: with data.check_images=skip it leaves the larger images out of the data."""
    from pipeline.runs.changes import config_changes

    changes = config_changes({"data": {"max_member_mb": 256, "max_pixels": 100}},
                             {"data": {"max_member_mb": 512, "max_pixels": 200}})
    assert {c.key: c.kind for c in changes} == {"data.max_member_mb": "free", "data.max_pixels": "experiment"}


def test_quickstart_config_is_the_readme_main_job():
    cfg = load_config(ROOT / "configs" / "quickstart.yaml")
    assert cfg.data.source == "sample" and cfg.model.name == "squeezenet_bypass"
    readme = (ROOT / "README.md").read_text()
    assert "./launch.sh" in readme and "scripts/test.sh" in readme
    assert "scripts/test.sh" in (ROOT / ".ci" / "run").read_text()

