import subprocess
import sys

import pytest
import torch
import yaml

from sublevel.optimizers import KINDS, Optimizer

CASES = [
    ("sgd", dict(lr=0.1), dict(lr=0.1)),
    ("sgd", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
     dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)),
    ("adam", dict(lr=1e-2), dict(lr=1e-2)),
    ("adam", dict(lr=3e-3, betas=(0.8, 0.99), weight_decay=1e-2), dict(lr=3e-3, betas=(0.8, 0.99), weight_decay=1e-2)),
]


@pytest.mark.parametrize("kind, ours, theirs", CASES)
def test_each_step_equals_the_torch_class_including_an_lr_change_and_a_parameter_without_gradient(kind, ours, theirs):
    gen = torch.Generator().manual_seed(0)
    init = [torch.randn(5, 3, generator=gen), torch.randn(3, generator=gen), torch.randn(2, generator=gen)]
    a = [t.clone().requires_grad_() for t in init]
    b = [t.clone().requires_grad_() for t in init]
    opt_a = Optimizer(kind, a, **ours)
    opt_b = (torch.optim.SGD if kind == "sgd" else torch.optim.Adam)(b, fused=True, **theirs)
    x = torch.randn(8, 5, generator=gen)
    for step in range(6):
        for params, opt in ((a, opt_a), (b, opt_b)):
            if step == 3:
                for g in opt.param_groups:
                    g["lr"] = g["lr"] * 0.5
            opt.zero_grad(set_to_none=True)
            ((x @ params[0] + params[1]).tanh().pow(2).sum()).backward()  # params[2] gets no gradient
            opt.step()
        for p, q in zip(a, b):
            assert torch.equal(p, q), (kind, step)
    assert a[2].grad is None and torch.equal(a[2], init[2])  # untouched, as the class leaves it
    assert set(opt_a.state[a[0]]) == set(opt_b.state[b[0]])  # the names the subspace loop masks


def test_kinds_are_the_schemas_and_an_unknown_one_is_named(root):
    schema = yaml.safe_load((root / "workflow" / "schemas" / "config.schema.yaml").read_text())
    def enums(node):  # every `optimizer:` enum in the schema, wherever its section sits
        if isinstance(node, dict):
            if "enum" in node.get("properties", {}).get("optimizer", {}):
                yield tuple(node["properties"]["optimizer"]["enum"])
            for value in node.values():
                yield from enums(value)
        elif isinstance(node, list):
            for value in node:
                yield from enums(value)

    found = list(enums(schema))
    assert len(found) == 2 and set(found) == {KINDS}  # train.optimizer and subspace.optimizer
    with pytest.raises(ValueError, match="'lbfgs'"):
        Optimizer("lbfgs", [torch.zeros(1)], lr=1.0)


def test_training_steps_without_importing_dynamo():
    """The point of the module: a job that trains does not pay torch._dynamo's import."""
    code = ("import sys, torch\nfrom sublevel.optimizers import Optimizer\n"
            "w = torch.zeros(3, requires_grad=True)\nfor kind in ('sgd', 'adam'):\n"
            "    opt = Optimizer(kind, [w], lr=0.1, momentum=0.9)\n"
            "    (w - 1).pow(2).sum().backward(); opt.step(); opt.zero_grad()\n"
            "print('torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
