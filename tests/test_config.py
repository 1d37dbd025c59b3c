"""The typed configuration: defaults, YAML + overrides, rejected values, YAML round trip."""

from pathlib import Path

import pytest
import yaml

from pipeline.config import Config, ConfigError, load_config, markdown_reference

from pipeline.constants import REPO_ROOT as ROOT  # noqa: E402
from pipeline.training.optim import scaled_lr


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


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
    ],
)
def test_bad_values_name_the_key(override, key, words):
    with pytest.raises(ConfigError) as info:
        load_config(None, override)
    message = str(info.value)
    assert message.startswith(key + ":") or f"; {key}:" in message, message
    assert words in message
    assert "\n" not in message  # one line


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
    with pytest.raises(ConfigError, match=r"^train\.global_batch_size: 64 is not divisible by the 3 processes"):
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


# configs/sweep.yaml is a W&B sweep specification, not a run config (tests/test_compare.py checks it).
RUN_CONFIGS = sorted(p for p in (ROOT / "configs").glob("*.yaml") if p.name != "sweep.yaml")


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


def test_readme_reference_matches_the_schema():
    readme = (ROOT / "README.md").read_text()
    start, end = "<!-- config-reference:start -->\n", "<!-- config-reference:end -->"
    assert start in readme and end in readme, "README lacks the generated configuration reference"
    block = readme.split(start, 1)[1].split(end, 1)[0]
    assert block.strip() == markdown_reference().strip(), (
        "README's configuration reference is stale: regenerate it with `python -m pipeline.config --markdown`"
    )
