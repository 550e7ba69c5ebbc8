from pathlib import Path

import pytest
import yaml

from sublevel import cli, config
from sublevel.config import ConfigError
from sublevel.schedule import Schedule, parse_duration
from sublevel.stages import for_stage
from conftest import make_experiment


def check(text: str) -> dict:
    return config.validate(yaml.safe_load(text))


MINIMAL = "experiments: {x: {dataset: mnist1d, model: {name: mlp}}}"


def test_defaults_are_filled_from_the_schema():
    cfg = check(MINIMAL)
    exp = config.experiment(cfg, "x")
    assert cfg["device"] == "auto" and cfg["threads"] == 1 and cfg["data"]["download"] is False
    assert exp.train.optimizer == "sgd" and exp.train.steps == 1000 and exp.seeds == (0,)
    assert exp.checkpoints.log_spaced == 16


def test_experiments_do_not_share_default_dicts():
    cfg = check("experiments: {a: {dataset: mnist1d, model: {name: mlp}}, b: {dataset: digits, model: {name: mlp}}}")
    assert cfg["experiments"]["a"]["train"] is not cfg["experiments"]["b"]["train"]


@pytest.mark.parametrize("text, key", [
    ("experiments: {x: {dataset: mnist1d, model: {name: nosuchnet}}}", "experiments.x.model.name"),
    ("experiments: {x: {dataset: nosuchdata, model: {name: mlp}}}", "experiments.x.dataset"),
    ("experiments: {x: {dataset: mnist1d, model: {name: mlp}, train: {steps: 0}}}", "experiments.x.train.steps"),
    ("experiments: {x: {dataset: mnist1d, model: {name: mlp}, train: {steps: -5ep}}}", "experiments.x.train.steps"),
    ("experiments: {x: {dataset: mnist1d, model: {name: mlp}, train: {lr: fast}}}", "experiments.x.train.lr"),
    ("experiments: {x: {dataset: mnist1d, model: {name: mlp}, train: {stepz: 3}}}", "experiments.x.train.stepz"),
    ("{colour: red, experiments: {x: {dataset: mnist1d, model: {name: mlp}}}}", "colour"),
    ("experiments: {x: {dataset: mnist1d, model: {name: resnet20, widths: [3]}}}", "experiments.x.model"),
    ("experiments: {x: {dataset: mnist1d, model: {name: mlp}, train: {batch_size: 0}}}", "experiments.x.train.batch_size"),
    ("experiments: {x: {dataset: mnist1d, model: {name: mlp}, seeds: [1, 1]}}", "experiments.x.seeds"),
    ("experiments: {x: {dataset: mnist1d, model: {name: mlp}, train: {milestones: [10]}}}", "experiments.x.train.milestones"),
    ("experiments: {}", "experiments"),
    ("experiments: {x: {dataset: mnist1d, model: {name: mlp}, train: {compile: true}}}", "experiments.x.train.compile"),
])
def test_bad_input_gives_one_error_naming_the_key(text, key):
    with pytest.raises(ConfigError) as e:
        check(text)
    message = str(e.value)
    assert message.startswith(f"config error at {key}:"), message
    assert "\n" not in message


def test_every_shipped_config_is_valid(root):
    for path in sorted((root / "config").rglob("*.yaml")):  # the reproduction presets under repro/ too
        cfg = config.load(path)
        assert cfg["experiments"], path


def test_durations_in_steps_and_epochs():
    assert parse_duration(300, 7) == 300
    assert parse_duration("300it", 7) == 300
    assert parse_duration("3ep", 7) == 21


def test_schedule_resolves_checkpoints_and_lr():
    exp = make_experiment(**{"train.steps": "10ep", "train.batch_size": 100, "train.warmup": 10,
                             "train.schedule": "step", "train.milestones": ["5ep", 80],
                             "checkpoints": {"steps": ["1ep", 7], "log_spaced": 5, "every": 0}})
    s = Schedule.resolve(exp, n_train=480)  # 4 steps per epoch (drop-last)
    assert s.steps_per_epoch == 4 and s.total == 40 and s.milestones == (20, 80)
    assert {0, 4, 7, 40} <= set(s.checkpoints) and s.checkpoints == tuple(sorted(set(s.checkpoints)))
    assert {1, 3, 6, 16} <= set(s.checkpoints)  # round(40 ** (i / 4))
    assert s.lr_factor(0, "step", 0.1) == pytest.approx(0.1)  # warmup: (step + 1) / 10
    assert s.lr_factor(9, "step", 0.1) == pytest.approx(1.0)
    assert s.lr_factor(19, "step", 0.1) == pytest.approx(1.0)
    assert s.lr_factor(20, "step", 0.1) == pytest.approx(0.1)
    assert s.lr_factor(10, "cosine", 0.1) == pytest.approx(1.0)
    assert s.lr_factor(40, "cosine", 0.1) == pytest.approx(0.0, abs=1e-12)
    assert s.lr_factor(25, "cosine", 0.1) == pytest.approx(0.5)
    assert s.lr_factor(30, "constant", 0.1) == 1.0
    assert {0, 40} <= s.eval_steps(True) and {7, 16} <= s.eval_steps(True)  # every checkpoint is evaluated
    quiet = Schedule.resolve(make_experiment(**{"train.steps": "10ep", "train.batch_size": 100, "train.eval_every": 20,
                                                "checkpoints": {"every": 1, "evaluate": False}}), n_train=480)
    assert len(quiet.checkpoints) == 41 and quiet.eval_steps(False) == {0, 20, 40}  # a dense grid, evaluated rarely
    # only the dense runs' spec holds the switch, and only when it is off: no other job reruns for it
    off, on = (make_experiment(**{"checkpoints": {"every": 1, "evaluate": v}}) for v in (False, True))
    assert '"evaluate": false' in for_stage(off, "train_dense").to_json() and "evaluate" not in for_stage(on, "train_dense").to_json()
    assert for_stage(off, "subspace_sweep").to_json() == for_stage(on, "subspace_sweep").to_json()


def test_checkpoint_beyond_training_is_rejected_before_any_job():
    with pytest.raises(ConfigError, match="checkpoints.steps: \\[25\\] beyond the last step 20"):
        make_experiment(**{"train.steps": 20, "checkpoints": {"steps": [25]}})


def test_batch_larger_than_the_dataset_is_rejected_before_any_job():
    # smoke.yaml makes 600 MNIST-1D examples, 480 for training
    with pytest.raises(ConfigError, match="batch_size: 1000 exceeds the 480 training examples"):
        make_experiment(**{"train.batch_size": 1000})


@pytest.mark.parametrize("imp, key, message", [
    ({"fraction": 1.0}, "fraction", "maximum"),
    ({"fraction": 0}, "fraction", "minimum"),
    ({"levels": 0}, "levels", "minimum"),
    ({"rewind": 40}, "rewind", "not before the end of training at step 40"),
    ({"rewind": "3ep"}, "rewind", "step 45 \\(3ep\\)"),   # 480 // 32 = 15 steps per epoch
    ({"rewind": [5, 40]}, "rewind", "step 40 \\(40\\) is not before the end of training"),
    ({"rewind": [15, "1ep"]}, "rewind", "name the same step twice \\(steps \\[15, 15\\]\\)"),
    ({"rewind": [5, 5]}, "rewind", "is not valid"),
    ({"rewind": []}, "rewind", "is not valid"),
    ({"rewind": [0, 5], "data_diet": {"keep": "random", "fraction": 0.5}}, "rewind",
     "a data diet pre-trains up to one rewind point"),
    ({"seeds": [7]}, "seeds", "\\[7\\] are not dense seeds"),
    ({"baselines": ["magic"]}, "baselines.0", "is not one of"),
    ({"seeds_per_job": 0}, "seeds_per_job", "minimum"),
])
def test_bad_imp_settings_are_rejected_before_any_job(imp, key, message):
    with pytest.raises(ConfigError, match=f"^config error at experiments.smoke.imp.{key}: .*{message}"):
        make_experiment(imp=imp)


def test_imp_defaults_and_the_rewind_point_is_a_checkpoint():
    exp = make_experiment(imp={"rewind": 7})
    assert exp.imp.levels == 5 and exp.imp.fraction == 0.2 and exp.imp.scope == "global"
    assert exp.imp.seeds == exp.seeds and len(exp.imp.baselines) == 4 and exp.imp.alphas == 11
    s = Schedule.resolve(exp, 480)
    assert s.rewind == 7 and 7 in s.checkpoints


def test_train_sizes_match_the_prepared_data(mnist1d):
    from sublevel.datasets import train_size

    assert train_size("mnist1d", {"mnist1d_samples": 600}) == len(mnist1d.y_train)


def test_experiment_json_round_trip():
    exp = make_experiment()
    again = config.Experiment.from_json(exp.to_json())
    assert again == exp


def test_a_rewind_list_is_one_chain_per_point_and_each_job_sees_its_own():
    many = make_experiment(imp={"rewind": [0, "1ep", 7]})
    assert many.imp.rewinds() == (0, "1ep", 7)
    sched = Schedule.resolve(many, 480)
    assert sched.rewinds == (0, 15, 7) and {0, 7, 15} <= set(sched.checkpoints)
    with pytest.raises(ValueError, match="3 rewind points"):
        sched.rewind
    # a chain's jobs see the spec an experiment with that one point gives them: results cannot differ
    for point in many.imp.rewinds():
        single = make_experiment(imp={"rewind": point})
        for stage in ("imp_level", "hessian_imp"):
            assert for_stage(many, stage, rewind=point).to_json() == for_stage(single, stage).to_json()
        assert Schedule.resolve(for_stage(many, "imp_level", rewind=point), 480).rewind == Schedule.resolve(single, 480).rewind
    assert make_experiment(imp={"rewind": 7}).imp.rewinds() == (7,)
    dense = Schedule.resolve(for_stage(many, "train_dense"), 480)  # the dense runs store every rewind point
    assert {0, 7, 15} <= set(dense.checkpoints)
    with pytest.raises(ConfigError, match="no rewind point 3"):
        for_stage(many, "imp_level", rewind=3)


def test_the_dense_stage_does_not_see_imp_settings_but_keeps_the_rewind_checkpoint():
    a = make_experiment(imp={"rewind": 7, "alphas": 5})
    b = make_experiment(imp={"rewind": 7, "alphas": 9, "levels": 3})
    dense = for_stage(a, "train_dense")
    assert dense.to_json() == for_stage(b, "train_dense").to_json() and dense.imp is None
    assert Schedule.resolve(dense, 480).checkpoints == Schedule.resolve(a, 480).checkpoints
    assert for_stage(make_experiment(imp={"rewind": 8}), "train_dense").to_json() != dense.to_json()


def test_each_stage_sees_only_its_own_section():
    base = {"rewind": 7}
    a = make_experiment(imp=base, subspace={"dims": [4], "kinds": ["random"]})
    b = make_experiment(imp=base, subspace={"dims": [4], "kinds": ["random"], "lr": 0.5})
    assert for_stage(a, "imp_level").to_json() == for_stage(b, "imp_level").to_json()        # sweeps do not rerun IMP
    assert for_stage(a, "subspace_sweep").to_json() != for_stage(b, "subspace_sweep").to_json()
    # which d exist is not what one sweep job computes (its d is a wildcard): more dims plan only new jobs
    more = make_experiment(imp=base, subspace={"dims": [4, 8], "kinds": ["random"]})
    assert for_stage(more, "subspace_sweep").to_json() == for_stage(a, "subspace_sweep").to_json()
    assert for_stage(more, "analyse_subspace").to_json() != for_stage(a, "analyse_subspace").to_json()
    assert for_stage(a, "subspace_sweep").imp is None and for_stage(a, "imp_level").subspace is None
    assert 7 in Schedule.resolve(for_stage(a, "subspace_sweep"), 480).checkpoints


def test_analysis_settings_do_not_rerun_sweeps():
    a = make_experiment(subspace={"dims": [4], "kinds": ["random"]})
    b = make_experiment(subspace={"dims": [4], "kinds": ["random"], "bootstrap": 10,
                                  "thresholds": [{"metric": "test_loss", "value": 1.0}]})
    assert for_stage(a, "subspace_sweep").to_json() == for_stage(b, "subspace_sweep").to_json()
    assert for_stage(a, "analyse_subspace").to_json() != for_stage(b, "analyse_subspace").to_json()
    assert for_stage(b, "analyse_subspace").subspace.bootstrap == 10


def test_the_theory_and_fraction_sweep_specs_touch_no_other_job():
    sub = {"dims": [4, 8], "kinds": ["random", "burnin"], "burnin": [5]}
    a = make_experiment(imp={"rewind": 7}, subspace=sub)
    b = make_experiment(imp={"rewind": 7, "fraction_sweep": {"levels": [1], "fractions": [0.5]}}, subspace=sub,
                        theory={"probes": 4})
    for stage in ("train_dense", "imp_level", "subspace_sweep", "refine_plan", "analyse_subspace", "hessian_dense"):
        assert for_stage(a, stage).to_json() == for_stage(b, stage).to_json(), stage
    spectrum = for_stage(b, "spectrum")
    assert spectrum.theory.probes == 4 and spectrum.subspace.burnin == (5,) and spectrum.imp is None
    more_dims = make_experiment(imp={"rewind": 7}, subspace=dict(sub, dims=[4, 16, 64]), theory={"probes": 4})
    assert spectrum.to_json() == for_stage(more_dims, "spectrum").to_json()  # more dims: the spectrum does not rerun
    more_eps = make_experiment(imp={"rewind": 7}, subspace=dict(sub, thresholds=[{"metric": "train_loss", "value": 1}]),
                               theory={"probes": 4})
    assert spectrum.to_json() == for_stage(more_eps, "spectrum").to_json()  # nor does a threshold
    more_t = make_experiment(imp={"rewind": 7}, subspace=dict(sub, burnin=[5, 12]), theory={"probes": 4})
    assert for_stage(more_t, "spectrum").subspace.burnin == (5, 12)  # a burn-in step is an anchor more
    sweep = for_stage(b, "prune_sweep")
    assert sweep.imp.fraction_sweep.fractions == (0.5,)
    with pytest.raises(ConfigError, match="stage prune_sweep does not read imp.fraction_sweep.levels"):
        sweep.imp.fraction_sweep.levels  # which levels are swept is the plan's: no job reads it
    more = make_experiment(imp={"rewind": 7, "fraction_sweep": {"levels": [0, 1], "fractions": [0.5]}})
    assert for_stage(more, "prune_sweep").to_json() == sweep.to_json()  # another level: only its job is new
    with pytest.raises(ConfigError, match=r"imp.fraction_sweep.levels: \[5\] beyond imp.levels = 2"):
        make_experiment(imp={"levels": 2, "fraction_sweep": {"levels": [1, 5], "fractions": [0.5]}})
    with pytest.raises(ConfigError, match="theory: predicts the subspace sweeps' d"):
        make_experiment(subspace=None, theory={})


def test_hessian_steps_must_be_stored_checkpoints():
    exp = make_experiment(hessian={"steps": [0, 40]})
    assert exp.hessian_steps(Schedule.resolve(exp, 480)) == [0, 40]
    every = make_experiment(hessian={})
    assert every.hessian_steps(Schedule.resolve(every, 480)) == list(Schedule.resolve(every, 480).checkpoints)
    with pytest.raises(ConfigError, match=r"hessian.steps: \[7\] are not stored checkpoints; stored steps: \[0,"):
        make_experiment(hessian={"steps": [7]})


def test_adding_a_seed_reruns_no_existing_job():
    a = make_experiment(seeds=[0, 1], imp={"rewind": 7}, subspace={"dims": [4], "kinds": ["random"]}, hessian={})
    b = make_experiment(seeds=[0, 1, 2], imp={"rewind": 7}, subspace={"dims": [4], "kinds": ["random"]}, hessian={})
    for stage in ("train_dense", "imp_level", "subspace_sweep", "analyse_subspace", "hessian_dense"):
        assert for_stage(a, stage).to_json() == for_stage(b, stage).to_json(), stage


def test_imp_seeds_are_blocked_in_order_and_appending_keeps_the_full_blocks():
    seeds = list(range(5))
    blocks = lambda n, k: make_experiment(seeds=seeds, imp={"seeds": seeds[:n], "seeds_per_job": k}).imp.seed_blocks()
    assert blocks(5, 2) == [(0, 1), (2, 3), (4,)]
    assert blocks(4, 2) == blocks(5, 2)[:2]                     # full blocks stay as they were
    assert blocks(3, 2)[1] != blocks(5, 2)[1]                   # the unfilled block changes
    assert make_experiment(seeds=seeds, imp={"seeds": seeds}).imp.seed_blocks() == [tuple(seeds)]  # default 8
    a, b = (make_experiment(seeds=seeds, imp={"seeds": seeds, "seeds_per_job": k}) for k in (1, 8))
    assert for_stage(a, "imp_level").to_json() == for_stage(b, "imp_level").to_json()  # no job's spec holds it


def test_subspace_runs_are_blocked_like_imp_seeds_and_no_sweep_spec_holds_them():
    def exp(n, k=None):
        return make_experiment(**{"subspace.seeds": n}, **({"subspace.seeds_per_job": k} if k is not None else {}))
    assert exp(5, 2).subspace.seed_blocks() == [(0, 1), (2, 3), (4,)]
    assert exp(4, 2).subspace.seed_blocks() == exp(5, 2).subspace.seed_blocks()[:2]
    assert exp(5).subspace.seed_blocks() == [(0, 1, 2, 3, 4)]   # the schema's default 8
    assert for_stage(exp(2, 1), "subspace_sweep").to_json() == for_stage(exp(9, 4), "subspace_sweep").to_json()  # an option
    assert '"seeds": 9' in for_stage(exp(9), "analyse_subspace").to_json()
    with pytest.raises(ConfigError, match="subspace.seeds_per_job: .*minimum"):
        exp(2, 0)


def test_scores_steps_must_be_stored_and_a_scored_diet_needs_scores():
    with pytest.raises(ConfigError, match=r"scores.steps: \[7\] are not stored checkpoints"):
        make_experiment(scores={"steps": [7]})
    with pytest.raises(ConfigError, match=r"imp.data_diet: keep 'easiest' needs a scores section"):
        make_experiment(imp={"rewind": 5, "data_diet": {"keep": "easiest", "fraction": 0.5}}, scores=None)
    with pytest.raises(ConfigError, match=r"imp.data_diet.step: 0 is not one of scores.steps \[5\]"):
        make_experiment(imp={"rewind": 5, "data_diet": {"keep": "hardest", "fraction": 0.5, "step": 0}},
                        scores={"steps": [5]})
    with pytest.raises(ConfigError, match=r"imp.data_diet.keep"):
        make_experiment(imp={"rewind": 5, "data_diet": {"keep": "median", "fraction": 0.5}})
    random = make_experiment(imp={"rewind": 5, "data_diet": {"keep": "random", "fraction": 0.3}}, scores=None)
    assert random.diet_score_step(Schedule.resolve(random, 480)) is None
    scored = make_experiment(imp={"rewind": 5, "data_diet": {"keep": "hardest", "fraction": 0.5}})
    assert scored.diet_score_step(Schedule.resolve(scored, 480)) == 5  # the last scored step by default
    assert "scores" in for_stage(scored, "imp_level").raw  # the diet's subset depends on them
    assert "scores" not in for_stage(make_experiment(), "imp_level").raw


def test_every_enum_of_the_schema_and_the_cli_is_its_registrys(root):
    """Each choice the config or a command offers is checked against the one registry the code dispatches on."""
    from sublevel import cli, datasets, imp, models, optimizers, runtime, scores, subspace
    from sublevel.kinds import KINDS

    schema = yaml.safe_load((root / "workflow" / "schemas" / "config.schema.yaml").read_text())
    defs, exp = schema["$defs"], schema["$defs"]["experiment"]["properties"]
    assert set(defs["model"]["properties"]["name"]["enum"]) == set(models.REGISTRY)
    assert set(exp["dataset"]["enum"]) == set(datasets.SHAPES)
    assert tuple(defs["compile"]["enum"]) == runtime.COMPILE_MODES
    imp_section = defs["imp"]["properties"]
    assert tuple(imp_section["baselines"]["items"]["enum"]) == imp.BASELINES == tuple(imp.BASELINE_RUNS)
    assert tuple(imp_section["data_diet"]["properties"]["score"]["enum"]) == scores.SCORES
    sub = defs["subspace"]["properties"]
    assert tuple(sub["kinds"]["items"]["enum"]) == tuple(KINDS)
    assert tuple(sub["optimizer"]["enum"]) == tuple(defs["train"]["properties"]["optimizer"]["enum"]) == optimizers.KINDS

    def choices(command, dest):
        parser = cli.parser()._subparsers._group_actions[0].choices[command]
        return tuple(next(a for a in parser._actions if a.dest == dest).choices)

    import run  # bench/run.py

    bench_run = run.parser()._subparsers._group_actions[0].choices["run"]
    assert tuple(next(a for a in bench_run._actions if a.dest == "compile").choices) == runtime.COMPILE_MODES
    assert choices("imp-baselines", "methods") == imp.BASELINES
    assert choices("subspace-sweep", "kind") == choices("refine-plan", "kind") == tuple(KINDS)
    exp = config.experiment(check(MINIMAL.replace("{name: mlp}", "{name: mlp}, train: {compile: reduce-overhead}")), "x")
    assert exp.train.compile == "reduce-overhead"


GOOD = {"dataset": "mnist1d", "model": {"name": "mlp"}}


@pytest.mark.parametrize("experiments, key", [
    ({"x": dict(GOOD, train={"steps": 40.0})}, "experiments.x.train.steps"),  # a float where a count goes
    ({"x": dict(GOOD, model={"name": "mlp", "widths": [1000000000]})}, "experiments.x.model"),  # counted, not built
    ({"x" * 250: GOOD}, "experiments"),  # a name no file system takes as a directory
    ({"smoke\n": GOOD}, "experiments"),  # `$` in a pattern matches before a final newline
    ({"../x": GOOD}, "experiments"),
])
def test_values_that_would_fail_at_run_time_are_refused_naming_the_key(tmp_path, experiments, key):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"experiments": experiments}))
    with pytest.raises(ConfigError) as e:
        cfg = config.load(path)
        for name in cfg["experiments"]:
            config.experiment(cfg, name)
    message = str(e.value)
    assert message.startswith(f"config error at {key}"), message
    assert "\n" not in message


def test_a_control_character_in_a_value_is_refused():
    with pytest.raises(ConfigError, match=r"^config error at device: .*control character"):
        check(MINIMAL + '\ndevice: "cpu\\n"')


def test_a_model_too_large_to_index_is_counted_without_allocating():
    exp = make_experiment(**{"model.widths": [100]})
    assert exp.num_params() == 40 * 100 + 100 + 100 * 10 + 10  # MNIST-1D: 40 inputs, 10 classes
    with pytest.raises(ConfigError, match="at most 2,147,483,647"):
        make_experiment(**{"model.widths": [1000000000]})


@pytest.mark.parametrize("text, message", [
    ("experiments: {x: {dataset: mnist1d\n", "not valid YAML at line 2, column 1"),
    ("- experiments\n- x\n", "config error at <config>: the config is a mapping of keys, not a list"),
    ("experiments: !!python/object/apply:os.system ['true']\n", "not valid YAML at line 1, column 14"),
    ('experiments: {x: {dataset: mnist1d, model: {name: mlp}}}\ndevice: "cpu\\n"\n', "config error at device"),
])
def test_check_config_gives_one_line_and_exit_2_never_a_traceback(tmp_path, capsys, text, message):
    from sublevel import cli

    path = tmp_path / "c.yaml"
    path.write_text(text)
    assert cli.main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sublevel check-config: config error") and message in err and "\n" not in err, err


def test_config_readme_names_every_preset_and_every_key_group(root):
    text = (root / "config" / "README.md").read_text()
    presets = sorted(str(p.relative_to(root / "config")) for p in (root / "config").rglob("*.yaml"))
    assert [p for p in presets if f"`{p}`" not in text] == []
    for p in presets:
        config.load(root / "config" / p)  # every preset it describes is a valid config
    schema = yaml.safe_load((root / "workflow" / "schemas" / "config.schema.yaml").read_text())
    groups = list(schema["properties"]) + list(schema["$defs"]["experiment"]["properties"])
    assert [g for g in groups if f"`{g}`" not in text] == []


SMOKE_YAML = (Path(__file__).resolve().parents[1] / "config" / "smoke.yaml").read_text()
BOMB = "a0: &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9)) + "experiments: {x: {dataset: mnist1d, model: {name: mlp}, seeds: *a8}}\n"


@pytest.mark.parametrize("edit, key", [
    (("lr: 0.05", "lr: .nan"), "experiments.smoke.train.lr"),
    (("lr: 0.05", "lr: .inf"), "experiments.smoke.train.lr"),
    (("alphas: 5", "alphas: 5\n      fraction: .nan"), "experiments.smoke.imp.fraction"),
    (("value: 0.6}", "value: .nan}"), "experiments.smoke.subspace.thresholds.0.value"),
    (("value: 0.6}", "value: 5.0}"), "experiments.smoke.subspace.thresholds.0.value"),
    (("value: 0.6}", "value: -1}"), "experiments.smoke.subspace.thresholds.0.value"),
    (("seeds: [0, 1]", "seeds: [0, 9223372036854775808]"), "experiments.smoke.seeds"),
    (("seeds: [0, 1]", "seeds: [0, 1180591620717411303424]"), "experiments.smoke.seeds"),
    (("seeds: [0, 1]", "seeds: [0, 4294967296]"), "experiments.smoke.seeds.1"),
    (("batch_size: 32\n      refine", "batch_size: 100000\n      refine"), "experiments.smoke.subspace.batch_size"),
    (("fraction_sweep", "data_diet: {keep: random, fraction: 1.0e-9}\n      fraction_sweep"),
     "experiments.smoke.imp.data_diet.fraction"),
    (("steps: 40", "steps: 1.0e15"), "experiments.smoke.train.steps"),
    (("steps: 40", "steps: 1000000000000000"), "experiments.smoke.train.steps"),
    (("steps: 40", "steps: 1000000000ep"), "experiments.smoke.train.steps"),
    (("steps: 40\n      eval_every: 10", "steps: 10000000\n      eval_every: 1"), "experiments.smoke.train.eval_every"),
    (("alphas: 5", "alphas: 1000000000"), "experiments.smoke.imp.alphas"),
    (("refine:", "bootstrap: 1000000000000\n      refine:"), "experiments.smoke.subspace.bootstrap"),
    (("mnist1d_samples: 600", "mnist1d_samples: 1000000000"), "data.mnist1d_samples"),
    (("dims: [2, 8, 32]", f"dims: {list(range(1, 100001))}"), "experiments.smoke.subspace.dims"),
    (("seeds: [0, 1]", f"seeds: {list(range(100000))}"), "experiments.smoke.seeds"),
    (("top_k: 2}", "top_k: 20}"), "experiments.smoke.hessian.top_k"),
    (("experiments:\n", "experiments:\n  other: {dataset: mnist1d, model: {name: mlp}}\nexperiments:\n"), "in "),
    (("device: cpu", "device: cpu\ndevice: cuda"), "in "),
])
def test_the_issues_bad_configs_are_refused_in_one_line_naming_the_key(tmp_path, capsys, edit, key):
    """Values every schema bound lets through (NaN), or that hang, exhaust memory or fail only at run time:
    `sublevel check-config` refuses each in one line naming the key (exit 2), before any job."""
    old, new = edit
    assert old in SMOKE_YAML
    path = tmp_path / "c.yaml"
    path.write_text(SMOKE_YAML.replace(old, new, 1))
    assert cli.main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert err.startswith(f"sublevel check-config: config error {'' if key == 'in ' else 'at '}{key}"), err


def test_an_alias_bomb_and_bytes_that_are_not_utf8_are_refused_at_once(tmp_path, capsys):
    import time

    for name, data, said in (("bomb.yaml", BOMB.encode(), "expands to"),
                             ("latin1.yaml", SMOKE_YAML.replace("smoke:", "sm\u00f6ke:").encode("latin-1"), "not UTF-8")):
        path = tmp_path / name
        path.write_bytes(data)
        start = time.monotonic()
        assert cli.main(["check-config", str(path)]) == 2
        err = capsys.readouterr().err.strip()
        assert said in err and "\n" not in err and time.monotonic() - start < 10, err


def test_a_device_this_torch_cannot_use_is_one_line(capsys, monkeypatch):
    import torch

    from sublevel import runtime
    from sublevel.errors import DataError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DataError, match=r"^device cuda:0: this torch sees no CUDA device"):
        runtime.pick_device("cuda:0")


def test_a_nested_config_override_is_typed_as_yaml_reads_it():
    """Snakemake reads `--config 'experiments={smoke: {train: {lr: 0.1}}}'` with YAML's BaseLoader, every leaf a
    string; typed() reads them as YAML does, and leaves top-level values Snakemake already typed alone."""
    raw = {"smoke": {"train": {"lr": "0.1", "steps": "20ep", "nesterov": "true", "milestones": ["100", "200"]},
                     "imp": {"levels": "3"}}}
    assert config.typed(raw) == {"smoke": {"train": {"lr": 0.1, "steps": "20ep", "nesterov": True,
                                                     "milestones": [100, 200]}, "imp": {"levels": 3}}}
    assert config.typed(5) == 5 and config.typed(None) is None
