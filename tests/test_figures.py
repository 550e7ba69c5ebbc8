"""Figures stay legible at the presets' sizes."""

from __future__ import annotations

import polars as pl

from sublevel import figures


def test_twenty_imp_levels_label_at_most_eight_ticks_dense_and_sparsest_included():
    pct = [100 * 0.8 ** level for level in range(21)]  # 20 levels at 20% per level: 100% ... 1.15%
    ticks = figures.level_ticks(pct)
    assert len(ticks) <= 8 and ticks[0] == 100.0 and ticks[-1] == round(pct[-1], 1)
    assert ticks == sorted(ticks, reverse=True)
    assert figures.level_ticks(pct[:5]) == [round(p, 1) for p in pct[:5]]  # few levels: every one


def test_imp_accuracy_renders_twenty_levels(tmp_path):
    rows = [dict(experiment="e", method=m, level=lv, seed=0, remaining=int(1000 * 0.8 ** lv), prunable=1000,
                 test_accuracy=0.9 - 0.01 * lv) for m in ("imp", "random_prune") for lv in range(21)
            if not (m == "random_prune" and lv == 0)]
    out = tmp_path / "imp_accuracy.png"
    figures.imp_accuracy(pl.DataFrame(rows), out)
    assert out.read_bytes()[:4] == b"\x89PNG"
