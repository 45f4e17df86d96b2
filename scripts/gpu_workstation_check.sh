#!/usr/bin/env bash
# Run scripts/gpu_workstation_check.py on a multi-GPU machine without network: a venv on top of
# the system's torch/transformers/pandas/numpy, with what is missing installed from .wheels/
# (see docs/gpu-validation.md for how to fill it). Usage, from the repository root:
#   bash scripts/gpu_workstation_check.sh [--gpus 2] [--shards 2]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-/tmp/venv-gpu-ws-check}
WHEELS=${WHEELS:-.wheels}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv --system-site-packages "$VENV"
fi
# install only what the machine lacks (module name -> requirement)
need=()
for pair in "snakemake:snakemake>=9.19,<10" pyarrow:pyarrow scipy:scipy jsonschema:jsonschema yaml:pyyaml; do
  "$VENV/bin/python" -c "import ${pair%%:*}" 2>/dev/null || need+=("${pair#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing from $WHEELS: ${need[*]}"
  "$VENV/bin/pip" install -q --no-index --find-links "$WHEELS" "${need[@]}"
fi
nvidia-smi -L || true
PYTHONPATH=. exec "$VENV/bin/python" scripts/gpu_workstation_check.py "$@"
