"""Versions of what the pipeline regenerates from seeds instead of storing. Torch-free, so the Snakefile reads
them: a rule passes its version as a param, and Snakemake reruns a job whose stored outputs an older version
wrote (params are one of its rerun triggers)."""

PROJECTIONS = 3  # seed -> P (sublevel.projections); 2 (2026-11-23): Fastfood's blocks share H B w, and their
# permutations are drawn by one argsort per run; 3 (2026-12-03): a dense P is drawn in row blocks, each by its own
# generator, on all threads, and normalised with float64 column sums (Fastfood's P is unchanged from 2)
