# Stage 5: analysis. Success probability P(d) and threshold dimension d*(ε) over every sweep round;
# sharpness (top Hessian eigenvalues) at the dense checkpoints.


rule analyse_subspace:
    input:
        runs=subspace_tables,
        train=lambda w: [str(paths.table("train", experiment=w.experiment, seed=s))
                         for s in experiment(config, w.experiment).seeds],
    output:
        success=str(paths.table("success", experiment="{experiment}")),
        threshold=str(paths.table("threshold", experiment="{experiment}")),
    log:
        str(paths.log("analysis", "{experiment}", "subspace")),
    params:
        spec=spec_for("analysis"),
    conda:
        "../envs/sublevel.yaml"
    shell:
        "python -m sublevel analyse-subspace --spec {params.spec:q} --runs {input.runs} --train {input.train}"
        " --success {output.success} --threshold {output.threshold} > {log} 2>&1"


rule hessian_dense:
    input:
        data=dataset_of,
        trajectory=trajectory_of,
    output:
        table=str(paths.table("hessian", experiment="{experiment}", seed="{seed}")),
    log:
        str(paths.log("hessian", "{experiment}", "{seed}")),
    params:
        spec=spec_for("hessian"),
        device=config["device"],
    threads: config["threads"]
    resources:
        gpu=GPU,
    conda:
        "../envs/sublevel.yaml"
    shell:
        "python -m sublevel hessian --spec {params.spec:q} --seed {wildcards.seed} --data {input.data}"
        " --trajectory {input.trajectory} --table {output.table} --device {params.device} --threads {threads}"
        " > {log} 2>&1"


rule analysis_all:
    input:
        analysis_outputs(),
