# sublevel: how many degrees of freedom does training a network need?
# Thin on purpose: config, validation and adapters in workflow/rules/common.smk, the planning in
# src/sublevel/plan.py, one .smk per stage.
#   snakemake --cores all                                   # the default experiment (config/config.yaml)
#   snakemake --cores all --configfile config/smoke.yaml    # a seconds-long check


# A --configfile on the command line replaces the default experiment instead of merging into it.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/imp.smk"
include: "workflow/rules/subspace.smk"
include: "workflow/rules/analysis.smk"


onstart:
    if PLAN.having("refine_plan"):
        from snakemake.logging import logger

        logger.info(
            "Subspace sweeps refine round by round: each round's jobs are planned once the round before "
            "has finished, so the job total below grows as they do."
        )


rule all:
    default_target: True
    input:
        PLAN.dense_outputs(),
        PLAN.imp_outputs(),
        PLAN.subspace_outputs(),
        PLAN.analysis_outputs(),
        refine_plans,
        sweep_files,
    message:
        JOB_LINE


# Every job that runs a network (dense training, scores, IMP with its baselines and barriers, the sweeps with
# their refinement rounds, sharpness), without the analysis tables, figures and exports: what a GPU machine
# does, leaving those (polars, duckdb, matplotlib; seconds on a CPU) to a plain `snakemake` afterwards.
rule compute_all:
    input:
        PLAN.compute_outputs(),
        refine_plans,
        sweep_files,
    message:
        JOB_LINE
