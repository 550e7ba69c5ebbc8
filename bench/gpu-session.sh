#!/usr/bin/env bash
# Every GPU measurement of the README in one call on a lent GPU machine (no registry there; its Python has
# torch). Here first:  ../shared/tools/gpu-wheels.sh .whl   (and "/.whl/" in .git/info/exclude)
# Then, through the device tool, with carry [".whl"]:   bash bench/gpu-session.sh
# Writes the bench JSON to bench/results/ and $OUT/, and the pipeline's timing and logs to $OUT/.
# PIPELINE=0 skips the snakemake run (the benches take ~5 minutes, the default pipeline longer).
set -uo pipefail
out=${OUT:-/tmp/gpu-session}; mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
export PYTHONPATH=$PWD/src:/tmp/site PATH=/tmp/site/bin:$PATH SUBLEVEL_COMMIT=$(git rev-parse HEAD 2>/dev/null)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -m sublevel bench --projections fastfood dense --steps 40 --loop-steps 60 --profile-steps 20 2>&1 \
  | tee "$out/bench-subspace.txt"
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr -c 'A-Za-z0-9.-' _ | sed 's/_*$//')
python3 -m sublevel bench --projections fastfood --steps 40 --loop-steps 20 --tf32 \
  --out "bench/results/${gpu}-$(date +%F)-tf32.json" 2>&1 | tee "$out/bench-subspace-tf32.txt"
python3 -m sublevel bench --suite dense --steps 100 2>&1 | tee "$out/bench-dense.txt"
python3 -m sublevel bench --suite imp --runs 8 --steps 200 2>&1 | tee "$out/bench-imp.txt"
cp bench/results/*"$(date +%F)"*.json "$out/" 2>/dev/null
if [ "${PIPELINE:-1}" = 1 ]; then
  # polars and duckdb do not fit the carry: the analysis rules and figures run on the CPU afterwards
  start=$(date +%s)
  snakemake --cores 16 --resources gpu=1 --omit-from analyse_subspace figure export > "$out/snakemake.txt" 2>&1
  echo "rc=$? wall_s=$(( $(date +%s) - start ))" | tee "$out/pipeline.txt"
  tail -5 "$out/snakemake.txt"
  tar czf "$out/logs.tgz" results/logs 2>/dev/null
fi
