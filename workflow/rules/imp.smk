# Stage 3: lottery-ticket masks. One job per IMP level (so the chains resume from their last finished level),
# one per baseline method and level, one per barrier kind and level, each for one rewind step ({rewind_step}:
# imp.rewind may list several points, one chain per seed and point, all from the same dense runs).
# With a data diet the chains rewind to a point pre-trained on a scored subset (rule data_diet) instead of
# the dense θ_k.
#
# IMP is sequential in its levels, not in its seeds: the chains of a block of imp.seeds (imp.seeds_per_job
# of them, in order) train together as one vmapped batch (sublevel.ensemble), so one job trains the block's
# level ℓ, one each baseline method at ℓ, one its instability copies at ℓ, and one evaluates its successive-level
# barriers (one process start-up instead of one per chain: on a GPU the start-up is most of such a job). A
# chain's result does not depend on which others share its batch. Outputs stay per seed, so these rules are
# written per block (a rule's outputs cannot depend on a wildcard) and their names carry it:
# imp_level_<experiment>_block<j>, ... Appending seeds to imp.seeds leaves the full blocks' jobs as they were;
# appending a method to imp.baselines adds that method's jobs only. With imp.fraction_sweep, one job per block
# and swept level trains every (method, fraction) of it (prune_sweep_<experiment>_block<j>).
for _name, _block, _seeds in PLAN.imp_blocks():

    rule:
        name:
            block_rule("imp_level", _name, _block)
        input:
            data=PLAN.dataset_store(_name),
            trajectory=PLAN.trajectories(_name, _seeds),
            previous=PLAN.chain_levels_before(_name, _seeds),
            diet=PLAN.chain_diets(_name, _seeds),
        output:
            stores=[directory(p) for p in PLAN.chain_stores(_name, _seeds, "imp")],
            tables=PLAN.chain_tables(_name, _seeds, "imp", "imp"),
        log:
            str(paths.log("imp", _name, "rewind{rewind_step}", f"block{_block}", "imp", "{level}")),
        conda:
            "../envs/sublevel.yaml"
        threads: config["threads"]
        resources:
            **resources_of("imp_level"),
        params:
            seeds=[str(s) for s in _seeds],
            files=files_arg(
                trajectory="input.trajectory",
                previous="input.previous",
                diet="input.diet",
                out="output.stores",
                table="output.tables",
            ),
            spec=spec_for("imp_level", _name),
            spec_file=spec_file_for("imp_level", _name),
            device=config["device"],
        message:
            JOB_LINE
        shell:
            "python -m sublevel imp-level --spec {params.spec_file:q} --seeds {params.seeds:q} --level {wildcards.level:q}"
            " --data {input.data:q} {params.files:q} --device {params.device:q} --threads {threads} > {log:q} 2>&1"

    rule:
        name:
            block_rule("imp_baselines", _name, _block)
        input:
            data=PLAN.dataset_store(_name),
            trajectory=PLAN.trajectories(_name, _seeds),
            ticket=PLAN.chain_levels_at(_name, _seeds),
            diet=PLAN.chain_diets(_name, _seeds),
        output:
            stores=[directory(p) for p in PLAN.chain_stores(_name, _seeds, "baselines", "{method}")],
            tables=PLAN.chain_tables(_name, _seeds, "imp", "baselines", "{method}"),
        log:
            str(paths.log("imp", _name, "rewind{rewind_step}", f"block{_block}", "baselines", "{method}", "{level}")),
        conda:
            "../envs/sublevel.yaml"
        threads: config["threads"]
        resources:
            **resources_of("imp_baselines"),
        params:
            seeds=[str(s) for s in _seeds],
            files=files_arg(
                trajectory="input.trajectory",
                ticket="input.ticket",
                diet="input.diet",
                out="output.stores",
                table="output.tables",
            ),
            spec=spec_for("imp_baselines", _name),
            spec_file=spec_file_for("imp_baselines", _name),
            device=config["device"],
        message:
            JOB_LINE
        shell:
            "python -m sublevel imp-baselines --methods {wildcards.method:q} --spec {params.spec_file:q}"
            " --seeds {params.seeds:q} --data {input.data:q} {params.files:q} --device {params.device:q}"
            " --threads {threads} > {log:q} 2>&1"

    rule:
        name:
            block_rule("barrier_instability", _name, _block)
        input:
            data=PLAN.dataset_store(_name),
            trajectory=PLAN.trajectories(_name, _seeds),
            dense=PLAN.chain_levels_at(_name, _seeds, 0),
            level=PLAN.chain_levels_at(_name, _seeds),
            diet=PLAN.chain_diets(_name, _seeds),
        output:
            tables=PLAN.chain_tables(_name, _seeds, "barrier", "instability"),
        log:
            str(paths.log("barrier", _name, "rewind{rewind_step}", f"block{_block}", "instability", "{level}")),
        conda:
            "../envs/sublevel.yaml"
        threads: config["threads"]
        resources:
            **resources_of("barrier_instability"),
        params:
            seeds=[str(s) for s in _seeds],
            files=files_arg(
                trajectory="input.trajectory",
                dense="input.dense",
                a="input.level",
                diet="input.diet",
                table="output.tables",
            ),
            spec=spec_for("barrier_instability", _name),
            spec_file=spec_file_for("barrier_instability", _name),
            device=config["device"],
        message:
            JOB_LINE
        shell:
            "python -m sublevel barrier --kind instability --spec {params.spec_file:q} --seeds {params.seeds:q}"
            " --data {input.data:q} {params.files:q} --device {params.device:q} --threads {threads} > {log:q} 2>&1"

    rule:
        name:
            block_rule("barrier_successive", _name, _block)
        input:
            data=PLAN.dataset_store(_name),
            trajectory=PLAN.trajectories(_name, _seeds),
            dense=PLAN.chain_levels_at(_name, _seeds, 0),
            previous=PLAN.chain_levels_before(_name, _seeds),
            level=PLAN.chain_levels_at(_name, _seeds),
        output:
            tables=PLAN.chain_tables(_name, _seeds, "barrier", "imp_successive"),
        log:
            str(paths.log("barrier", _name, "rewind{rewind_step}", f"block{_block}", "imp_successive", "{level}")),
        conda:
            "../envs/sublevel.yaml"
        threads: config["threads"]
        resources:
            **resources_of("barrier_successive"),
        params:
            seeds=[str(s) for s in _seeds],
            files=files_arg(
                trajectory="input.trajectory",
                dense="input.dense",
                a="input.previous",
                b="input.level",
                table="output.tables",
            ),
            spec=spec_for("barrier_successive", _name),
            spec_file=spec_file_for("barrier_successive", _name),
            device=config["device"],
        message:
            JOB_LINE
        shell:
            "python -m sublevel barrier --kind imp_successive --spec {params.spec_file:q} --seeds {params.seeds:q}"
            " --data {input.data:q} {params.files:q} --device {params.device:q} --threads {threads} > {log:q} 2>&1"

    if PLAN.has(_name, "prune_sweep"):

        rule:
            name:
                block_rule("prune_sweep", _name, _block)
            input:
                data=PLAN.dataset_store(_name),
                trajectory=PLAN.trajectories(_name, _seeds),
                network=PLAN.chain_levels_at(_name, _seeds),
                diet=PLAN.chain_diets(_name, _seeds),
            output:
                tables=[PLAN.prune_sweep_table(_name, "{rewind_step}", s, "{level}") for s in _seeds],
            log:
                str(paths.log("imp", _name, "rewind{rewind_step}", f"block{_block}", "prune_sweep", "{level}")),
            conda:
                "../envs/sublevel.yaml"
            threads: config["threads"]
            resources:
                **resources_of("prune_sweep"),
            params:
                seeds=[str(s) for s in _seeds],
                files=files_arg(
                    trajectory="input.trajectory", network="input.network", diet="input.diet", table="output.tables"
                ),
                spec=spec_for("prune_sweep", _name),
                spec_file=spec_file_for("prune_sweep", _name),
                device=config["device"],
            message:
                JOB_LINE
            shell:
                "python -m sublevel prune-sweep --spec {params.spec_file:q} --seeds {params.seeds:q} --data {input.data:q}"
                " {params.files:q} --device {params.device:q} --threads {threads} > {log:q} 2>&1"


rule data_diet:
    input:
        data=dataset_of,
        scores=lambda w: PLAN.scores_store(w.experiment),
    output:
        start=directory(str(paths.diet_start("{experiment}", "{rewind_step}", "{seed}"))),
    log:
        str(paths.log("imp", "{experiment}", "rewind{rewind_step}", "{seed}", "diet")),
    conda:
        "../envs/sublevel.yaml"
    threads: config["threads"]
    resources:
        **resources_of("data_diet"),
    params:
        spec=spec_for("data_diet"),
        spec_file=spec_file_for("data_diet"),
        device=config["device"],
        scores=optional_flag("--scores", "scores"),
    message:
        JOB_LINE
    shell:
        "python -m sublevel data-diet --spec {params.spec_file:q} --seed {wildcards.seed:q} --data {input.data:q}"
        " {params.scores:q} --out {output.start:q} --device {params.device:q} --threads {threads} > {log:q} 2>&1"


rule imp_all:
    input:
        PLAN.imp_outputs(),
    message:
        JOB_LINE
