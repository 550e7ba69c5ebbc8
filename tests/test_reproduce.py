import csv
import json
import subprocess
import sys

import pytest

from sublevel import catalog, paths, reproduce, schema, storage

COLUMNS = schema.TARGETS.schema.names


def write_rows(project, name, rows, **partitions):
    """Rows of table `name` with every column the schema has (unset: null)."""
    full = [{c: r.get(c) for c in schema.TABLES[name].schema.names} for r in rows]
    storage.write_table(name, full, project / paths.table(name, **partitions))


def target(over=None, /, **values):
    values = {**(over or {}), **values}
    base = dict(target="t", paper="P", source="Table 1", preset="config/x.yaml", experiment="e",
                quantity="d_int90", kind="random", burnin_step=0, published=100.0, tolerance=1.5,
                tolerance_type="ratio", tolerance_basis="the paper's spread")
    return {c: {**base, **values}.get(c) for c in COLUMNS}


def write_targets(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows([{k: "" if v is None else v for k, v in r.items()} for r in rows])
    return path


def test_the_shipped_targets_have_the_schema_and_pass_the_checks():
    table = reproduce.read_targets()
    assert table.schema.equals(schema.TARGETS.schema)
    rows = table.to_pylist()
    assert rows and len({r["target"] for r in rows}) == len(rows)
    for r in rows:
        assert r["quantity"] in reproduce.MEASURES and r["tolerance_basis"]
        assert r["preset"].startswith("config/") and r["paper"] and r["source"]


def test_every_target_names_a_preset_that_defines_its_experiment_and_quantity(root):
    from sublevel import config

    for t in reproduce.read_targets().to_pylist():
        cfg = config.load(root / t["preset"])  # validated through the schema, as snakemake does
        assert t["experiment"] in cfg["experiments"], t["target"]
        exp = config.experiment(cfg, t["experiment"])
        if t["quantity"] in ("d_int90", "d_star"):
            assert exp.subspace and t["kind"] in exp.subspace.kinds, t["target"]
        if t["quantity"] in ("highest_matching_sparsity", "imp_test_accuracy", "barrier"):
            assert exp.imp, t["target"]
        if t["level"] is not None:  # a level the chains reach, and its barrier is one the preset computes
            assert 0 <= t["level"] <= exp.imp.levels, t["target"]
        if t["quantity"] == "barrier":
            assert t["kind"] in ("instability", "imp_successive") and (t["kind"] != "instability" or exp.imp.instability)


@pytest.mark.parametrize("change, message", [
    (dict(quantity="accuracy"), "unknown quantity 'accuracy'"),
    (dict(kind=None), r"needs \['kind'\]"),
    (dict(quantity="d_star", metric="train_accuracy"), r"needs \['threshold'\]"),
    (dict(tolerance_type="relative"), "tolerance_type must be one of"),
    (dict(tolerance=0.5), "a ratio tolerance is at least 1"),
    (dict(tolerance_basis=None), "say what the tolerance rests on"),
    (dict(published=None), "no published value"),
])
def test_a_bad_target_is_refused_with_its_id(tmp_path, change, message):
    path = write_targets(tmp_path / "targets.csv", [target(target="bad", **change)])
    with pytest.raises(ValueError, match=f"'bad'.*{message}"):
        reproduce.read_targets(path)


def test_duplicate_ids_and_wrong_columns_are_refused(tmp_path):
    with pytest.raises(ValueError, match="appears twice"):
        reproduce.read_targets(write_targets(tmp_path / "a.csv", [target(), target()]))
    (tmp_path / "b.csv").write_text("target,paper\nx,y\n")
    with pytest.raises(ValueError, match="columns"):
        reproduce.read_targets(tmp_path / "b.csv")


@pytest.fixture
def measured(project, tmp_path):
    """Synthetic results with known answers, and targets on them: one per status and per quantity."""
    thr = dict(experiment="e", burnin_step=0, metric="test_accuracy", threshold=0.8, num_params=1000, n_seeds=5,
               d_min=2, d_max=512, censored="none")
    write_rows(project, "threshold", [
        dict(thr, kind="random", d_star=300.0, d_star_lo=250.0, d_star_hi=380.0, d_int90=120),
        dict(thr, kind="burnin", burnin_step=40, d_star=None, censored="anchor", anchor_value=0.85, d_int90=None),
        dict(thr, kind="lottery", d_star=None, censored="above", d_int90=None),
    ], experiment="e")
    sub = dict(experiment="e", kind="random", burnin_step=0, round=0, seed=0)
    for d in (60, 90, 120, 200):  # d_int90's bracket: the tested d below 120 is 90
        write_rows(project, "subspace", [dict(sub, d=d)], experiment="e", kind="random", burnin_step=0, round=0, d=d)
    last = dict(experiment="e", split="test", diverged=False, device="cpu")
    write_rows(project, "train", [dict(last, seed=0, step=100, accuracy=0.970), dict(last, seed=0, step=50, accuracy=0.5),
                                  dict(last, seed=1, step=100, accuracy=0.975),
                                  dict(last, seed=2, step=30, accuracy=0.1, diverged=True)], experiment="e", seed=0)
    imp = dict(experiment="e", method="imp", diverged=False, rewind_step=0)
    write_rows(project, "imp", [dict(imp, seed=0, level=0, sparsity=0.0, test_accuracy=0.980),
                                dict(imp, seed=0, level=1, sparsity=0.2, test_accuracy=0.985),
                                dict(imp, seed=0, level=2, sparsity=0.36, test_accuracy=0.975),
                                dict(imp, seed=0, level=3, sparsity=0.488, test_accuracy=0.960),
                                dict(imp, seed=1, level=0, sparsity=0.0, test_accuracy=0.980),
                                dict(imp, seed=1, level=1, sparsity=0.2, test_accuracy=0.960),
                                dict(imp, seed=1, level=2, sparsity=0.36, test_accuracy=0.965),
                                dict(imp, seed=1, level=2, sparsity=0.36, test_accuracy=0.5, method="random_reinit")],
               experiment="e", rewind_step=0, seed=0, stage="imp", level=0)
    # a second rewind point's chain: measured on its own, and left out of every rewind-0 target above
    later = dict(imp, rewind_step=5, seed=0)
    write_rows(project, "imp", [dict(later, level=0, sparsity=0.0, test_accuracy=0.980),
                                dict(later, level=1, sparsity=0.2, test_accuracy=0.99),
                                dict(later, level=2, sparsity=0.36, test_accuracy=0.5),
                                dict(later, level=3, sparsity=0.488, test_accuracy=0.99),
                                dict(later, level=4, sparsity=0.59, test_accuracy=0.95)],
               experiment="e", rewind_step=5, seed=0, stage="imp", level=0)
    every = dict(experiment="f", method="imp", diverged=False, seed=0, rewind_step=0)  # matches down to its sparsest level
    write_rows(project, "imp", [dict(every, level=0, sparsity=0.0, test_accuracy=0.980),
                                dict(every, level=1, sparsity=0.2, test_accuracy=0.985),
                                dict(every, level=2, sparsity=0.36, test_accuracy=0.975)],
               experiment="f", rewind_step=0, seed=0, stage="imp", level=0)
    # a chain whose experiment sets imp.matching_tolerance: 0.05, as its rows say (the rows above hold none, as
    # files written before the column: the schema's 0.01)
    loose = dict(experiment="g", method="imp", diverged=False, seed=0, rewind_step=0, matching_tolerance=0.05)
    write_rows(project, "imp", [dict(loose, level=0, sparsity=0.0, test_accuracy=0.980),
                                dict(loose, level=1, sparsity=0.2, test_accuracy=0.950),
                                dict(loose, level=2, sparsity=0.36, test_accuracy=0.900)],
               experiment="g", rewind_step=0, seed=0, stage="imp", level=0)
    bar = dict(experiment="e", kind="instability", level=2, split="test", rewind_step=0)
    write_rows(project, "barrier", [dict(bar, seed=0, barrier=0.10), dict(bar, seed=1, barrier=0.20),
                                    dict(bar, seed=1, barrier=0.9, split="train")],
               experiment="e", rewind_step=0, seed=0, kind="instability", level=2)
    write_rows(project, "barrier", [dict(bar, seed=0, barrier=0.9, rewind_step=5)],
               experiment="e", rewind_step=5, seed=0, kind="instability", level=2)
    targets = [
        target(target="dint_within", published=100.0),                                  # 120 / 100 = 1.2 <= 1.5
        target(target="dint_outside", published=60.0),                                  # 120 / 60 = 2 > 1.5
        target(target="dint_no_tol", published=290.0, tolerance=None, tolerance_type=None, tolerance_basis="none"),
        target(target="dint_not_reached", kind="lottery"),
        target(target="dstar", quantity="d_star", metric="test_accuracy", threshold=0.8, published=280.0,
               tolerance=30.0, tolerance_type="absolute"),
        target(target="dstar_anchor", quantity="d_star", kind="burnin", burnin_step=40, metric="test_accuracy",
               threshold=0.8),
        target(target="dense", quantity="dense_test_accuracy", kind=None, published=0.98, tolerance=0.005,
               tolerance_type="absolute"),
        target(target="matching", quantity="highest_matching_sparsity", kind=None, published=0.2, tolerance=0.05,
               tolerance_type="absolute"),
        target(target="imp_acc", quantity="imp_test_accuracy", kind="imp", level=2, published=0.97,
               tolerance=0.01, tolerance_type="absolute"),
        target(target="barrier", quantity="barrier", kind="instability", level=2, published=0.12, tolerance=0.05,
               tolerance_type="absolute"),
        target(target="absent", experiment="never_run"),
        target(target="matching_bound", experiment="f", quantity="highest_matching_sparsity", kind=None,
               burnin_step=None, published=0.35, tolerance=0.05,
               tolerance_type="absolute"),   # >= 0.36: could still be within; no rewind step: every chain
        target(target="matching_bound_beyond", experiment="f", quantity="highest_matching_sparsity", kind=None,
               published=0.2, tolerance=0.05, tolerance_type="absolute"),    # >= 0.36: beyond 0.2 + 0.05
        target(target="matching_rewind5", quantity="highest_matching_sparsity", kind=None, burnin_step=5,
               published=0.5, tolerance=0.1, tolerance_type="absolute"),
        target(target="imp_acc_rewind5", quantity="imp_test_accuracy", kind="imp", level=2, burnin_step=5,
               published=0.97, tolerance=0.01, tolerance_type="absolute"),
        target(target="matching_own_tolerance", experiment="g", quantity="highest_matching_sparsity", kind=None,
               published=0.2, tolerance=0.05, tolerance_type="absolute"),
    ]
    return project, write_targets(tmp_path / "targets.csv", targets)


def test_each_target_is_measured_and_judged_as_computed_by_hand(measured):
    project, targets = measured
    con = catalog.connect(project, targets)
    got = {r["target"]: r for r in con.sql("select * from reproduction").pl().iter_rows(named=True)}
    assert len(got) == 16
    expect = {  # target: (measured, lo, hi, n, status)
        "dint_within": (120.0, 90.0, 120.0, 5, "within"),
        "dint_outside": (120.0, 90.0, 120.0, 5, "outside"),
        "dint_no_tol": (120.0, 90.0, 120.0, 5, "no tolerance"),
        "dint_not_reached": (None, None, None, 5, "not reached"),
        "dstar": (300.0, 250.0, 380.0, 5, "within"),                      # |300 - 280| = 20 <= 30
        "dstar_anchor": (None, None, None, 5, "censored"),
        "dense": (0.9725, 0.970, 0.975, 2, "outside"),                     # last step only, diverged seed left out
        "matching": (0.18, 0.0, 0.36, 2, "within"),                        # seed 0: 0.36; seed 1: only level 0
        "imp_acc": (0.97, 0.965, 0.975, 2, "within"),                      # the baseline row is not IMP
        "barrier": (0.15, 0.10, 0.20, 2, "within"),                        # test split only
        "absent": (None, None, None, None, "not run"),
        "matching_bound": (0.36, 0.36, 0.36, 1, "censored"),
        "matching_bound_beyond": (0.36, 0.36, 0.36, 1, "outside"),
        "matching_rewind5": (0.488, 0.488, 0.488, 1, "within"),            # the rewind-5 chain alone
        "imp_acc_rewind5": (0.5, 0.5, 0.5, 1, "outside"),
        "matching_own_tolerance": (0.2, 0.2, 0.2, 1, "within"),            # 0.95 >= 0.98 - 0.05; 0.90 is not
    }
    for name, (m, lo, hi, n, status) in expect.items():
        r = got[name]
        assert r["status"] == status, name
        for key, want in (("measured", m), ("measured_lo", lo), ("measured_hi", hi)):
            assert (r[key] is None) if want is None else r[key] == pytest.approx(want), (name, key)
        if status != "not run":
            assert r["n_runs"] == n, name
    assert got["dint_outside"]["ratio"] == pytest.approx(2.0) and got["dstar"]["difference"] == pytest.approx(20.0)
    assert got["dstar_anchor"]["censored"] == "anchor"
    assert got["matching"]["censored"] == "none" and got["matching_bound"]["censored"] == "sparsest"


def test_sublevel_reproduce_lists_every_shipped_target_and_writes_the_markdown_page(project):
    """As a user types it, on a project with no results yet: every target is listed, as not run."""
    def run(*args):
        return subprocess.run([sys.executable, "-m", "sublevel", "reproduce", *args], cwd=project,
                              capture_output=True, text=True)

    shipped = reproduce.read_targets().to_pylist()
    rows = json.loads(run("--format", "json").stdout)
    assert sorted(r["target"] for r in rows) == sorted(t["target"] for t in shipped)
    assert {r["status"] for r in rows} == {"not run"}
    table = run()
    assert table.returncode == 0 and all(t["target"] in table.stdout for t in shipped)
    printed = run("--format", "markdown")   # printed: no file changes unless one is named
    assert printed.returncode == 0 and printed.stdout.startswith("# Reproductions")
    assert not (project / "docs").exists()
    done = run("--format", "markdown", "--out", "docs/results.md")
    assert done.returncode == 0 and f"{len(shipped)} not run" in done.stdout
    page = (project / "docs" / "results.md").read_text()
    assert page.split("\n")[3:] == printed.stdout.split("\n")[3:]  # the same page below its dated header line
    assert page.startswith("# Reproductions") and "at commit unknown (not a git checkout)" in page
    assert all(f"| {t['target']} |" in page for t in shipped)
    via_sql = subprocess.run([sys.executable, "-m", "sublevel", "query", "select count(*) as n from targets",
                              "--format", "json"], cwd=project, capture_output=True, text=True)
    assert json.loads(via_sql.stdout) == [{"n": len(shipped)}]


def test_the_markdown_shows_measured_published_and_the_verdict(measured):
    project, targets = measured
    con = catalog.connect(project, targets)
    frame = con.sql("select * from reproduction order by paper, target").pl()
    page = reproduce.markdown(frame, "# H")
    line = next(x for x in page.splitlines() if x.startswith("| dint_outside |"))
    assert "| 60 | 120 |" in line and "outside, 2.000x published" in line and "x1.5: the paper's spread" in line
    assert "censored (anchor)" in next(x for x in page.splitlines() if x.startswith("| dstar_anchor |"))
    assert "- dint_outside misses: 120 against 60 is a factor 2.000, beyond the tolerance's 1.5 by 0.500." in page
    assert "- dense misses: 0.9725 against 0.98 differs by 0.0075, beyond the tolerance's 0.005 by 0.0025." in page
    beyond = next(x for x in page.splitlines() if x.startswith("| matching_bound_beyond |"))
    assert "outside (a lower bound)" in beyond
    assert ("- matching_bound_beyond misses: at least 0.36 (the chains still match at their sparsest level) "
            "against 0.2: at least 0.16 above, beyond the tolerance's 0.05 by at least 0.11.") in page
    assert "censored (sparsest)" in next(x for x in page.splitlines() if x.startswith("| matching_bound |"))


def test_larsens_claims_are_measured_over_an_experiments_sweeps_and_judged_one_sided(project, tmp_path):
    """Each claim's measure on a hand-made threshold, success and theory table, computed by hand below."""
    th = dict(experiment="L", num_params=20000, n_seeds=4, d_min=2, d_max=4096)
    d_stars = [  # (kind, t, metric, ε, d*, censored)
        ("random", 0, "train_accuracy", 0.8, 1000.0, "none"), ("random", 0, "train_accuracy", 0.9, 2000.0, "none"),
        ("burnin", 16, "train_accuracy", 0.8, 500.0, "none"), ("burnin", 16, "train_accuracy", 0.9, 400.0, "none"),
        ("burnin", 256, "train_accuracy", 0.8, None, "anchor"), ("burnin", 256, "train_accuracy", 0.9, 300.0, "none"),
        ("lottery", 0, "train_accuracy", 0.8, 20.0, "none"), ("lottery", 0, "train_accuracy", 0.9, None, "above"),
        ("random", 0, "train_loss", 0.5, 1200.0, "none"), ("burnin", 16, "train_loss", 0.5, 600.0, "none"),
        ("burnin", 256, "train_loss", 0.5, None, "anchor"),
    ]
    write_rows(project, "threshold", [dict(th, kind=k, burnin_step=t, metric=m, threshold=e, d_star=d, censored=c)
                                      for k, t, m, e, d, c in d_stars], experiment="L")
    success = [("random", 0, 0.8, {256: 0.0, 512: 0.05, 1024: 0.5, 2048: 1.0}),  # 0.1 -> 0.9 within 512 -> 2048: 4
               ("lottery", 0, 0.8, {8: 0.0, 16: 0.1, 32: 1.0}),                  # 16 -> 32: 2
               ("lottery", 0, 0.9, {8: 0.0, 16: 0.25, 32: 0.5})]                 # never 0.9: no factor
    write_rows(project, "success", [dict(experiment="L", kind=k, burnin_step=t, metric="train_accuracy", threshold=e,
                                         d=d, p_success=p, n_runs=4) for k, t, e, ps in success for d, p in ps.items()],
               experiment="L")
    write_rows(project, "theory", [dict(experiment="L", kind="random", burnin_step=0, metric="train_loss", threshold=0.5,
                                        d_star_bound=1500.0),   # above the measured 1200: holds
                                   dict(experiment="L", kind="burnin", burnin_step=16, metric="train_loss",
                                        threshold=0.5, d_star_bound=550.0),  # below 600: fails
                                   dict(experiment="L", kind="burnin", burnin_step=256, metric="train_loss",
                                        threshold=0.5, d_star_bound=90.0)],  # the anchor is censored: not judged
               experiment="L")
    claim = dict(experiment="L", kind=None, burnin_step=None, tolerance=0.0, tolerance_basis="the paper's claim")
    targets = write_targets(tmp_path / "targets.csv", [
        target(target="sharp", quantity="transition_factor", published=4.0, tolerance_type="at_most", **claim),
        target(target="sharper", quantity="transition_factor", published=3.0, tolerance_type="at_most", **claim),
        target(target="rises", quantity="dstar_rises_as_the_set_tightens", published=1.0, tolerance_type="at_least",
               **claim),
        target(target="falls", quantity="dstar_falls_with_burnin", published=1.0, tolerance_type="at_least", **claim),
        target(target="order", quantity="dstar_lottery_burnin_random_order", published=1.0,
               tolerance_type="at_least", **claim),
        target(target="bound", quantity="bound_above_measured", published=1.0, tolerance_type="at_least", **claim),
        target(target="unrun", quantity="bound_above_measured", published=1.0, tolerance_type="at_least",
               **dict(claim, experiment="other")),
    ])
    got = {r["target"]: r for r in catalog.connect(project, targets).sql("select * from reproduction").pl()
           .iter_rows(named=True)}
    expect = {  # measured, n, status
        "sharp": (4.0, 2, "within"), "sharper": (4.0, 2, "outside"),
        "rises": (3 / 4, 4, "outside"),    # burn-in 16: 400 at 0.9 below 500 at 0.8
        "falls": (6 / 6, 6, "within"),     # 1000 > 500 > 0 (anchor), 2000 > 400 > 300, 1200 > 600 > 0
        "order": (6 / 9, 9, "outside"),    # lottery `above` at 0.9, x3; the t = 256 anchors have no pair
        "bound": (1 / 2, 2, "outside"),
    }
    for name, (m, n, status) in expect.items():
        assert got[name]["measured"] == pytest.approx(m), name
        assert got[name]["n_runs"] == n and got[name]["status"] == status, name
    assert got["sharp"]["measured_lo"] == pytest.approx(2.0)
    assert got["unrun"]["status"] == "not run"
    page = reproduce.markdown(catalog.connect(project, targets).sql("select * from reproduction").pl(), "# R")
    assert "| holds |" in page and "| fails |" in page and "- order misses: 0.6667 lies below the claim's 1" in page


def test_frankle_and_carbins_criteria_are_read_at_the_early_stopping_point(project, tmp_path):
    """Synthetic chains with known answers. Dense early-stop test accuracy 0.980 and 0.970: the bar is their
    mean less their sample std, 0.975 - 0.00707 = 0.9679, so level 2 (mean 0.970) matches where a bar at the
    mean would refuse it, and level 3 (0.9625) does not. Early-stop steps fall to level 2 (remaining 0.64) and
    rise again; random reinitialisation is slower at 3 of the 4 levels. A diverged run and a run without a
    curve are left out. Experiment h is still fastest at its last level: censored."""
    rows = []
    imp_row = dict(experiment="g", diverged=False, rewind_step=0)
    spars = [0.0, 0.2, 0.36, 0.488, 0.59]
    acc = {0: (0.980, 0.970), 1: (0.985, 0.975), 2: (0.975, 0.965), 3: (0.96, 0.965), 4: (0.95, 0.95)}
    steps = {0: (1000, 1200), 1: (800, 900), 2: (600, 700), 3: (700, 800), 4: (900, 1000)}
    reinit = {1: (900, 1000), 2: (500, 700), 3: (1000, 1000), 4: (1200, 1200)}
    for level, s in enumerate(spars):
        for seed in (0, 1):
            rows.append(dict(imp_row, method="imp", seed=seed, level=level, sparsity=s, test_accuracy=0.5,
                             early_stop_step=steps[level][seed], early_stop_test_accuracy=acc[level][seed]))
            if level:
                rows.append(dict(imp_row, method="random_reinit", seed=seed, level=level, sparsity=s,
                                 early_stop_step=reinit[level][seed], early_stop_test_accuracy=0.9))
    rows.append(dict(imp_row, method="imp", seed=2, level=2, sparsity=0.36, diverged=True, early_stop_step=1,
                     early_stop_test_accuracy=0.0))
    rows.append(dict(imp_row, method="imp", seed=3, level=3, sparsity=0.488))   # no curve recorded
    write_rows(project, "imp", rows, experiment="g", rewind_step=0, seed=0, stage="imp", level=0)
    h = dict(experiment="h", method="imp", diverged=False, rewind_step=0, seed=0, early_stop_test_accuracy=0.9)
    write_rows(project, "imp", [dict(h, level=0, sparsity=0.0, early_stop_step=900),
                                dict(h, level=1, sparsity=0.2, early_stop_step=500)],
               experiment="h", rewind_step=0, seed=0, stage="imp", level=0)
    es = dict(experiment="g", kind=None, tolerance_type="absolute")
    targets = write_targets(tmp_path / "targets.csv", [
        target(es, target="match", quantity="matching_sparsity_at_early_stop", published=0.36, tolerance=0.01),
        target(es, target="fast", quantity="fastest_learning_remaining", published=0.6, tolerance=0.05),
        target(es, target="slow", quantity="reinit_learns_slower", published=1.0, tolerance=0.0,
               tolerance_type="at_least"),
        target(es, target="fast_h", experiment="h", quantity="fastest_learning_remaining", published=0.8,
               tolerance=0.05),
    ])
    got = {r["target"]: r for r in catalog.connect(project, targets).sql("select * from reproduction").pl()
           .iter_rows(named=True)}
    expect = {"match": (0.36, 0.36, 0.488, 2, "within", "none"),
              "fast": (0.64, 0.512, 0.8, 2, "within", "none"),
              "slow": (0.75, None, None, 4, "outside", None),
              "fast_h": (0.8, None, 1.0, 1, "censored", "last_level")}
    for name, (m, lo, hi, n, status, censored) in expect.items():
        r = got[name]
        assert (r["status"], r["censored"], r["n_runs"]) == (status, censored, n), name
        for key, want in (("measured", m), ("measured_lo", lo), ("measured_hi", hi)):
            assert (r[key] is None) if want is None else r[key] == pytest.approx(want), (name, key)
