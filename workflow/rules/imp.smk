# Stage 3: lottery-ticket masks. One job per IMP level (so a chain resumes from its last finished level),
# one for the baselines of each level, one per barrier; then the figures of each experiment. With a data diet
# the chains rewind to a point pre-trained on a scored subset (rule data_diet) instead of the dense θ_k.


rule imp_level:
    input:
        data=dataset_of,
        trajectory=trajectory_of,
        previous=lambda w: [level_of(w, int(w.level) - 1)] if int(w.level) > 0 else [],
        diet=diet_of,
    output:
        store=directory(str(paths.level_store("{experiment}", "{seed}", "imp", "{level}"))),
        table=str(paths.table("imp", experiment="{experiment}", seed="{seed}", stage="imp", level="{level}")),
    log:
        str(paths.log("imp", "{experiment}", "{seed}", "imp", "{level}")),
    params:
        diet=optional_flag("--diet", "diet"),
        spec=spec_for("imp"),
        device=config["device"],
        previous=optional_flag("--previous", "previous"),
    threads: config["threads"]
    resources:
        gpu=GPU,
    conda:
        "../envs/sublevel.yaml"
    shell:
        "python -m sublevel imp-level --spec {params.spec:q} --seed {wildcards.seed} --level {wildcards.level}"
        " --data {input.data} --trajectory {input.trajectory} {params.previous} --out {output.store}"
        " --table {output.table} {params.diet} --device {params.device} --threads {threads} > {log} 2>&1"


rule imp_baselines:
    input:
        data=dataset_of,
        trajectory=trajectory_of,
        ticket=lambda w: level_of(w, w.level),
        diet=diet_of,
    output:
        store=directory(str(paths.level_store("{experiment}", "{seed}", "baselines", "{level}"))),
        table=str(paths.table("imp", experiment="{experiment}", seed="{seed}", stage="baselines", level="{level}")),
    log:
        str(paths.log("imp", "{experiment}", "{seed}", "baselines", "{level}")),
    params:
        diet=optional_flag("--diet", "diet"),
        spec=spec_for("imp"),
        device=config["device"],
        methods=lambda w: " ".join(experiment(config, w.experiment).imp.baselines),
    threads: config["threads"]
    resources:
        gpu=GPU,
    conda:
        "../envs/sublevel.yaml"
    shell:
        "python -m sublevel imp-baselines --methods {params.methods} --spec {params.spec:q} --seed {wildcards.seed}"
        " --data {input.data} --trajectory {input.trajectory} --ticket {input.ticket} --out {output.store}"
        " --table {output.table} {params.diet} --device {params.device} --threads {threads} > {log} 2>&1"


rule barrier_instability:
    input:
        data=dataset_of,
        trajectory=trajectory_of,
        dense=lambda w: level_of(w, 0),
        level=lambda w: level_of(w, w.level),
        diet=diet_of,
    output:
        table=str(paths.table("barrier", experiment="{experiment}", seed="{seed}", kind="instability", level="{level}")),
    log:
        str(paths.log("barrier", "{experiment}", "{seed}", "instability", "{level}")),
    params:
        diet=optional_flag("--diet", "diet"),
        spec=spec_for("imp"),
        device=config["device"],
    threads: config["threads"]
    resources:
        gpu=GPU,
    conda:
        "../envs/sublevel.yaml"
    shell:
        "python -m sublevel barrier --kind instability --spec {params.spec:q} --seed {wildcards.seed}"
        " --data {input.data} --trajectory {input.trajectory} --dense {input.dense} --a {input.level}"
        " --table {output.table} {params.diet} --device {params.device} --threads {threads} > {log} 2>&1"


rule barrier_successive:
    input:
        data=dataset_of,
        trajectory=trajectory_of,
        dense=lambda w: level_of(w, 0),
        previous=lambda w: level_of(w, int(w.level) - 1),
        level=lambda w: level_of(w, w.level),
    output:
        table=str(paths.table("barrier", experiment="{experiment}", seed="{seed}", kind="imp_successive", level="{level}")),
    log:
        str(paths.log("barrier", "{experiment}", "{seed}", "imp_successive", "{level}")),
    params:
        spec=spec_for("imp"),
        device=config["device"],
    threads: config["threads"]
    resources:
        gpu=GPU,
    conda:
        "../envs/sublevel.yaml"
    shell:
        "python -m sublevel barrier --kind imp_successive --spec {params.spec:q} --seed {wildcards.seed}"
        " --data {input.data} --trajectory {input.trajectory} --dense {input.dense} --a {input.previous}"
        " --b {input.level} --table {output.table} --device {params.device} --threads {threads} > {log} 2>&1"


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
        "python -m sublevel data-diet --spec {params.spec:q} --seed {wildcards.seed} --data {input.data}"
        " {params.scores} --out {output.start} --device {params.device} --threads {threads} > {log} 2>&1"


rule imp_all:
    input:
        imp_outputs(),
