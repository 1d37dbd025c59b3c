"""The SqueezeNet family: exact reference figures, gradients, memory formats, the summary command.
"""


import subprocess
import sys

import pytest
import torch

from models import build_model, list_models
from models.summary import count_macs, count_params, spatial_trace


@pytest.fixture(scope="module")
def bypass():
    torch.manual_seed(0)
    return build_model("squeezenet_bypass", num_classes=10)


def test_registry_lists_the_family():
    assert {"squeezenet_bypass", "squeezenet1_0", "squeezenet1_1"} <= set(list_models())
    with pytest.raises(ValueError, match="model.name"):
        build_model("resnet9000", num_classes=10)


def test_the_schema_offers_exactly_the_registered_models():
    """model.name's values come from the schema (docs/configuration.md, docs/training.md and `bench model
    --help` read them there): it offers every registered network and nothing else."""
    from pipeline.config import MODEL_NAMES, ConfigError, load_config

    assert sorted(MODEL_NAMES) == list_models()
    for name in MODEL_NAMES:
        assert load_config(None, [f"model.name={name}"]).model.name == name
    with pytest.raises(ConfigError, match=r"^model.name: Input should be 'squeezenet_bypass', .*'resnet50' "):
        load_config(None, ["model.name=resnet9000"])


def test_reference_parameter_count(bypass):
    assert count_params(bypass) == 747_146


def test_reference_multiply_accumulates(bypass):
    # The foundation issue quotes about 249.4 M conv MACs per 122x122 image.
    assert count_macs(bypass, 122) == pytest.approx(249.4e6, rel=1e-3)


def test_reference_spatial_trace(bypass):
    # conv1 (stride 2) and the three ceil-mode pools; floor mode would give 60 -> 30 -> 15 -> 8.
    assert spatial_trace(bypass, 122) == [122, 60, 31, 16, 9]


@pytest.mark.parametrize("size", [122, 128])
def test_output_shape(bypass, size):
    out = bypass.eval()(torch.randn(2, 3, size, size))
    assert out.shape == (2, 10)


def test_num_classes_is_respected():
    assert build_model("squeezenet_bypass", num_classes=100)(torch.randn(2, 3, 64, 64)).shape == (2, 100)


def test_every_parameter_gets_a_finite_gradient():
    torch.manual_seed(0)
    model = build_model("squeezenet_bypass", num_classes=10).train()
    x = torch.randn(4, 3, 64, 64)
    loss = torch.nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 2, 3]))
    assert torch.isfinite(loss)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} received no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name} has an all-zero gradient"


def test_he_normal_init_and_zero_biases(bypass):
    conv = bypass.features[2].expand3x3[2]  # fire2's 3x3 expand: fan_in = 16 * 9
    assert torch.count_nonzero(conv.bias) == 0
    expected_std = (2.0 / (16 * 9)) ** 0.5
    assert conv.weight.std().item() == pytest.approx(expected_std, rel=0.1)


def test_bypass_is_identity_added():
    fire3 = build_model("squeezenet_bypass", num_classes=10).features[3]
    assert fire3.bypass
    x = torch.randn(2, 128, 8, 8)
    fire3.eval()
    h = fire3.squeeze(x)
    expected = torch.cat([fire3.expand1x1(h), fire3.expand3x3(h)], 1) + x
    torch.testing.assert_close(fire3(x), expected)


@pytest.mark.parametrize("name", ["squeezenet_bypass", "squeezenet1_0", "squeezenet1_1"])
def test_channels_last_matches_contiguous(name):
    torch.manual_seed(0)
    model = build_model(name, num_classes=10).eval()
    x = torch.randn(4, 3, 122, 122)
    ref = model(x)
    cl_model = build_model(name, num_classes=10).eval()
    cl_model.load_state_dict(model.state_dict())
    cl_model = cl_model.to(memory_format=torch.channels_last)
    out = cl_model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    assert not torch.isnan(out).any()


@pytest.mark.parametrize("name", ["squeezenet1_0", "squeezenet1_1"])
def test_classic_variants_train_a_step(name):
    model = build_model(name, num_classes=10).train()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    loss = torch.nn.functional.cross_entropy(model(torch.randn(2, 3, 122, 122)), torch.tensor([1, 2]))
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.slow
def test_summary_command_prints_the_tested_figures():
    out = subprocess.run(
        [sys.executable, "-m", "models", "squeezenet_bypass", "--size", "122"],
        check=True, capture_output=True, text=True,
    ).stdout
    assert "747,146" in out and "249.4" in out and "122 -> 60 -> 31 -> 16 -> 9" in out


def test_squeezenet1_0_bypass_has_squeezenet1_0s_parameters_for_1000_classes():
    """The paper's simple bypass adds no parameters: 1,248,424, as SqueezeNet 1.0 (torchvision's)."""
    plain = build_model("squeezenet1_0", num_classes=1000)
    bypass = build_model("squeezenet1_0_bypass", num_classes=1000)
    assert count_params(plain) == count_params(bypass) == 1_248_424
    bypass.load_state_dict(plain.state_dict(), strict=True)  # the same parameter names: torchvision weights load
    assert count_params(build_model("resnet50", num_classes=1000)) == 25_557_032


@pytest.mark.parametrize("size", [224, 227])
def test_squeezenet1_0_bypass_output_shape(size):
    model = build_model("squeezenet1_0_bypass", num_classes=1000).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, size, size)).shape == (2, 1000)


def test_bypasses_are_around_fire_3_5_7_9_only():
    from torchvision.models.squeezenet import Fire

    from models.imagenet import BypassFire

    features = build_model("squeezenet1_0_bypass", num_classes=10).eval().features
    fires = [m for m in features if isinstance(m, Fire)]  # fire2 .. fire9
    assert [isinstance(m, BypassFire) for m in fires] == [False, True, False, True, False, True, False, True]
    for fire in fires[1::2]:
        x = torch.randn(2, fire.inplanes, 9, 9)
        torch.testing.assert_close(fire(x), Fire.forward(fire, x) + x)


def test_squeezenet1_0_bypass_trains_every_parameter():
    torch.manual_seed(0)
    model = build_model("squeezenet1_0_bypass", num_classes=10).train()
    loss = torch.nn.functional.cross_entropy(model(torch.randn(4, 3, 96, 96)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_resnet50_is_registered_for_benchmarks():
    model = build_model("resnet50", num_classes=7).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 7)

