# Stage 3: lottery-ticket masks. One job per IMP level (so the chains resume from their last finished level),
# one for the baselines of each level, one per barrier kind and level; then the figures of each experiment.
# With a data diet the chains rewind to a point pre-trained on a scored subset (rule data_diet) instead of
# the dense θ_k.
#
# IMP is sequential in its levels, not in its seeds: the chains of all imp.seeds train together (one vmapped
# batch, sublevel.ensemble), so one job trains every chain's level ℓ, one all baselines of every chain at ℓ,
# one every instability copy at ℓ, and one evaluates the successive-level barriers of every chain (one
# process start-up instead of one per chain: on a GPU the start-up is most of such a job). Outputs stay per
# seed, so these rules are written per experiment (a rule's outputs cannot depend on a wildcard) and their
# names carry it: imp_level_<experiment>, ... Adding a seed to imp.seeds reruns them for every seed.
for _name in imp_experiments():
    _seeds = [str(s) for s in experiment(config, _name).imp.seeds]
    _spec = experiment(config, _name).for_stage("imp").to_json()

    rule:
        name:
            f"imp_level_{_name}"
        input:
            data=dataset_of_name(_name),
            trajectory=chain_trajectories(_name),
            previous=chain_levels_before(_name),
            diet=chain_diets(_name),
        output:
            stores=chain_stores(_name, "imp"),
            tables=chain_tables(_name, "imp", "imp"),
        log:
            str(paths.log("imp", _name, "imp", "{level}")),
        params:
            seeds=_seeds,
            diet=optional_flag("--diet", "diet"),
            previous=optional_flag("--previous", "previous"),
            spec=_spec,
            device=config["device"],
        threads: config["threads"]
        resources:
            gpu=GPU,
            runtime=240,  # minutes, for cluster executors (profiles/slurm)
            mem_mb=8000,
        conda:
            "../envs/sublevel.yaml"
        shell:
            "python -m sublevel imp-level --spec {params.spec:q} --seeds {params.seeds:q} --level {wildcards.level:q}"
            " --data {input.data:q} --trajectory {input.trajectory:q} {params.previous:q} --out {output.stores:q}"
            " --table {output.tables:q} {params.diet:q} --device {params.device:q} --threads {threads} > {log:q} 2>&1"

    rule:
        name:
            f"imp_baselines_{_name}"
        input:
            data=dataset_of_name(_name),
            trajectory=chain_trajectories(_name),
            ticket=chain_levels_at(_name),
            diet=chain_diets(_name),
        output:
            stores=chain_stores(_name, "baselines"),
            tables=chain_tables(_name, "imp", "baselines"),
        log:
            str(paths.log("imp", _name, "baselines", "{level}")),
        params:
            seeds=_seeds,
            diet=optional_flag("--diet", "diet"),
            spec=_spec,
            device=config["device"],
            methods=list(experiment(config, _name).imp.baselines),
        threads: config["threads"]
        resources:
            gpu=GPU,
            runtime=480,  # minutes, for cluster executors (profiles/slurm)
            mem_mb=8000,
        conda:
            "../envs/sublevel.yaml"
        shell:
            "python -m sublevel imp-baselines --methods {params.methods:q} --spec {params.spec:q}"
            " --seeds {params.seeds:q} --data {input.data:q} --trajectory {input.trajectory:q} --ticket {input.ticket:q}"
            " --out {output.stores:q} --table {output.tables:q} {params.diet:q} --device {params.device:q}"
            " --threads {threads} > {log:q} 2>&1"

    rule:
        name:
            f"barrier_instability_{_name}"
        input:
            data=dataset_of_name(_name),
            trajectory=chain_trajectories(_name),
            dense=chain_levels_at(_name, 0),
            level=chain_levels_at(_name),
            diet=chain_diets(_name),
        output:
            tables=chain_tables(_name, "barrier", "instability"),
        log:
            str(paths.log("barrier", _name, "instability", "{level}")),
        params:
            seeds=_seeds,
            diet=optional_flag("--diet", "diet"),
            spec=_spec,
            device=config["device"],
        threads: config["threads"]
        resources:
            gpu=GPU,
            runtime=240,  # minutes, for cluster executors (profiles/slurm)
            mem_mb=8000,
        conda:
            "../envs/sublevel.yaml"
        shell:
            "python -m sublevel barrier --kind instability --spec {params.spec:q} --seeds {params.seeds:q}"
            " --data {input.data:q} --trajectory {input.trajectory:q} --dense {input.dense:q} --a {input.level:q}"
            " --table {output.tables:q} {params.diet:q} --device {params.device:q} --threads {threads} > {log:q} 2>&1"

    rule:
        name:
            f"barrier_successive_{_name}"
        input:
            data=dataset_of_name(_name),
            trajectory=chain_trajectories(_name),
            dense=chain_levels_at(_name, 0),
            previous=chain_levels_before(_name),
            level=chain_levels_at(_name),
        output:
            tables=chain_tables(_name, "barrier", "imp_successive"),
        log:
            str(paths.log("barrier", _name, "imp_successive", "{level}")),
        params:
            seeds=_seeds,
            spec=_spec,
            device=config["device"],
        threads: config["threads"]
        resources:
            gpu=GPU,
        conda:
            "../envs/sublevel.yaml"
        shell:
            "python -m sublevel barrier --kind imp_successive --spec {params.spec:q} --seeds {params.seeds:q}"
            " --data {input.data:q} --trajectory {input.trajectory:q} --dense {input.dense:q} --a {input.previous:q}"
            " --b {input.level:q} --table {output.tables:q} --device {params.device:q} --threads {threads} > {log:q} 2>&1"


rule data_diet:
    input:
        data=dataset_of,
        scores=lambda w: scores_of(w.experiment),
    output:
        start=directory(str(paths.diet_start("{experiment}", "{seed}"))),
    log:
        str(paths.log("imp", "{experiment}", "{seed}", "diet")),
    params:
        spec=spec_for("imp"),
        device=config["device"],
        scores=optional_flag("--scores", "scores"),
    threads: config["threads"]
    resources:
        gpu=GPU,
    conda:
        "../envs/sublevel.yaml"
    shell:
        "python -m sublevel data-diet --spec {params.spec:q} --seed {wildcards.seed:q} --data {input.data:q}"
        " {params.scores:q} --out {output.start:q} --device {params.device:q} --threads {threads} > {log:q} 2>&1"


rule imp_all:
    input:
        imp_outputs(),
