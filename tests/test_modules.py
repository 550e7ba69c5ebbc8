"""The library's structure: no import circles, and every config key has its one declaration (sublevel.stages)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from sublevel import config, stages
from sublevel.config import ConfigError
from sublevel.stages import STAGES, for_stage

from conftest import make_experiment

SRC = Path(__file__).resolve().parents[1] / "src" / "sublevel"


def import_graph() -> dict[str, set[str]]:
    """Module -> the sublevel modules it imports, at the top or inside a function."""
    modules = {".".join(p.relative_to(SRC.parent).with_suffix("").parts).removesuffix(".__init__"): p
               for p in SRC.rglob("*.py")}
    graph = {m: set() for m in modules}
    for m, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sublevel"):
                named = [f"{node.module}.{a.name}" for a in node.names] if node.module == "sublevel" else [node.module]
                graph[m] |= {n for n in named if n in modules and n != m}
            elif isinstance(node, ast.Import):
                graph[m] |= {a.name for a in node.names if a.name in modules and a.name != m}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The graph's cycles, one per strongly connected component of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while (w := stack.pop()) != v:
                on.discard(w)
                comp.append(w)
            on.discard(v)
            if comp:
                out.append(sorted([v, *comp]))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_module_imports_one_that_imports_it_back():
    graph = import_graph()
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]  # the check finds one
    assert circles(graph) == []


def schema_keys() -> set[str]:
    """Every experiment key of the config schema that holds a value (not a section of keys), dotted."""
    return {key for key, (node, _) in config.schema_keys().items() if "properties" not in node}


def test_every_config_key_is_read_by_a_stage_or_decides_which_jobs_exist():
    """A key no stage declares would reach no job: a new key must be declared where it is read."""
    declared = {k for k in schema_keys() if any(s.declares(k) for s in STAGES.values() if s.reads is not None)}
    job_set = {k for k in schema_keys() if any(k == j or k.startswith(j + ".") for j in stages.JOB_SET_KEYS)}
    assert schema_keys() - declared - job_set == set()
    # what decides which sweep or IMP jobs exist is in no such job's spec (only the analysis reads the whole sweep)
    for name in ("subspace_sweep", "refine_plan", "imp_level", "imp_baselines", "prune_sweep", "hessian_imp"):
        assert not [k for k in stages.JOB_SET_KEYS if STAGES[name].declares(k)], name


def test_a_job_reading_a_key_its_stage_does_not_declare_is_an_error_naming_both():
    exp = make_experiment(imp={"rewind": 5, "levels": 2}, hessian={})
    assert exp.imp.levels == 2 and exp.checkpoints.evaluate is True  # the whole experiment reads every key
    level_job = for_stage(exp, "imp_level")
    assert level_job.imp.fraction == 0.2
    with pytest.raises(ConfigError, match="stage imp_level does not read imp.levels"):
        level_job.imp.levels
    with pytest.raises(ConfigError, match="stage imp_level does not read seeds"):
        level_job.seeds
    with pytest.raises(ConfigError, match="stage hessian_dense does not read checkpoints.evaluate"):
        for_stage(exp, "hessian_dense").checkpoints.evaluate
    assert for_stage(exp, "hessian_dense").imp is None  # a section the stage does not read: it has none
    # the dense runs' spec leaves out evaluate at its default (specs from before the key are unchanged), and
    # reading it gives the schema's default
    dense = for_stage(exp, "train_dense")
    assert "evaluate" not in dense.raw["checkpoints"] and dense.checkpoints.evaluate is True
    assert config.schema_default("imp.matching_tolerance") == 0.01
