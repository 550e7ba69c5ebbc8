import pytest
import torch

from sublevel import models

# (name, input shape, classes, kwargs, D from the literature)
COUNTS = [
    ("mlp", (1, 28, 28), 10, {}, 266_610),          # LeNet-300-100
    ("lenet5", (1, 28, 28), 10, {}, 61_706),
    ("lenet_valid", (1, 28, 28), 10, {}, 44_426),   # Li et al. 2018, Table 1
    ("mlp", (1, 28, 28), 10, {"widths": (200, 200)}, 199_210),  # Li et al.'s MNIST FC 784-200-200-10
    ("conv2", (3, 32, 32), 10, {}, 4_301_642),      # Frankle & Carbin: 4.3M
    ("conv4", (3, 32, 32), 10, {}, 2_425_930),      # 2.4M
    ("conv6", (3, 32, 32), 10, {}, 2_262_602),
    ("resnet20", (3, 32, 32), 10, {}, 272_474),     # He et al.: 0.27M
    ("mlp", (1, 40), 10, {"widths": (100, 100)}, 15_210),
    ("mnist1d_cnn", (1, 40), 10, {}, 13_960),
    # Larsen et al. 2022's CNNs, counted from their code's layers (flax Conv 3x3 'SAME' + bias, Dense + bias)
    ("tiny_cnn", (1, 28, 28), 10, {}, 20_490),
    ("small_cnn", (1, 28, 28), 10, {}, 61_514),
    ("medium_cnn", (1, 28, 28), 10, {}, 130_890),
    ("tiny_cnn", (3, 32, 32), 10, {}, 25_578),
    ("small_cnn", (3, 32, 32), 10, {}, 66_570),
    ("medium_cnn", (3, 32, 32), 10, {}, 135_306),
]


@pytest.mark.parametrize("name, shape, classes, kwargs, D", COUNTS)
def test_parameter_counts_and_forward(name, shape, classes, kwargs, D):
    model = models.build(name, shape, classes, **kwargs)
    assert models.Layout.of(model).D == D == sum(p.numel() for p in model.parameters())
    assert model(torch.zeros(2, *shape)).shape == (2, classes)


def test_resnet_width_scales_channels():
    narrow = models.Layout.of(models.build("resnet20", (3, 32, 32), 10, width=8)).D
    assert narrow < 272_474 / 3


def test_unknown_model_and_unknown_option():
    with pytest.raises(KeyError, match="unknown model 'nosuchnet'"):
        models.build("nosuchnet", (1, 40), 10)
    with pytest.raises(TypeError, match=r"lenet5 does not take \['widths'\]"):
        models.build("lenet5", (1, 28, 28), 10, widths=(3,))


def test_prunable_tensors_are_conv_and_linear_weights_only():
    model = models.build("resnet20", (3, 32, 32), 10)
    layout = models.Layout.of(model)
    for name, prunable in zip(layout.names, layout.prunable):
        is_weight = name.endswith("weight") and ".bn" not in name and not name.startswith("bn") \
            and not name.endswith("shortcut.1.weight")
        assert prunable == is_weight, name
    mask = layout.prunable_mask()
    assert mask.shape == (layout.D,) and 0 < mask.sum() < layout.D


def test_flat_vector_round_trip():
    torch.manual_seed(0)
    model = models.build("lenet5", (1, 28, 28), 10)
    layout = models.Layout.of(model)
    theta = models.flatten(model)
    named = layout.unflatten(theta)
    for name, p in model.named_parameters():
        assert torch.equal(named[name], p.detach())
    models.load_flat(model, torch.arange(layout.D, dtype=torch.float32))
    assert torch.equal(models.flatten(model), torch.arange(layout.D, dtype=torch.float32))


def test_functional_call_on_the_flat_vector_matches_the_module():
    torch.manual_seed(0)
    model = models.build("mlp", (1, 40), 10, widths=(16,))
    layout = models.Layout.of(model)
    x = torch.randn(5, 1, 40)
    out = torch.func.functional_call(model, layout.unflatten(models.flatten(model)), (x,))
    assert torch.allclose(out, model(x))


def test_buffers_round_trip():
    model = models.build("resnet20", (3, 32, 32), 10, width=4)
    model.train()
    model(torch.randn(8, 3, 32, 32))  # moves running statistics
    flat = models.flatten_buffers(model)
    fresh = models.build("resnet20", (3, 32, 32), 10, width=4)
    models.load_flat_buffers(fresh, flat)
    for (n, a), (_, b) in zip(model.named_buffers(), fresh.named_buffers()):
        assert torch.equal(a, b), n


@pytest.mark.parametrize("scheme", ["default", "lecun_normal", "glorot_normal", "kaiming_normal",
                                    "keras_he_normal"])
def test_each_initialisation_draws_the_papers_weight_statistics(scheme):
    """A 784-1000-500 MLP and a 3x3 conv, each layer's weights against the scheme's law (std within 3%, the
    spread of ~10^5 draws is < 1%), its biases zero or PyTorch's uniform, and the cut of flax's truncated normal."""
    import math

    from sublevel.config import ModelSpec

    torch.manual_seed(0)
    net = models.build_spec(ModelSpec("mlp", widths=(1000, 500), width=None, init=scheme), (1, 28, 28), 10)
    torch.manual_seed(0)
    conv = models.initialise(torch.nn.Sequential(torch.nn.Conv2d(32, 64, 3)), scheme)
    for layer in [m for m in net.modules() if isinstance(m, torch.nn.Linear)][:2] + [conv[0]]:
        fan_in, fan_out = torch.nn.init._calculate_fan_in_and_fan_out(layer.weight)
        w, b = layer.weight.detach().flatten().double(), layer.bias.detach()
        expected = {"default": math.sqrt(1 / (3 * fan_in)),  # Kaiming-uniform, a = √5: U(±1/√fan_in)
                    "lecun_normal": math.sqrt(1 / fan_in), "glorot_normal": math.sqrt(2 / (fan_in + fan_out)),
                    "kaiming_normal": math.sqrt(2 / fan_in),
                    "keras_he_normal": models.TRUNCATED_NORMAL_STD * math.sqrt(2 / fan_in)}[scheme]
        assert w.std().item() == pytest.approx(expected, rel=0.03), layer
        assert abs(w.mean().item()) < 0.01 * expected
        kurtosis = ((w - w.mean()) ** 4).mean() / w.var() ** 2
        if scheme == "default":
            assert w.abs().max() <= 1 / math.sqrt(fan_in) and kurtosis < 2  # uniform: 1.8
        elif scheme in ("lecun_normal", "keras_he_normal"):  # cut at 2 stds of the underlying normal
            assert w.abs().max() <= 2 * expected / models.TRUNCATED_NORMAL_STD + 1e-9 and 2.2 < kurtosis < 2.7
        else:
            assert 2.9 < kurtosis < 3.1 and w.abs().max() > 3.5 * expected  # Gaussian tails
        if scheme in ("lecun_normal", "glorot_normal", "keras_he_normal"):
            assert torch.count_nonzero(b) == 0
        else:  # PyTorch's bias: U(±1/√fan_in)
            assert b.abs().max() <= 1 / math.sqrt(fan_in) and b.std() > 0.4 / math.sqrt(fan_in)


def test_an_unknown_initialisation_is_named():
    with pytest.raises(ValueError, match="'xavier'"):
        models.initialise(torch.nn.Linear(2, 2), "xavier")


def test_openlth_draws_its_batchnorm_scales_uniform_and_its_weights_as_kaiming_normal():
    """OpenLTH's ResNet default: batchnorm_init uniform (scales from U[0, 1), shifts 0) beside kaiming_normal."""
    import math

    from sublevel.config import ModelSpec

    torch.manual_seed(0)
    net = models.build_spec(ModelSpec("resnet20", widths=None, width=16, init="openlth"), (3, 32, 32), 10)
    scales = torch.cat([m.weight.detach() for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)])
    shifts = torch.cat([m.bias.detach() for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)])
    assert len(scales) > 500 and 0 <= scales.min() and scales.max() < 1
    assert abs(scales.mean().item() - 0.5) < 0.05 and abs(scales.std().item() - math.sqrt(1 / 12)) < 0.03
    assert torch.count_nonzero(shifts) == 0
    conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.numel() > 20000)
    fan_in = conv.weight[0].numel()
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / fan_in), rel=0.05)
