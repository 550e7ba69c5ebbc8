#!/usr/bin/env bash
# Every GPU measurement of docs/benchmarks.md, on a GPU machine whose Python has torch but no package registry.
# On a machine with one, gather the other wheels first:  ../shared/tools/gpu-wheels.sh .whl
# Then, on the GPU machine, from a copy of the tree with .whl/ in it, one part per command (each within
# 10 minutes), each prefixed with SUBLEVEL_COMMIT=$(git rev-parse --short HEAD) where the copy has no .git of
# its tree (the JSON says "+dirty" otherwise):
#   bash bench/gpu-session.sh bench      # start-up costs, subspace suite (Fastfood, dense) + profile: ~8 min
#   bash bench/gpu-session.sh fastfood   # the subspace suite's Fastfood rows + profile only: ~3 min
#   bash bench/gpu-session.sh suites     # Fastfood under TF32, dense ResNet-20, IMP runs: ~3 min
#   bash bench/gpu-session.sh compile    # Fastfood rows and ResNet-20 under torch.compile (default mode)
#   bash bench/gpu-session.sh cudagraphs # the same in mode reduce-overhead (CUDA graphs)
#   bash bench/gpu-session.sh pipeline   # the default config with --resources gpu=1, timed (resumes if cut);
#                                        # GPU_SLOTS=4 lets four jobs share the one GPU
#   bash bench/gpu-session.sh acceptance # the Fastfood rows at every d, then the pipeline for the rest of
#                                        # ~9.5 minutes
# Each bench JSON is written straight to $OUT (so a command cut at its limit still leaves what finished),
# everything printed to $OUT/session-<part>.txt, and the pipeline's snakemake output, job logs and Snakemake's
# job records to $OUT/ as three files. Back on the CPU machine:
#   mkdir -p /tmp/gpu/.snakemake && tar xzf <OUT>/metadata.tgz -C /tmp/gpu/.snakemake
#   .venv/bin/sublevel jobs --root /tmp/gpu      # what each GPU job took, per rule, beside `sublevel jobs` here
set -uo pipefail
part=${1:-bench}
case $part in bench|fastfood|suites|compile|cudagraphs|pipeline|acceptance) ;;
  *) echo "unknown part $part: bench, fastfood, suites, compile, cudagraphs, pipeline or acceptance" >&2; exit 2 ;;
esac
began=$(date +%s)
out=${OUT:-/tmp/gpu-session}; mkdir -p "$out"
log="$out/session-$part.txt"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
export PYTHONPATH=$PWD/src:/tmp/site PATH=/tmp/site/bin:$PATH
export PYTHONUNBUFFERED=1
# Every pipeline job is a new process: its imports must read bytecode, not compile torch's sources anew. The
# carried packages (installed --no-compile) get theirs from the first process; torch's are the image's, and
# where it ships none, they go to a cache of their own.
unset PYTHONDONTWRITEBYTECODE
if ! python3 -c "import importlib.util as u, os, sys; d = os.path.dirname(u.find_spec('torch').origin)
sys.exit(not os.path.isdir(os.path.join(d, '__pycache__')))"; then export PYTHONPYCACHEPREFIX=/tmp/pycache; fi
echo "bytecode: PYTHONPYCACHEPREFIX=${PYTHONPYCACHEPREFIX:-unset}" | tee -a "$log"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee -a "$log"
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr -c 'A-Za-z0-9.-' _ | sed 's/_*$//')
json="$out/$gpu-$(date +%F)"  # + -<what>.json
bench="python3 bench/run.py run"

startup() {  # what each pipeline job pays before its first step: imports, CUDA context, deterministic mode
  python3 - <<'PY' 2>&1 | tee -a "$log"
import time; t0 = time.perf_counter()
import torch, zarr, sublevel.training, sublevel.runtime as rt; t1 = time.perf_counter()
import torch._dynamo; t2 = time.perf_counter()  # torch.optim and torch.func.vmap import it on first use
torch.zeros(1, device="cuda"); torch.cuda.synchronize(); t3 = time.perf_counter()
rt.seed_everything(1, torch.device("cuda")); (torch.ones(64, 64, device="cuda") @ torch.ones(64, 64, device="cuda")).sum().item()
t4 = time.perf_counter()
print(f"startup: imports {t1 - t0:.2f} s, torch._dynamo {t2 - t1:.2f} s, CUDA context {t3 - t2:.2f} s, "
      f"deterministic mode + first matmul {t4 - t3:.2f} s")
PY
}

pipeline() {  # the default config on the GPU for at most $1 seconds
  # target compute_all, every job that runs a network, so polars and duckdb need not be there (the analysis
  # tables and figures run on the CPU afterwards; --omit-from analyse_subspace would also drop the refinement
  # rounds, which are decided after a checkpoint). A command cut at its limit leaves results/ behind: the same
  # part run again resumes (--rerun-incomplete), and the wall times of the runs add up.
  local start=$(date +%s)
  timeout "$1" snakemake compute_all --cores 16 --resources gpu=${GPU_SLOTS:-1} --rerun-incomplete \
    > "$out/snakemake.txt" 2>&1
  echo "pipeline: rc=$? wall_s=$(( $(date +%s) - start )) (timeout $1 s)" | tee -a "$log"
  grep -E "steps \([0-9]+%\) done" "$out/snakemake.txt" | tail -1 | tee -a "$log"
  tar czf "$out/logs.tgz" results/logs 2>/dev/null
  tar czf "$out/metadata.tgz" -C .snakemake metadata 2>/dev/null  # rule, start and end per output: `sublevel jobs`
}
case $part in
bench)
  startup; startup  # twice: the first process after the install also writes the installed packages' bytecode
  TIMEFORMAT="startup: python -m sublevel --help %R s"; { time python3 -m sublevel --help > /dev/null; } 2>&1 \
    | tee -a "$log"
  $bench --projections fastfood dense --steps 40 --loop-steps 60 --profile-steps 20 --out "$json.json" 2>&1 \
    | tee -a "$log"
  ;;
fastfood)
  $bench --projections fastfood --steps 40 --loop-steps 20 --profile-steps 20 --out "$json-fastfood.json" 2>&1 \
    | tee -a "$log"
  ;;
suites)
  $bench --projections fastfood --steps 40 --loop-steps 20 --tf32 --out "$json-tf32.json" 2>&1 | tee -a "$log"
  $bench --suite dense --steps 50 --out "$json-dense.json" 2>&1 | tee -a "$log"
  $bench --suite imp --runs 8 --steps 200 --out "$json-imp.json" 2>&1 | tee -a "$log"
  ;;
compile|cudagraphs)
  mode=$([ $part = compile ] && echo default || echo reduce-overhead)
  $bench --projections fastfood --steps 40 --loop-steps 20 --compile $mode --out "$json-fastfood-$mode.json" 2>&1 \
    | tee -a "$log"
  $bench --suite dense --steps 50 --compile $mode --out "$json-dense-$mode.json" 2>&1 | tee -a "$log"
  ;;
pipeline)
  pipeline 540
  ;;
acceptance)
  # the unmeasured numbers first (Fastfood version 2 at every d, no profile), then as much pipeline as fits
  $bench --projections fastfood --steps 40 --loop-steps 20 --out "$json-fastfood.json" 2>&1 | tee -a "$log"
  startup  # a process after the bench's: its bytecode is written, as for every pipeline job but the first
  left=$(( 570 - ($(date +%s) - began) ))  # `timeout 0` would mean no limit at all
  if [ $left -gt 30 ]; then pipeline $left; else echo "pipeline: not started, $left s left" | tee -a "$log"; fi
  ;;
esac
true
