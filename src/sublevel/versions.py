"""Versions of what the pipeline regenerates from seeds instead of storing. Torch-free, so the Snakefile reads
them: a rule passes its version as a param, and Snakemake reruns a job whose stored outputs an older version
wrote (params are one of its rerun triggers)."""

PROJECTIONS = 4  # seed -> P, and the lottery basis (sublevel.projections); what each version changed: CHANGELOG.md
