#!/usr/bin/env bash
# Every GPU measurement of the README on a lent GPU machine (no registry there; its Python has torch).
# Here first:  ../shared/tools/gpu-wheels.sh .whl   (and "/.whl/" in .git/info/exclude)
# Then, through the device tool, with carry [".whl"], one part per call (each fits a 10-minute call), each
# command starting with SUBLEVEL_COMMIT=$(git rev-parse --short HEAD) as typed here (the device's copy of
# .git can be older than the tree it runs; without it the JSON says "+dirty" then):
#   bash bench/gpu-session.sh bench      # start-up costs, subspace suite (Fastfood, dense) + profile: ~8 min
#   bash bench/gpu-session.sh fastfood   # the subspace suite's Fastfood rows + profile only: ~3 min
#   bash bench/gpu-session.sh suites     # Fastfood under TF32, dense ResNet-20, IMP runs: ~3 min
#   bash bench/gpu-session.sh compile    # Fastfood rows and ResNet-20 under torch.compile (default mode)
#   bash bench/gpu-session.sh cudagraphs # the same in mode reduce-overhead (CUDA graphs)
#   bash bench/gpu-session.sh pipeline   # the default config with --resources gpu=1, timed (resumes if cut);
#                                        # GPU_SLOTS=4 lets four jobs share the one GPU
# Each bench JSON is written straight to $OUT (so a call cut at its limit still brings back what finished),
# everything printed to $OUT/session-<part>.txt, and the pipeline's snakemake output and job logs to $OUT/
# (a device call brings back 8 files at most).
set -uo pipefail
part=${1:-bench}
case $part in bench|fastfood|suites|compile|cudagraphs|pipeline) ;;
  *) echo "unknown part $part: bench, fastfood, suites, compile, cudagraphs or pipeline" >&2; exit 2 ;;
esac
out=${OUT:-/tmp/gpu-session}; mkdir -p "$out"
log="$out/session-$part.txt"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
export PYTHONPATH=$PWD/src:/tmp/site PATH=/tmp/site/bin:$PATH
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee -a "$log"
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr -c 'A-Za-z0-9.-' _ | sed 's/_*$//')
json="$out/$gpu-$(date +%F)"  # + -<what>.json
bench="python3 -m sublevel bench"
case $part in
bench)
  # what each pipeline job pays before its first step: interpreter + imports, CUDA context, deterministic mode;
  # twice: the first process after the install also writes the carried packages' bytecode
  for _ in 1 2; do python3 - <<'PY' 2>&1 | tee -a "$log"
import time; t0 = time.perf_counter()
import torch, zarr, sublevel.training as tr; t1 = time.perf_counter()
torch.zeros(1, device="cuda"); torch.cuda.synchronize(); t2 = time.perf_counter()
tr.seed_everything(1, torch.device("cuda")); (torch.ones(64, 64, device="cuda") @ torch.ones(64, 64, device="cuda")).sum().item()
t3 = time.perf_counter()
print(f"startup: imports {t1 - t0:.2f} s, CUDA context {t2 - t1:.2f} s, deterministic mode + first matmul {t3 - t2:.2f} s")
PY
  done
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
  # polars and duckdb do not fit the carry: the analysis rules and figures run on the CPU afterwards. A call
  # cut at its limit leaves results/ on the warm machine: the same part again resumes (--rerun-incomplete),
  # and the wall times of the calls add up.
  start=$(date +%s)
  timeout 540 snakemake --cores 16 --resources gpu=${GPU_SLOTS:-1} --rerun-incomplete \
    --omit-from analyse_subspace figure export > "$out/snakemake.txt" 2>&1
  echo "rc=$? wall_s=$(( $(date +%s) - start ))" | tee -a "$log"
  tail -5 "$out/snakemake.txt"
  tar czf "$out/logs.tgz" results/logs 2>/dev/null
  ;;
esac
true
