# Stage 1: each dataset is prepared once into a Zarr store.


rule prepare_data:
    output:
        store=directory(str(paths.dataset_store("{dataset}"))),
    log:
        str(paths.log("data", "{dataset}")),
    params:
        spec=json.dumps(config["data"], sort_keys=True),
    conda:
        "../envs/sublevel.yaml"
    shell:
        "python -m sublevel prepare-data {wildcards.dataset} --spec {params.spec:q} --out {output.store} > {log} 2>&1"
