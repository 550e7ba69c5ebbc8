# Stage 2: dense training, one job per (experiment, seed): the trajectory in Zarr, the curves in Parquet.


rule train_dense:
    input:
        data=dataset_of,
    output:
        trajectory=directory(str(paths.trajectory("{experiment}", "{seed}"))),
        table=str(paths.table("train", experiment="{experiment}", seed="{seed}")),
    log:
        str(paths.log("train", "{experiment}", "{seed}")),
    conda:
        "../envs/sublevel.yaml"
    threads: config["threads"]
    resources:
        **resources_of("train_dense"),
    params:
        spec=spec_for("train_dense"),
        spec_file=spec_file_for("train_dense"),
        device=config["device"],
        # derived from the outputs, so not recorded: turning the live view on or off reruns nothing
        tensorboard=lambda w, output: (
            ["--tensorboard", str(paths.tensorboard(w.experiment, w.seed))] if config["tensorboard"] else []
        ),
    message:
        JOB_LINE
    shell:
        "python -m sublevel train --spec {params.spec_file:q} --seed {wildcards.seed:q} --data {input.data:q}"
        " --trajectory {output.trajectory:q} --table {output.table:q} {params.tensorboard:q} --device {params.device:q}"
        " --threads {threads}"
        " > {log:q} 2>&1"


rule train_all:
    input:
        PLAN.dense_outputs(),
    message:
        JOB_LINE
