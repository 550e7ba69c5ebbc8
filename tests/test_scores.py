"""EL2N and GraNd per example, and the data-diet subset they choose."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sublevel import models, scores


def test_el2n_and_grand_match_one_example_at_a_time():
    torch.manual_seed(0)
    model = models.build("mlp", (1, 12), 5, widths=(7,))
    theta = models.flatten(model)
    x, y = torch.randn(23, 1, 12), torch.randint(0, 5, (23,))
    el2n, grand = scores.per_example(model, theta, models.flatten_buffers(model), x, y, chunk=8)
    for i in range(len(y)):
        model.zero_grad()
        logits = model(x[i:i + 1])
        expected = (logits.softmax(-1)[0] - F.one_hot(y[i], 5)).norm()
        F.cross_entropy(logits, y[i:i + 1]).backward()
        g = torch.cat([p.grad.flatten() for p in model.parameters()]).norm()
        assert el2n[i].item() == pytest.approx(expected.item(), rel=1e-5)
        assert grand[i].item() == pytest.approx(g.item(), rel=1e-4)


def test_summary_ranks_examples_by_mean_el2n_over_seeds():
    el2n = np.array([[[0.9, 0.1, 0.5], [0.7, 0.3, 0.5]]])  # 1 step, 2 seeds, 3 examples
    grand = np.ones_like(el2n)
    rows = scores.summary_rows("e", [7], [0, 1], el2n, grand, np.array([1, 2, 3]))
    assert [r["el2n_rank"] for r in rows] == [2, 0, 1]
    assert rows[0]["el2n"] == pytest.approx(0.8) and rows[0]["el2n_std"] == pytest.approx(0.1)
    assert {r["step"] for r in rows} == {7} and [r["label"] for r in rows] == [1, 2, 3]


def test_diet_subset_keeps_the_easiest_hardest_or_a_seeded_random_fraction():
    score = np.array([0.5, 0.1, 0.9, 0.3, 0.7, 0.2])
    assert scores.diet_subset(6, "easiest", 0.5, 0, score).tolist() == [1, 3, 5]
    assert scores.diet_subset(6, "hardest", 0.5, 0, score).tolist() == [0, 2, 4]
    r = scores.diet_subset(6, "random", 0.5, 3)
    assert len(r) == 3 and r.tolist() == scores.diet_subset(6, "random", 0.5, 3).tolist()
    assert len({tuple(scores.diet_subset(100, "random", 0.5, s)) for s in range(5)}) == 5  # the seed matters
    with pytest.raises(ValueError, match="one score per training example"):
        scores.diet_subset(6, "easiest", 0.5, 0, score[:4])
