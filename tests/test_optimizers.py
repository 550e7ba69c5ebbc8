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


def test_constant_correction_adam_follows_the_released_codes_update_formula():
    """Larsen et al.'s subspace Adam (degrees-of-freedom, burn_in_subspace.py), written out in float64 numpy:
    mass = b1 mass + (1-b1) g; velocity = b2 velocity + (1-b2) g^2; theta -= lr / (sqrt(velocity/(1-b2)) + 1e-7)
    * mass/(1-b1). Six steps on a quadratic whose gradient we compute by hand, one coordinate masked as
    diverged (its moments zeroed) from step 3, as the subspace loop does."""
    import numpy as np

    lr, b1, b2 = 0.05, 0.9, 0.999
    A = np.array([[3.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.2, 0.1]])
    w = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64, requires_grad=True)
    opt = Optimizer("adam_constant_correction", [w], lr=lr)
    theta, mass, velocity = np.array([1.0, -2.0, 0.5]), np.zeros(3), np.zeros(3)
    for step in range(6):
        opt.zero_grad()
        (0.5 * w @ torch.from_numpy(A) @ w).backward()
        g = A @ theta
        assert np.allclose(w.grad.numpy(), g)
        if step >= 3:  # the loop's mask of a diverged run: no gradient, no moment, so no move
            w.grad[2] = 0
            opt.state[w]["exp_avg"][2] = 0
            g[2], mass[2] = 0, 0
        opt.step()
        mass = b1 * mass + (1 - b1) * g
        velocity = b2 * velocity + (1 - b2) * g**2
        theta = theta - lr / (np.sqrt(velocity / (1 - b2)) + 1e-7) * (mass / (1 - b1))
        np.testing.assert_allclose(w.detach().numpy(), theta, rtol=1e-12, atol=1e-14)
    frozen = theta[2]
    assert w[2].item() == frozen


def test_constant_correction_steps_differ_from_pytorch_adam_by_the_bias_correction_ratio():
    """The ratio the released code's step bears to PyTorch Adam's at the same lr, for a constant gradient:
    sqrt(1 - b2) / (1 - b1) * (1 - b1^t) / sqrt(1 - b2^t): 1 at step 1, 2.06 at step 10 (not a constant, so no
    lr makes the two optimisers agree)."""
    steps = {}
    for kind in ("adam", "adam_constant_correction"):
        w = torch.zeros(1, dtype=torch.float64, requires_grad=True)
        opt, moved = Optimizer(kind, [w], lr=1e-3), []
        for _ in range(10):
            before = w.item()
            opt.zero_grad()
            w.sum().backward()  # gradient 1 every step
            opt.step()
            moved.append(before - w.item())
        steps[kind] = moved
    for t, (a, c) in enumerate(zip(steps["adam"], steps["adam_constant_correction"]), start=1):
        assert c / a == pytest.approx(0.001**0.5 / 0.1 * (1 - 0.9**t) / (1 - 0.999**t) ** 0.5, rel=1e-5)
    assert steps["adam_constant_correction"][0] / steps["adam"][0] == pytest.approx(1.0, abs=1e-3)
    assert steps["adam_constant_correction"][9] / steps["adam"][9] == pytest.approx(2.06, abs=0.01)
