import pytest
import torch

from sublevel import models, pruning


@pytest.fixture
def layout():
    torch.manual_seed(0)
    return models.Layout.of(models.build("mlp", (1, 40), 10, widths=(30, 20)))  # weights 1200, 600, 200


def test_sparsity_after_l_levels_is_one_minus_keep_to_the_l(layout):
    w = torch.randn(layout.D)
    mask = pruning.full_mask(layout)
    for level in range(1, 8):
        mask = pruning.prune(w, mask, layout, 0.2)
        s, remaining = pruning.sparsity(mask, layout)
        assert s == pytest.approx(1 - 0.8 ** level, abs=1 / 2000 * level)
        assert remaining == int(mask[layout.prunable_mask()].sum())
    assert mask[~layout.prunable_mask()].all()  # biases are never pruned


def test_global_ranks_all_layers_together_layerwise_each_layer(layout):
    w = torch.randn(layout.D) * 0.01
    first = slice(layout.offsets[0], layout.offsets[0] + 1200)
    w[first] = 10 + torch.rand(1200)  # the first layer's weights are all large
    full = pruning.full_mask(layout)
    glob = pruning.prune(w, full, layout, 0.5, "global")
    lay = pruning.prune(w, full, layout, 0.5, "layerwise")
    assert pruning.counts(glob, layout) == [1000, 0, 0]   # the 1000 kept are the largest: all in the first layer
    assert pruning.counts(lay, layout) == [600, 300, 100]   # half of each layer
    # the survivors are the largest magnitudes of their group
    kept, dropped = w[lay & layout.prunable_mask()][:600].abs(), w[first][~lay[first]].abs()
    assert kept.min() >= dropped.max()


def test_output_layer_at_its_own_rate(layout):
    w = torch.randn(layout.D)
    mask = pruning.prune(w, pruning.full_mask(layout), layout, 0.2, "global", output_fraction=0.1)
    c = pruning.counts(mask, layout)
    assert c[-1] == 180 and c[0] + c[1] == 1800 - 360


def test_matched_masks_keep_the_same_per_layer_counts(layout):
    w = torch.randn(layout.D)
    ticket = pruning.prune(w, pruning.full_mask(layout), layout, 0.6, "global")
    scores = torch.rand(layout.D)
    m = pruning.matched(scores, ticket, layout)
    assert pruning.counts(m, layout) == pruning.counts(ticket, layout)
    assert m[~layout.prunable_mask()].all() and not torch.equal(m, ticket)
    # magnitude-matched with the ticket's own scores reproduces a layerwise ranking at those counts
    again = pruning.matched(w.abs(), ticket, layout)
    assert pruning.counts(again, layout) == pruning.counts(ticket, layout)
