# Stage 4: subspace sweeps. One job per (experiment, kind, burn-in step, round, d, block of seeds) trains
# that block of the point's run seeds (subspace.seeds_per_job) together in one vmapped batch, so adding dims
# to a finished sweep trains only the new d, and adding seeds to full blocks only the new blocks. Round 0
# trains the configured dims; a checkpoint then reads all rounds so far and plans the next one around the
# success transition. The plans, ticket rows and summaries only read tables, for seconds: local rules, which a
# cluster executor runs where Snakemake runs instead of queueing each (on the critical path between rounds).


rule subspace_sweep:
    input:
        data=dataset_of,
        trajectories=lambda w: PLAN.sweep_trajectories(w.experiment, w.block),
        plan=lambda w: (
            [str(paths.refine_plan(w.experiment, w.kind, w.burnin_step, int(w.round) - 1))] if int(w.round) > 0 else []
        ),
    output:
        store=directory(str(paths.sweep_store("{experiment}", "{kind}", "{burnin_step}", "{round}", "{d}", "{block}"))),
        table=str(
            paths.table(
                "subspace",
                experiment="{experiment}",
                kind="{kind}",
                burnin_step="{burnin_step}",
                round="{round}",
                d="{d}",
                block="{block}",
            )
        ),
    log:
        str(paths.log("subspace", "{experiment}", "{kind}", "{burnin_step}", "{round}", "{d}", "block{block}")),
    wildcard_constraints:
        kind="random|burnin|lottery",
        burnin_step=r"\d+",
        round=r"\d+",
        d=r"\d+",
        block=r"\d+",
    conda:
        "../envs/sublevel.yaml"
    threads: config["threads"]
    resources:
        **resources_of("subspace_sweep"),
    params:
        spec=spec_for("subspace_sweep"),
        spec_file=spec_file_for("subspace_sweep"),
        seeds=lambda w: PLAN.sweep_seeds(w.experiment, w.block),
        anchor_seeds=lambda w: PLAN.sweep_anchor_seeds(w.experiment, w.block),
        device=config["device"],
        projections=versions.PROJECTIONS,  # unused by the command: a new version reruns the sweeps
    message:
        JOB_LINE
    shell:
        "python -m sublevel subspace-sweep --spec {params.spec_file:q} --kind {wildcards.kind:q}"
        " --burnin-step {wildcards.burnin_step:q} --round {wildcards.round:q} --dims {wildcards.d:q}"
        " --seeds {params.seeds:q} --anchor-seeds {params.anchor_seeds:q}"
        " --data {input.data:q} --trajectory {input.trajectories:q} --out {output.store:q} --table {output.table:q}"
        " --device {params.device:q} --threads {threads} > {log:q} 2>&1"


checkpoint refine_plan:
    input:
        trajectory=sweep_trajectory,
        tables=lambda w: [
            f
            for r in range(int(w.round) + 1)
            for f in PLAN.round_tables(w.experiment, w.kind, w.burnin_step, r, plan_of)
        ],
    output:
        plan=str(paths.refine_plan("{experiment}", "{kind}", "{burnin_step}", "{round}")),
    log:
        str(paths.log("refine", "{experiment}", "{kind}", "{burnin_step}", "{round}")),
    wildcard_constraints:
        kind="random|burnin|lottery",
        burnin_step=r"\d+",
        round=r"\d+",
    localrule: runs_locally("refine_plan")
    conda:
        "../envs/sublevel.yaml"
    params:
        spec=spec_for("refine_plan"),
        spec_file=spec_file_for("refine_plan"),
        tables=files_arg("tables"),
    message:
        JOB_LINE
    shell:
        "python -m sublevel refine-plan --spec {params.spec_file:q} --kind {wildcards.kind:q}"
        " --trajectory {input.trajectory:q} --round {wildcards.round:q} {params.tables:q} --out {output.plan:q}"
        " > {log:q} 2>&1"


rule subspace_tickets:
    input:
        imp=lambda w: [f for f in PLAN.imp_tables(w.experiment, w.burnin_step)["imp"] if "stage=imp" in f],
    output:
        table=str(
            paths.table("subspace", experiment="{experiment}", kind="ticket", burnin_step="{burnin_step}", round=0)
        ),
    log:
        str(paths.log("subspace", "{experiment}", "ticket", "{burnin_step}")),
    localrule: runs_locally("subspace_tickets")
    conda:
        "../envs/sublevel.yaml"
    params:
        spec=spec_for("subspace_tickets"),
        spec_file=spec_file_for("subspace_tickets"),
        imp=files_arg("imp"),
    message:
        JOB_LINE
    shell:
        "python -m sublevel subspace-tickets --spec {params.spec_file:q} {params.imp:q} --table {output.table:q}"
        " > {log:q} 2>&1"


rule sweep_summary:
    input:
        tables=lambda w: sweep_rounds(w)["tables"],
        plans=lambda w: sweep_rounds(w)["plans"],
    output:
        summary=str(paths.sweep_summary("{experiment}", "{kind}", "{burnin_step}")),
    log:
        str(paths.log("subspace", "{experiment}", "{kind}", "{burnin_step}", "summary")),
    wildcard_constraints:
        kind="random|burnin|lottery",
        burnin_step=r"\d+",
    localrule: runs_locally("sweep_summary")
    conda:
        "../envs/sublevel.yaml"
    params:
        tables=files_arg("tables", "plans"),
    message:
        JOB_LINE
    shell:
        "python -m sublevel sweep-summary {params.tables:q} --out {output.summary:q}" " > {log:q} 2>&1"


rule subspace_all:
    input:
        PLAN.subspace_outputs(),
        refine_plans,
        sweep_files,
    message:
        JOB_LINE
