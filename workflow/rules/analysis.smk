# Stage 5: analysis. Success probability P(d) and threshold dimension d*(ε) over every sweep round;
# sharpness (top Hessian eigenvalues) at dense checkpoints and IMP levels; d* predicted from the Hessian's
# spectral density (spectrum, then theory); per-example data difficulty;
# every figure (PNG for the report, SVG beside it). The rules that only read tables are local rules (see
# subspace.smk): analyse_subspace, theory, figure, export, reproduction.


rule analyse_subspace:
    input:
        runs=lambda w: PLAN.subspace_tables(w.experiment, plan_of),
        train=lambda w: PLAN.train_tables(w.experiment),
    output:
        success=str(paths.table("success", experiment="{experiment}")),
        threshold=str(paths.table("threshold", experiment="{experiment}")),
    log:
        str(paths.log("analysis", "{experiment}", "subspace")),
    localrule: runs_locally("analyse_subspace")
    conda:
        "../envs/sublevel.yaml"
    params:
        spec=spec_for("analyse_subspace"),
        spec_file=spec_file_for("analyse_subspace"),
        tables=files_arg("runs", "train"),
    message:
        JOB_LINE
    shell:
        "python -m sublevel analyse-subspace --spec {params.spec_file:q} {params.tables:q}"
        " --success {output.success:q} --threshold {output.threshold:q} > {log:q} 2>&1"


rule hessian_dense:
    input:
        data=dataset_of,
        trajectory=trajectory_of,
    output:
        table=str(paths.table("hessian", experiment="{experiment}", seed="{seed}", source="dense")),
    log:
        str(paths.log("hessian", "{experiment}", "{seed}", "dense")),
    conda:
        "../envs/sublevel.yaml"
    threads: config["threads"]
    resources:
        **resources_of("hessian_dense"),
    params:
        spec=spec_for("hessian_dense"),
        spec_file=spec_file_for("hessian_dense"),
        device=config["device"],
    message:
        JOB_LINE
    shell:
        "python -m sublevel hessian --spec {params.spec_file:q} --seed {wildcards.seed:q} --data {input.data:q}"
        " --trajectory {input.trajectory:q} --table {output.table:q} --device {params.device:q} --threads {threads}"
        " > {log:q} 2>&1"


# one job per chain and IMP level, so adding levels or chains computes only theirs
rule hessian_imp:
    input:
        data=dataset_of,
        levels=lambda w: str(paths.level_store(w.experiment, w.rewind_step, w.seed, "imp", w.level)),
    output:
        table=str(
            paths.table(
                "hessian",
                experiment="{experiment}",
                seed="{seed}",
                source="imp",
                rewind_step="{rewind_step}",
                level="{level}",
            )
        ),
    log:
        str(paths.log("hessian", "{experiment}", "{seed}", "imp", "rewind{rewind_step}", "{level}")),
    conda:
        "../envs/sublevel.yaml"
    threads: config["threads"]
    resources:
        **resources_of("hessian_imp"),
    params:
        spec=spec_for("hessian_imp"),
        spec_file=spec_file_for("hessian_imp"),
        device=config["device"],
    message:
        JOB_LINE
    shell:
        "python -m sublevel hessian --spec {params.spec_file:q} --seed {wildcards.seed:q} --data {input.data:q}"
        " --levels {input.levels:q} --table {output.table:q} --device {params.device:q} --threads {threads} > {log:q} 2>&1"


# the spectrum does not depend on the thresholds: adding one reruns only the local rule theory
rule spectrum:
    input:
        data=dataset_of,
        trajectory=sweep_trajectory,
    output:
        spectrum=str(paths.table("spectrum", experiment="{experiment}")),
    log:
        str(paths.log("spectrum", "{experiment}")),
    conda:
        "../envs/sublevel.yaml"
    threads: config["threads"]
    resources:
        **resources_of("spectrum"),
    params:
        spec=spec_for("spectrum"),
        spec_file=spec_file_for("spectrum"),
        device=config["device"],
    message:
        JOB_LINE
    shell:
        "python -m sublevel spectrum --spec {params.spec_file:q} --data {input.data:q} --trajectory {input.trajectory:q}"
        " --spectrum {output.spectrum:q} --device {params.device:q} --threads {threads} > {log:q} 2>&1"


rule theory:
    input:
        spectrum=str(paths.table("spectrum", experiment="{experiment}")),
    output:
        theory=str(paths.table("theory", experiment="{experiment}")),
    log:
        str(paths.log("analysis", "{experiment}", "theory")),
    localrule: runs_locally("theory")
    conda:
        "../envs/sublevel.yaml"
    params:
        spec=spec_for("theory"),
        spec_file=spec_file_for("theory"),
    message:
        JOB_LINE
    shell:
        "python -m sublevel theory --spec {params.spec_file:q} --spectrum {input.spectrum:q} --theory {output.theory:q}"
        " > {log:q} 2>&1"


rule scores:
    input:
        data=dataset_of,
        trajectories=lambda w: PLAN.trajectories(w.experiment),
    output:
        store=directory(str(paths.scores_store("{experiment}"))),
        table=str(paths.table("scores", experiment="{experiment}")),
    log:
        str(paths.log("scores", "{experiment}")),
    conda:
        "../envs/sublevel.yaml"
    threads: config["threads"]
    resources:
        **resources_of("scores"),
    params:
        spec=spec_for("scores"),
        spec_file=spec_file_for("scores"),
        device=config["device"],
    message:
        JOB_LINE
    shell:
        "python -m sublevel scores --spec {params.spec_file:q} --data {input.data:q} --trajectories {input.trajectories:q}"
        " --out {output.store:q} --table {output.table:q} --device {params.device:q} --threads {threads} > {log:q} 2>&1"


rule figure:
    input:
        unpack(lambda w: PLAN.figure_tables(w.experiment, w.figure)),
    output:
        png=report(
            str(paths.figure("{experiment}", "{figure}")),
            caption="../report/figure.rst",
            category=lambda w: REPORT_STAGES[FIGURES[w.figure].stage],
            subcategory="{experiment}",
            labels={"figure": "{figure}"},
        ),
        svg=str(paths.figure("{experiment}", "{figure}", "svg")),
    log:
        str(paths.log("figures", "{experiment}", "{figure}")),
    localrule: runs_locally("figure")
    conda:
        "../envs/sublevel.yaml"
    params:
        tables=files_arg(),
        # unused by the command: a figure is redrawn when the code that draws it changes (seconds each)
        drawn_by=hashlib.sha256(Path(importlib.util.find_spec("sublevel.figures").origin).read_bytes()).hexdigest(),
    message:
        JOB_LINE
    shell:
        "python -m sublevel figure {wildcards.figure:q} --out {output.png:q} {params.tables:q} > {log:q} 2>&1"


rule export:
    input:
        tables=PLAN.result_tables(),
    output:
        metrics=directory(str(paths.metrics_dir())),
        summary=report(
            directory(str(paths.summary_dir())),
            patterns=["{section}.csv"],
            caption="../report/summary.rst",
            category=REPORT_STAGES["summary"],
            labels={"section": "{section}"},
        ),
        plots=directory(str(paths.plots_dir())),
    log:
        str(paths.log("export", "summary")),
    localrule: runs_locally("export")
    conda:
        "../envs/sublevel.yaml"
    message:
        JOB_LINE
    shell:
        "python -m sublevel export --root . --metrics {output.metrics:q} --summary {output.summary:q} --plots {output.plots:q}"
        " > {log:q} 2>&1"


rule reproduction:
    input:
        tables=PLAN.result_tables(),
    output:
        report(str(paths.reproduction_file()), caption="../report/reproduction.rst", category="Reproductions"),
    log:
        str(paths.log("export", "reproduction")),
    localrule: runs_locally("reproduction")
    conda:
        "../envs/sublevel.yaml"
    params:
        # the shipped targets by content, not by their absolute path: a moved or copied project reruns nothing
        targets=hashlib.sha256(paths.TARGETS.read_bytes()).hexdigest(),
    message:
        JOB_LINE
    shell:
        "python -m sublevel reproduce --root . --format csv --out {output:q} > {log:q} 2>&1"


rule analysis_all:
    input:
        PLAN.analysis_outputs(),
    message:
        JOB_LINE
