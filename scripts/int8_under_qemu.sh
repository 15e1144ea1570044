#!/usr/bin/env bash
# Run the INT8 tests as ONNX Runtime computes on another x86-64 CPU, emulated by qemu-user:
#   scripts/int8_under_qemu.sh Haswell     # AVX2, no VNNI/AVX-512: int8 pair sums saturate in int16
#   scripts/int8_under_qemu.sh Nehalem     # SSE4.2: ONNX Runtime's exact int8 kernels
#   scripts/int8_under_qemu.sh Haswell tests/test_calibration.py -k gate    # other tests
# qemu shows the program the CPU it names (CPUID), so ONNX Runtime, numpy and voxedge's own
# probe (edge/int8_numerics.py) dispatch as they would there. Subprocesses a test starts run on the
# real CPU, so tests that shell out check nothing more here. Needs qemu-user (make setup installs it)
# and the .venv; run from the repository root. Emulation is slow: minutes, not seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ]; then
  echo "usage: $0 QEMU_CPU_MODEL [pytest arguments]   (qemu-x86_64 -cpu help lists the models)" >&2
  exit 2
fi
cpu=$1
shift
command -v qemu-x86_64 >/dev/null || { echo "qemu-x86_64 is missing: apt-get install qemu-user" >&2; exit 1; }
[ -x .venv/bin/python ] || { echo ".venv is missing: run make setup first" >&2; exit 1; }
if [ $# -eq 0 ]; then
  set -- tests/test_int8_numerics.py tests/test_graph.py tests/test_quantize.py -m "not slow"
fi
# qemu warns once per CPUID feature its emulator lacks (e.g. Haswell's TSX); those do not touch int8.
exec qemu-x86_64 -cpu "$cpu" .venv/bin/python -m pytest -p no:cacheprovider -q "$@" \
  2> >(grep -v "TCG doesn't support requested feature" >&2)
