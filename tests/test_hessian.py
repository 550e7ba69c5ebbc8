import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from sublevel import hessian, models


def exact_hessian(model, theta, x, y):
    layout = models.Layout.of(model)
    m = model.double()
    loss = lambda t: F.cross_entropy(functional_call(m, layout.unflatten(t), (x.double(),)), y)
    return torch.func.hessian(loss)(theta.double())


@pytest.mark.parametrize("widths", [(8,), (12, 6)])
def test_top_eigenvalue_matches_the_full_hessian(widths):
    torch.manual_seed(0)
    model = models.build("mlp", (1, 10), 4, widths=widths)
    theta = models.flatten(model)
    x, y = torch.randn(64, 1, 10), torch.randint(0, 4, (64,))
    exact = torch.linalg.eigvalsh(exact_hessian(models.build("mlp", (1, 10), 4, widths=widths), theta, x, y)).flip(0)
    hvp = hessian.hvp_operator(model, theta, x, y, chunk=16)  # chunks of examples sum to the full mean loss
    top = hessian.lanczos(hvp, len(theta), iterations=40, k=3)
    assert top[0].item() == pytest.approx(exact[0].item(), rel=1e-3)
    assert top[1].item() == pytest.approx(exact[1].item(), rel=1e-2)


def test_hvp_is_the_hessian_times_v():
    torch.manual_seed(1)
    model = models.build("mlp", (1, 6), 3, widths=(5,))
    theta = models.flatten(model)
    x, y = torch.randn(20, 1, 6), torch.randint(0, 3, (20,))
    H = exact_hessian(models.build("mlp", (1, 6), 3, widths=(5,)), theta, x, y)
    v = torch.randn(len(theta), dtype=torch.float64)
    assert torch.allclose(hessian.hvp_operator(model, theta, x, y, chunk=7)(v), H @ v, atol=1e-10)


def test_masked_top_eigenvalue_is_that_of_the_kept_weights_block():
    """With a pruning mask, Lanczos on P H P finds the top eigenvalue of H restricted to the kept weights."""
    torch.manual_seed(2)
    model = models.build("mlp", (1, 10), 4, widths=(8,))
    theta = models.flatten(model)
    keep = torch.rand(len(theta)) < 0.5
    theta = theta * keep
    x, y = torch.randn(48, 1, 10), torch.randint(0, 4, (48,))
    H = exact_hessian(models.build("mlp", (1, 10), 4, widths=(8,)), theta, x, y)
    block = H[keep][:, keep]
    exact = torch.linalg.eigvalsh(block).flip(0)
    top = hessian.top_eigenvalues(model, theta, x, y, iterations=40, k=2, mask=keep)
    assert top[0].item() == pytest.approx(exact[0].item(), rel=1e-3)
    full = torch.linalg.eigvalsh(H)[-1].item()
    assert top[0].item() <= full + 1e-9  # interlacing: a principal block is never sharper
