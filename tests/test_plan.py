"""The workflow's planning (sublevel.plan) without Snakemake: which outputs, which inputs, which figures."""

import json
from types import SimpleNamespace

import pytest

from sublevel import cli, config, figures, paths, schema
from sublevel.plan import Plan
from sublevel.stages import for_stage
from conftest import REWINDS


@pytest.fixture(scope="module")
def plan(smoke_config):
    cfg = json.loads(json.dumps(smoke_config))
    cfg["experiments"]["rewinds"] = REWINDS
    cfg["experiments"]["dense_only"] = {"dataset": "mnist1d", "model": {"name": "mlp", "widths": [8]}, "seeds": [3]}
    return Plan(config.validate(cfg))


def test_every_output_is_planned_once(plan):
    outputs = plan.dense_outputs() + plan.imp_outputs() + plan.subspace_outputs() + plan.analysis_outputs()
    assert len(outputs) == len(set(outputs))
    assert set(plan.result_tables()) <= set(outputs)
    assert all(f.endswith(".parquet") for f in plan.result_tables())


def test_an_experiment_without_a_section_plans_nothing_of_it(plan):
    assert plan.having("imp_level") == ["rewinds", "smoke"] and plan.having("subspace_sweep") == ["smoke"]
    assert plan.having("hessian_imp") == ["rewinds", "smoke"] and plan.having("data_diet") == []
    assert plan.trajectories("dense_only") == [str(paths.trajectory("dense_only", 3))]
    # the dense training curves are every experiment's; nothing else is dense_only's
    assert plan.figures("dense_only") == ["train_curves"] and plan.hessian_tables("dense_only") == []
    assert plan.scores_store("dense_only") == [] and plan.scores_store("smoke") == [str(paths.scores_store("smoke"))]
    assert [f for f in plan.imp_outputs() + plan.analysis_outputs() if "dense_only" in f] == [
        str(paths.figure("dense_only", "train_curves", fmt)) for fmt in ("png", "svg")]
    # rewinds has imp and hessian but no subspace or scores: only the figures those allow
    assert plan.figures("rewinds") == ["train_curves", "imp_accuracy", "imp_barrier", "sharpness"]
    # smoke has every section but no imp.eval_every (no validation curves): every figure but early stopping's
    assert plan.figures("smoke") == [f for f in schema.FIGURES if f != "imp_early_stop"]


def test_one_figure_registry_names_the_cli_choices_the_drawings_and_each_figures_inputs(plan):
    figure = cli.parser()._subparsers._group_actions[0].choices["figure"]
    name = next(a for a in figure._actions if a.dest == "name")
    assert list(name.choices) == list(schema.FIGURES) == list(figures.DRAW)
    for f in plan.figures("smoke"):
        tables = plan.figure_tables("smoke", f)
        assert tuple(tables) == schema.FIGURES[f].tables and all(tables.values())


def test_imp_tables_per_rewind_step_partition_the_experiments(plan):
    both = plan.imp_tables("rewinds")
    steps = plan.rewind_steps("rewinds")
    assert steps == (0, 5)
    parts = [plan.imp_tables("rewinds", k) for k in steps]
    for table in ("imp", "barrier"):
        assert sorted(f for p in parts for f in p[table]) == sorted(both[table])
        assert all(f"rewind_step={k}/" in f for k, p in zip(steps, parts) for f in p[table])
    exp = plan.experiment("rewinds").imp
    imp_rows = [f for f in both["imp"] if "stage=imp/" in f]
    assert len(imp_rows) == len(steps) * len(exp.seeds) * (exp.levels + 1)
    # a baseline at every level but the dense one, one method each
    assert len(both["imp"]) - len(imp_rows) == len(steps) * len(exp.seeds) * exp.levels * len(exp.baselines)


def test_a_chain_jobs_spec_holds_its_rewind_point_only(plan):
    exp = plan.experiment("rewinds")
    for step, point in zip(plan.rewind_steps("rewinds"), exp.imp.rewinds()):
        spec = json.loads(plan.spec("imp_level", "rewinds", str(step)))
        assert spec["imp"]["rewind"] == point
        assert plan.spec("imp_level", "rewinds", step) == for_stage(exp, "imp_level", rewind=point).to_json()


def test_level_inputs_follow_the_jobs_wildcards(plan):
    before = plan.chain_levels_before("smoke", (0,))
    assert before(SimpleNamespace(rewind_step="5", level="0")) == []
    assert before(SimpleNamespace(rewind_step="5", level="2")) == [str(paths.level_store("smoke", "5", 0, "imp", 1))]
    at = plan.chain_levels_at("smoke", (0, 1), 0)
    assert at(SimpleNamespace(rewind_step="5", level="2")) == [str(paths.level_store("smoke", "5", s, "imp", 0))
                                                              for s in (0, 1)]


def test_sweep_rounds_follow_the_plans_until_one_adds_nothing(plan, tmp_path):
    sub = plan.experiment("smoke").subspace
    plans = {0: [4], 1: []}  # round 0's plan adds d = 4, round 1's adds nothing

    def plan_of(e, kind, t, round):
        path = tmp_path / f"{e}-{kind}-{t}-{round}.json"
        path.write_text(json.dumps({"dims": plans[round]}))
        return str(path)

    rounds = plan.rounds("smoke", "random", 0, plan_of)
    blocks = len(sub.seed_blocks())
    assert len(rounds["plans"]) == 2
    assert len(rounds["tables"]) == (len(sub.dims) + 1) * blocks
    assert [f for f in rounds["tables"] if "round=1/" in f] == [
        str(paths.table("subspace", experiment="smoke", kind="random", burnin_step=0, round=1, d=4, block=j))
        for j in range(blocks)]
    # every sweep of the experiment, then its tickets (one table per rewind step)
    tables = plan.subspace_tables("smoke", plan_of)
    assert tables[-1:] == plan.ticket_tables("smoke")
    assert len(plan.refine_plans(plan_of)) == 2 * len(plan.sweep_jobs("smoke"))


def test_a_sweep_without_refinement_has_one_round_and_no_plans(smoke_config):
    cfg = json.loads(json.dumps(smoke_config))
    del cfg["experiments"]["smoke"]["subspace"]["refine"]
    plan = Plan(config.validate(cfg))
    never = lambda *a: pytest.fail("a sweep without refinement reads no plan")
    rounds = plan.rounds("smoke", "burnin", 5, never)
    assert rounds["plans"] == [] and all("round=0/" in f for f in rounds["tables"])
    assert plan.refine_plans(never) == []
