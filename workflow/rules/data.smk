# Stage 1: each dataset is prepared once into a Zarr store. A local rule: a cluster executor runs it where
# Snakemake runs, which (a login node) usually reaches the network a first download needs.


rule prepare_data:
    output:
        store=directory(str(paths.dataset_store("{dataset}"))),
    log:
        str(paths.log("data", "{dataset}")),
    localrule: runs_locally("prepare_data")
    conda:
        "../envs/sublevel.yaml"
    params:
        spec=json.dumps(config["data"], sort_keys=True),
    message:
        JOB_LINE
    shell:
        "python -m sublevel prepare-data {wildcards.dataset:q} --spec {params.spec:q} --out {output.store:q} > {log:q} 2>&1"
