"""Model registry and the flat-vector view of a model's parameters.

Each builder takes (in_shape, num_classes, **kwargs). Parameter counts match the
literature: LeNet-300-100 266,610; LeNet-5 61,706; Conv-2 4,301,642; Conv-4
2,425,930; Conv-6 2,262,602 (Frankle & Carbin's table says 1.7M, but
the architecture they describe has 2.26M); ResNet-20 272,474 (CIFAR-10); Larsen et al. 2022's TinyCNN,
SmallCNN and MediumCNN 20,490, 61,514 and 130,890 (MNIST), as their code builds them. Prunable tensors are the weights of
Conv and Linear layers: never biases or BatchNorm (Frankle & Carbin 2019).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
import torch.nn.functional as F

REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register(name: str):
    def deco(fn):
        REGISTRY[name] = fn
        return fn
    return deco


def check_kwargs(name: str, kwargs: dict) -> None:
    """TypeError naming the keys a model does not take."""
    accepted = set(inspect.signature(REGISTRY[name]).parameters) - {"in_shape", "num_classes"}
    if extra := sorted(set(kwargs) - accepted):
        raise TypeError(f"{name} does not take {extra}; it takes {sorted(accepted) or 'no options'}")


def build(name: str, in_shape: tuple[int, ...], num_classes: int, **kwargs) -> nn.Module:
    if name not in REGISTRY:
        raise KeyError(f"unknown model {name!r}; known: {sorted(REGISTRY)}")
    check_kwargs(name, kwargs)
    return REGISTRY[name](tuple(in_shape), num_classes, **kwargs)


def build_spec(spec, in_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Build from a config.ModelSpec (its name, options and initialisation scheme)."""
    return initialise(build(spec.name, in_shape, num_classes, **spec.kwargs()), spec.init or "default")


# flax's truncated normal: a standard normal cut at ±2, rescaled by this to unit variance (jax.nn.initializers)
TRUNCATED_NORMAL_STD = 0.87962566103423978
INITS = ("default", "lecun_normal", "glorot_normal", "kaiming_normal", "keras_he_normal", "openlth")  # the schema's model.init


def initialise(model: nn.Module, scheme: str) -> nn.Module:
    """Re-draw every Conv and Linear layer's weights (and biases) by `scheme`, from torch's global generator,
    layer by layer, as the seed papers' code initialises them:
      default         PyTorch's own (Kaiming-uniform with a = √5, uniform biases): nothing re-drawn;
      lecun_normal    flax's default (Larsen et al.'s code): truncated normal at ±2σ, variance 1/fan_in, zero biases;
      glorot_normal   Frankle & Carbin 2019: Gaussian, std √(2/(fan_in + fan_out)), zero biases;
      kaiming_normal  OpenLTH's default: Gaussian, std √(2/fan_in), weights only (biases stay PyTorch's);
      keras_he_normal Keras 2.1's he_normal (Li et al.'s code, Keras 2.1.5): a normal of std √(2/fan_in) cut at
                      ±2 of those stds, with no correction for the cut (its std is 0.88 √(2/fan_in)), zero biases;
      openlth         OpenLTH's default for its models (model_init kaiming_normal, batchnorm_init uniform):
                      kaiming_normal, and each BatchNorm scale drawn from U[0, 1), its shift 0.
    Otherwise BatchNorm keeps its (1, 0)."""
    if scheme not in INITS:
        raise ValueError(f"unknown initialisation {scheme!r}; known: {INITS}")
    if scheme == "default":
        return model
    with torch.no_grad():
        for m in model.modules():
            if scheme == "openlth" and isinstance(m, nn.modules.batchnorm._BatchNorm):
                nn.init.uniform_(m.weight, 0.0, 1.0)
                nn.init.zeros_(m.bias)
            if not isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)):
                continue
            fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(m.weight)
            if scheme == "lecun_normal":
                std = math.sqrt(1 / fan_in) / TRUNCATED_NORMAL_STD
                nn.init.trunc_normal_(m.weight, std=std, a=-2 * std, b=2 * std)
            elif scheme == "keras_he_normal":
                std = math.sqrt(2 / fan_in)
                nn.init.trunc_normal_(m.weight, std=std, a=-2 * std, b=2 * std)
            elif scheme == "glorot_normal":
                nn.init.normal_(m.weight, std=math.sqrt(2 / (fan_in + fan_out)))
            else:
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None and scheme not in ("kaiming_normal", "openlth"):
                nn.init.zeros_(m.bias)
    return model


@register("mlp")
def mlp(in_shape, num_classes, widths=(300, 100)) -> nn.Module:
    """Fully connected ReLU network; LeNet-300-100 by default."""
    dims = [math.prod(in_shape), *widths]
    layers: list[nn.Module] = [nn.Flatten()]
    for a, b in zip(dims, dims[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    layers.append(nn.Linear(dims[-1], num_classes))
    return nn.Sequential(*layers)


@register("lenet5")
def lenet5(in_shape, num_classes) -> nn.Module:
    """LeNet-5 (LeCun et al. 1998) on 28x28 inputs padded to 32x32."""
    return _lenet(in_shape, num_classes, pad=(32 - in_shape[1]) // 2)


@register("lenet_valid")
def lenet_valid(in_shape, num_classes) -> nn.Module:
    """LeNet as Li et al. 2018 train it: the same layers with unpadded (valid) 5x5 convolutions on the 28x28
    input, D = 44,426 on MNIST (their Table 1; uber-research/intrinsic-dimension's build_LeNet_direct_mnist)."""
    return _lenet(in_shape, num_classes, pad=0)


def _lenet(in_shape, num_classes, pad: int) -> nn.Module:
    c, h, w = in_shape
    side = ((h + 2 * pad - 4) // 2 - 4) // 2
    return nn.Sequential(
        nn.Conv2d(c, 6, 5, padding=pad), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(16 * side * side, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, num_classes),
    )


def _conv_net(in_shape, num_classes, stages: tuple[int, ...]) -> nn.Module:
    """Frankle & Carbin's Conv-2/4/6: pairs of 3x3 convs, max-pool after each pair, FC 256-256."""
    c, h, _ = in_shape
    layers: list[nn.Module] = []
    for out in stages:
        layers += [nn.Conv2d(c, out, 3, padding=1), nn.ReLU(), nn.Conv2d(out, out, 3, padding=1), nn.ReLU(),
                   nn.MaxPool2d(2)]
        c, h = out, h // 2
    layers += [nn.Flatten(), nn.Linear(c * h * h, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
               nn.Linear(256, num_classes)]
    return nn.Sequential(*layers)


def _larsen_cnn(in_shape, num_classes, channels: tuple[int, ...]) -> nn.Module:
    """Larsen, Fort, Becker & Ganguli 2022's SimpleCNN (ganguli-lab/degrees-of-freedom, architectures.py): per
    stage a 3x3 'same' convolution, ReLU and 2x2 average pooling, then one linear layer on the flattened map."""
    c, h, _ = in_shape
    layers: list[nn.Module] = []
    for out in channels:
        layers += [nn.Conv2d(c, out, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2)]
        c, h = out, h // 2
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(c * h * h, num_classes))


@register("tiny_cnn")
def tiny_cnn(in_shape, num_classes) -> nn.Module:
    """Larsen et al.'s TinyCNN, channels 16-32: D = 20,490 on MNIST, 25,578 on CIFAR-10."""
    return _larsen_cnn(in_shape, num_classes, (16, 32))


@register("small_cnn")
def small_cnn(in_shape, num_classes) -> nn.Module:
    """Larsen et al.'s SmallCNN, channels 32-64-64: D = 61,514 on MNIST, 66,570 on CIFAR-10."""
    return _larsen_cnn(in_shape, num_classes, (32, 64, 64))


@register("medium_cnn")
def medium_cnn(in_shape, num_classes) -> nn.Module:
    """Larsen et al.'s MediumCNN, channels 32-64-64-128: D = 130,890 on MNIST, 135,306 on CIFAR-10."""
    return _larsen_cnn(in_shape, num_classes, (32, 64, 64, 128))


@register("conv2")
def conv2(in_shape, num_classes) -> nn.Module:
    return _conv_net(in_shape, num_classes, (64,))


@register("conv4")
def conv4(in_shape, num_classes) -> nn.Module:
    return _conv_net(in_shape, num_classes, (64, 128))


@register("conv6")
def conv6(in_shape, num_classes) -> nn.Module:
    return _conv_net(in_shape, num_classes, (64, 128, 256))


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:  # projection shortcut, as OpenLTH's CIFAR ResNets
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR ResNet (He et al. 2016): three stages of (depth-2)/6 basic blocks at width, 2x, 4x."""

    def __init__(self, in_shape, num_classes, depth: int = 20, width: int = 16):
        super().__init__()
        n = (depth - 2) // 6
        self.conv = nn.Conv2d(in_shape[0], width, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        blocks, cin = [], width
        for stage in range(3):
            cout = width * 2 ** stage
            for i in range(n):
                blocks.append(_Block(cin, cout, 2 if stage and i == 0 else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.blocks(F.relu(self.bn(self.conv(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


@register("resnet20")
def resnet20(in_shape, num_classes, width=16) -> nn.Module:
    return ResNet(in_shape, num_classes, depth=20, width=width)


@register("mnist1d_cnn")
def mnist1d_cnn(in_shape, num_classes, width=25) -> nn.Module:
    """The MNIST-1D paper's small 1-D CNN (Greydanus 2020): three convs, one linear readout."""
    c, length = in_shape
    return nn.Sequential(
        nn.Conv1d(c, width, 5, padding=2), nn.ReLU(), nn.Conv1d(width, width, 3, padding=1), nn.ReLU(),
        nn.Conv1d(width, width, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(width * length, num_classes),
    )


# --- the flat view -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """Where each named parameter sits in the flat vector θ ∈ R^D, and which are prunable."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    offsets: tuple[int, ...]
    prunable: tuple[bool, ...]

    @classmethod
    def of(cls, model: nn.Module) -> "Layout":
        weight_of = {id(m.weight) for m in model.modules() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))}
        names, shapes, offsets, prunable, off = [], [], [], [], 0
        for name, p in model.named_parameters():
            names.append(name)
            shapes.append(tuple(p.shape))
            offsets.append(off)
            prunable.append(id(p) in weight_of)
            off += p.numel()
        return cls(tuple(names), tuple(shapes), tuple(offsets), tuple(prunable))

    @property
    def D(self) -> int:
        return self.offsets[-1] + math.prod(self.shapes[-1]) if self.names else 0

    def unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """Views of θ [..., D] shaped as the named parameters [..., *shape] (for torch.func.functional_call;
        leading dims kept, e.g. runs stacked as [R, D]). One split, not a slice per tensor: a slice's backward
        writes its gradient into a zero-filled copy of all of θ, so slicing costs a D-sized fill and add per
        tensor per step; split's backward is one concatenation."""
        sizes = [math.prod(s) for s in self.shapes]
        return {n: t.view(*theta.shape[:-1], *s)
                for n, s, t in zip(self.names, self.shapes, theta.split(sizes, dim=-1))}

    def prunable_mask(self) -> torch.Tensor:
        """Boolean [D]: True on conv/linear weights."""
        mask = torch.zeros(self.D, dtype=torch.bool)
        for s, o, p in zip(self.shapes, self.offsets, self.prunable):
            mask[o:o + math.prod(s)] = p
        return mask

    def to_attrs(self) -> dict:
        return {"names": list(self.names), "shapes": [list(s) for s in self.shapes],
                "offsets": list(self.offsets), "prunable": list(self.prunable)}


def flatten(model: nn.Module) -> torch.Tensor:
    """θ: every trainable parameter, concatenated in named_parameters() order."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])  # reshape: also channels_last


def load_flat(model: nn.Module, theta: torch.Tensor) -> None:
    torch.nn.utils.vector_to_parameters(theta.to(next(model.parameters())), model.parameters())


def buffer_names(model: nn.Module) -> list[str]:
    """BatchNorm running statistics etc.: state that is not trained by gradient."""
    return [n for n, _ in model.named_buffers()]


def flatten_buffers(model: nn.Module) -> torch.Tensor:
    bufs = [b.detach().reshape(-1).float() for _, b in model.named_buffers()]
    return torch.cat(bufs) if bufs else torch.zeros(0)


def load_flat_buffers(model: nn.Module, flat: torch.Tensor) -> None:
    off = 0
    for _, b in model.named_buffers():
        n = b.numel()
        b.copy_(flat[off:off + n].view_as(b).to(b.dtype))
        off += n
