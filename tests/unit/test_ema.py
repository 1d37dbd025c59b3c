"""The weight EMA in-process on a tiny model: warm-up rule, BatchNorm buffers, exact resume, evaluation keys.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from pipeline.config import ConfigError, load_config
from pipeline.training.ema import WeightEMA, evaluated_models, name_evaluations, warmup_decay


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 2))


def train_a_step(model: nn.Module, optimizer: torch.optim.Optimizer, seed: int) -> None:
    """One SGD step in train mode: the weights change and BatchNorm updates its running statistics."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(8, 3, 6, 6, generator=gen) * (1 + seed % 3)
    model.train()
    loss = model(images).square().mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def train_and_average(model: nn.Module, optimizer: torch.optim.Optimizer, seeds: range, *averaged) -> None:
    """A training step per seed, each followed by an update of every averaged model."""
    for n in seeds:
        train_a_step(model, optimizer, seed=n)
        for avg in averaged:
            avg.update_parameters(model)


def float_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items() if v.is_floating_point()}


def test_warmup_decay_rises_from_a_tenth_to_the_configured_decay():
    assert warmup_decay(0.999, 0) == pytest.approx(0.1)
    assert warmup_decay(0.999, 1) == pytest.approx(2 / 11)
    assert warmup_decay(0.999, 90) == pytest.approx(91 / 100)
    assert warmup_decay(0.999, 10**6) == 0.999  # capped: (1 + n) / (10 + n) passes 0.999 at n = 8991
    assert warmup_decay(0.9, 80) == 0.9


def test_warmup_follows_the_recurrence_for_weights_and_batchnorm_statistics():
    model = tiny_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    ema = WeightEMA(model, decay=0.99, warmup=True)
    expected = float_state(model)  # the EMA starts as a copy of the model
    for n in range(6):
        train_a_step(model, optimizer, seed=n)
        decay = min(0.99, (1 + n) / (10 + n))
        assert ema.current_decay() == pytest.approx(decay)
        ema.update_parameters(model)
        live = float_state(model)
        expected = {k: decay * expected[k] + (1 - decay) * live[k] for k in expected}
    got = float_state(ema.module)
    assert got.keys() == expected.keys() and "1.running_var" in got  # BatchNorm statistics are averaged too
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-5, atol=1e-6, msg=key)
    assert not torch.equal(got["1.running_mean"], model.state_dict()["1.running_mean"])  # averaged, not copied
    assert int(ema.n_averaged) == 6


def test_integer_buffers_are_copied_not_averaged():
    model = tiny_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    ema = WeightEMA(model, decay=0.9)
    train_and_average(model, optimizer, range(5), ema)
    count = ema.module[1].num_batches_tracked
    assert count.dtype == torch.long and int(count) == int(model[1].num_batches_tracked) == 5


def test_without_warmup_it_is_torchs_averaged_model():
    """ema_warmup=false keeps the previous behaviour (AveragedModel + get_ema_multi_avg_fn) bit for bit."""
    model = tiny_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    ours = WeightEMA(model, decay=0.9, warmup=False)
    torchs = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    train_and_average(model, optimizer, range(5), ours, torchs)
    for key, value in float_state(torchs.module).items():
        assert torch.equal(ours.module.state_dict()[key], value), key


def test_state_dict_resumes_exactly_and_continues_the_warmup():
    model = tiny_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    ema = WeightEMA(model, decay=0.999)
    train_and_average(model, optimizer, range(4), ema)
    saved = {k: v.clone() for k, v in ema.state_dict().items()}
    assert set(saved) == {"n_averaged", *(f"module.{k}" for k in model.state_dict())}  # AveragedModel's keys

    resumed = WeightEMA(tiny_model(seed=1), decay=0.999)  # a fresh process: different initial weights
    resumed.load_state_dict(saved, strict=True)
    assert int(resumed.n_averaged) == 4 and resumed.current_decay() == pytest.approx(5 / 14)
    train_and_average(model, optimizer, range(4, 8), ema, resumed)
    for key, value in ema.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key


def test_checkpoints_of_averaged_model_load_strictly():
    model = tiny_model()
    old = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    old.update_parameters(model)
    ema = WeightEMA(tiny_model(seed=1), decay=0.9)
    ema.load_state_dict(old.state_dict(), strict=True)
    assert int(ema.n_averaged) == 1
    assert torch.equal(ema.module[0].weight, model[0].weight)


def test_evaluated_weights_and_their_metric_names():
    model = tiny_model()
    ema = WeightEMA(model, decay=0.9)
    assert list(evaluated_models(model, ema, "ema")) == ["ema"]
    assert list(evaluated_models(model, ema, "both")) == ["ema", "raw"]  # the headline first
    assert evaluated_models(model, ema, "raw") == {"raw": model}
    assert evaluated_models(model, None, "ema") == {"raw": model}  # no EMA configured: the raw weights
    one = name_evaluations({"raw": {"val/top1": 0.5, "val/loss": 1.0}})
    assert one == {"val/top1": 0.5, "val/loss": 1.0}
    both = name_evaluations({"ema": {"val/top1": 0.9, "val/images": 10}, "raw": {"val/top1": 0.8, "val/images": 10}})
    assert both == {"val/top1": 0.9, "val/images": 10, "val_ema/top1": 0.9, "val_ema/images": 10,
                    "val_raw/top1": 0.8, "val_raw/images": 10}


def test_eval_weights_config_and_the_former_use_ema_key():
    assert load_config().eval.weights == "ema" and load_config().train.ema_warmup is True
    assert load_config(None, ["eval.use_ema=false"]).eval.weights == "raw"
    assert load_config(None, ["eval.use_ema=true"]).eval.weights == "ema"
    with pytest.raises(ConfigError, match=r"^eval\.use_ema: replaced by eval\.weights"):
        load_config(None, ["eval.use_ema=true", "eval.weights=raw"])
    with pytest.raises(ConfigError, match=r"^eval\.weights: both needs an EMA"):
        load_config(None, ["eval.weights=both"])
    assert load_config(None, ["eval.weights=both", "train.ema_decay=0.99"]).eval.weights == "both"

