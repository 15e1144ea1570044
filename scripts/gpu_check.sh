#!/usr/bin/env bash
# First run on a machine with an NVIDIA GPU, TensorRT and pycuda: builds the int8 and fp16
# engines of a reference bundle, compares them with ONNX Runtime, feeds extreme audio, shows
# the front end's layer precisions and times TensorRT against ONNX Runtime CUDA; writes
# gpu_check.json. See scripts/gpu_check.py. Usage: scripts/gpu_check.sh [BUNDLE] [--out FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=python3
if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; fi
# 5 minutes is the target on a desktop GPU; the limit leaves room for a first conversion.
exec timeout 900 "$PYTHON" scripts/gpu_check.py "$@"
