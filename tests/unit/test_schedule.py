"""Learning-rate schedules against their closed forms (and torch's OneCycleLR).
"""


import math

import pytest
import torch

from models import build_model
from pipeline.config import ConfigError, load_config
from pipeline.training.optim import build_optimizer, param_groups, scaled_lr
from pipeline.training.schedule import build_scheduler, lr_factor

SPE = 10  # steps per epoch


def sched(*overrides):
    return load_config(None, ["train.epochs=30", *overrides]).schedule


def test_reference_multistep_recipe():
    cfg = load_config(None).schedule  # 300 epochs, x0.1 after 150 and 225
    total = 300 * SPE
    assert lr_factor(cfg, 0, total, SPE) == 1.0
    assert lr_factor(cfg, 150 * SPE - 1, total, SPE) == 1.0  # last step of epoch 150
    assert lr_factor(cfg, 150 * SPE, total, SPE) == pytest.approx(0.1)  # first step of epoch 151
    assert lr_factor(cfg, 225 * SPE - 1, total, SPE) == pytest.approx(0.1)
    assert lr_factor(cfg, 225 * SPE, total, SPE) == pytest.approx(0.01)
    assert lr_factor(cfg, total - 1, total, SPE) == pytest.approx(0.01)


def test_fractional_milestones():
    cfg = sched("schedule.milestones=[2.5]")
    assert lr_factor(cfg, 24, 300, SPE) == 1.0 and lr_factor(cfg, 25, 300, SPE) == pytest.approx(0.1)


def test_cosine_closed_form():
    cfg = sched("schedule.name=cosine", "schedule.min_lr_factor=0.1")
    total = 30 * SPE
    for step in (0, 1, 77, 150, 299):
        expected = 0.1 + 0.9 * (1 + math.cos(math.pi * step / total)) / 2
        assert lr_factor(cfg, step, total, SPE) == pytest.approx(expected)


def test_poly_closed_form_is_caffes():
    """Caffe's lr_policy poly: base_lr * (1 - iter / max_iter) ^ power, zero at max_iter."""
    cfg = sched("schedule.name=poly", "schedule.power=0.5")
    total = 30 * SPE
    for step in (0, 1, 77, 150, 299):
        assert lr_factor(cfg, step, total, SPE) == pytest.approx((1 - step / total) ** 0.5)
    assert lr_factor(cfg, total, total, SPE) == 0.0
    linear = sched("schedule.name=poly", "schedule.power=1")
    assert lr_factor(linear, 75, total, SPE) == pytest.approx(0.75)


def test_warmup_then_cosine():
    cfg = sched("schedule.name=cosine", "schedule.warmup_epochs=2", "schedule.warmup_start_factor=0.1")
    total, warm = 30 * SPE, 2 * SPE
    assert lr_factor(cfg, 0, total, SPE) == pytest.approx(0.1)
    assert lr_factor(cfg, 10, total, SPE) == pytest.approx(0.1 + 0.9 * 10 / 20)
    assert lr_factor(cfg, warm, total, SPE) == pytest.approx(1.0)
    step = 100
    expected = (1 + math.cos(math.pi * (step - warm) / (total - warm))) / 2
    assert lr_factor(cfg, step, total, SPE) == pytest.approx(expected)


def test_warmup_then_multistep():
    cfg = sched("schedule.warmup_epochs=1", "schedule.milestones=[10, 20]", "schedule.warmup_start_factor=0")
    assert lr_factor(cfg, 0, 300, SPE) == 0.0
    assert lr_factor(cfg, 5, 300, SPE) == pytest.approx(0.5)
    assert lr_factor(cfg, 150, 300, SPE) == pytest.approx(0.1)


def test_onecycle_matches_torch():
    cfg = sched("schedule.name=onecycle", "schedule.pct_start=0.3", "schedule.div_factor=20",
                "schedule.final_div_factor=100")
    total = 30 * SPE
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.5)
    ref = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.5, total_steps=total, pct_start=0.3,
                                              div_factor=20, final_div_factor=100, cycle_momentum=False)
    for step in range(total):
        assert 0.5 * lr_factor(cfg, step, total, SPE) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9), step
        opt.step()
        ref.step()


def test_scheduler_steps_the_optimizer_per_iteration():
    cfg = load_config(None, ["train.epochs=4", "schedule.milestones=[1, 3]"])
    model = torch.nn.Linear(2, 2)
    opt = build_optimizer(cfg.optim, model, 64, torch.device("cpu"))
    sch = build_scheduler(cfg.schedule, opt, epochs=4, steps_per_epoch=SPE)
    lrs = []
    for _ in range(4 * SPE):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sch.step()
    assert lrs[SPE - 1] == pytest.approx(0.1) and lrs[SPE] == pytest.approx(0.01) and lrs[3 * SPE] == pytest.approx(0.001)


def test_linear_lr_scaling_and_decay_groups():
    cfg = load_config(None, ["optim.lr_scaling=linear", "optim.reference_batch_size=64", "optim.decay_norm_and_bias=false"]).optim
    assert scaled_lr(cfg, 256) == pytest.approx(0.4)
    model = build_model("squeezenet_bypass", 10)
    decay, no_decay = param_groups(model, cfg)
    assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    assert no_decay["weight_decay"] == 0 and decay["weight_decay"] == 1e-4
    reference = load_config(None).optim
    (group,) = param_groups(model, reference)
    assert len(group["params"]) == len(list(model.parameters())) and group["weight_decay"] == 1e-4


def test_reference_optimizer_is_classical_momentum_sgd():
    cfg = load_config(None)
    opt = build_optimizer(cfg.optim, torch.nn.Linear(2, 2), 64, torch.device("cpu"))
    assert isinstance(opt, torch.optim.SGD)
    g = opt.param_groups[0]
    assert (g["lr"], g["momentum"], g["nesterov"], g["weight_decay"], g["foreach"]) == (0.1, 0.9, False, 1e-4, True)


def test_apex_missing_gives_clear_error():
    pytest.importorskip("torch")
    try:
        import apex.optimizers  # noqa: F401
        pytest.skip("NVIDIA apex is installed here")
    except ImportError:
        pass
    cfg = load_config(None, ["optim.impl=apex"]).optim
    # on a CUDA device (nothing touches CUDA: the import fails first)
    with pytest.raises(ConfigError, match=r"NVIDIA apex is not importable.*Do not `pip install apex`"):
        build_optimizer(cfg, torch.nn.Linear(2, 2), 64, torch.device("cuda"))


def test_apex_without_cuda_is_a_config_error_whether_or_not_apex_is_installed():
    cfg = load_config(None, ["optim.impl=apex"]).optim
    with pytest.raises(ConfigError, match=r"^optim\.impl: apex .*runs only on CUDA GPUs.*trains on cpu"):
        build_optimizer(cfg, torch.nn.Linear(2, 2), 64, torch.device("cpu"))

