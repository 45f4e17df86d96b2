#!/usr/bin/env bash
# config/gpu.yaml's Figure 4 DAG, run by snakemake on a GPU machine without network
# (docs/gpu-validation.md). Needs, beside the checkout (none committed):
#   results/gpu/tiny-smollm2/             python scripts/make_tiny_model.py --from <smollm2 dir> --out results/gpu/tiny-smollm2
#   results/gpu/level1-v01-2025-07.parquet  KernelBench L1 at the paper's commit
#   .wheels/                              snakemake and what the machine lacks, as wheels for its Python
# Usage, from the repository root: bash scripts/gpu_dag_check.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-/tmp/gpu-dag-check}}
mkdir -p "$OUT"
if ! python3 -c "import snakemake" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .wheels/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi -L | tee "$OUT/gpus.txt"
started=$(date +%s.%N)
set +e
python3 -m snakemake figures/fig4.pdf --configfile config/gpu.yaml config/test/gpu-device.yaml \
  --profile profiles/workstation --resources gpu=1 --cores "$(nproc)" > "$OUT/snakemake.log" 2>&1
rc=$?
set -e
ended=$(date +%s.%N)
echo "snakemake exit $rc, wall $(python3 -c "print(round($ended - $started, 1))") s" | tee "$OUT/summary.txt"
grep -E "^(local)?rule |^Finished job|jobs? \(100%\) done|Job stats" -A0 "$OUT/snakemake.log" | grep -E "rule|done" | sort | uniq -c | tee -a "$OUT/summary.txt"
tail -n 20 "$OUT/snakemake.log"
tar czf "$OUT/logs.tgz" results/logs results/benchmarks results/tables figures 2>/dev/null || true
python3 - <<'PY' | tee -a "$OUT/summary.txt"
import glob, json, pandas as pd
for path in sorted(glob.glob("results/evaluations/tiny-random/*/seed*.parquet")):
    ev = pd.read_parquet(path)
    print(path, len(ev), "records; error kinds", ev["error_kind"].value_counts(dropna=False).to_dict())
for path in sorted(glob.glob("results/samples/tiny-random/*/seed*.parquet")):
    s = pd.read_parquet(path)
    print(path, len(s), "samples;", "parse errors", s["parse_error_kind"].notna().sum(), "; n_tokens_code mean", round(s["n_tokens_code"].mean(), 1))
for path in sorted(glob.glob("results/**/*.provenance.json", recursive=True))[:3]:
    p = json.load(open(path))
    print(path, {k: p.get(k) for k in ("device", "gpu", "deviations_from_paper") if k in p})
for path in sorted(glob.glob("results/benchmarks/**/*.tsv", recursive=True)):
    print(path, open(path).read().splitlines()[-1].split("\t")[0], "s")
PY
exit $rc
