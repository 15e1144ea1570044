#!/usr/bin/env bash
# Install the Debian/Ubuntu packages voxedge needs, only those missing.
# Uses sudo when not root. Called by `make`; safe to run again.
set -euo pipefail

PYTHON=${PYTHON:-python3}
# espeak-ng speaks the simulated commands; portaudio19-dev and gcc build PyAudio;
# pulseaudio, pulseaudio-utils (pactl, pacat) and libasound2-plugins (ALSA's "pulse"
# device) give the microphone tests a virtual audio device. chromium and chromium-driver (built
# from one source package, so their versions match) run the control panel's browser tests.
# The tests lint these scripts with the shellcheck package (tests/test_scripts.py).
packages=(espeak-ng portaudio19-dev gcc make pulseaudio pulseaudio-utils libasound2-plugins chromium chromium-driver
          shellcheck)
# Packages some archives lack: Ubuntu ships Chromium as a snap only (its chromium-browser deb is a
# wrapper that needs snapd), so there they are skipped with a note and the browser tests skip, or
# use Playwright's own Chromium after `.venv/bin/playwright install --with-deps chromium`.
optional=(chromium chromium-driver)
# qemu-user runs the int8 tests under emulated CPUs with and without saturating int8 kernels
# (tests/test_int8_numerics.py, scripts/int8_under_qemu.sh); it emulates x86-64, so only there.
if [ "$(uname -m)" = x86_64 ]; then packages+=(qemu-user); fi
# A distribution Python needs its pythonX.Y-venv / pythonX.Y-dev packages for the
# venv and for building PyAudio; a self-built Python (pyenv) already has both.
pyver=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if ! "$PYTHON" -c "import ensurepip, venv" >/dev/null 2>&1; then packages+=("python${pyver}-venv"); fi
if ! "$PYTHON" -c "import os, sysconfig; assert os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h'))" >/dev/null 2>&1; then
  packages+=("python${pyver}-dev")
fi

# Each tool's output is captured first and then matched: under `set -o pipefail`, `cmd | grep -q` fails
# whenever grep exits at its first match before cmd has written everything (cmd dies of SIGPIPE, exit 141),
# which made chromium look absent from Debian 12's archive.
missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$status" == *"install ok installed"* ]] || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "voxedge: these system packages are missing: ${missing[*]}." >&2
  echo "This set-up script knows apt-get only (Debian/Ubuntu); install them with your package manager and run make again." >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "voxedge: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  SUDO="sudo"
fi
# env: sudo resets the environment, which would drop DEBIAN_FRONTEND.
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
available=()
for p in "${missing[@]}"; do
  policy=$(apt-cache policy "$p" 2>/dev/null || true)
  if [[ " ${optional[*]} " == *" $p "* ]] && ! grep -q "Candidate: [^(]" <<<"$policy"; then
    echo "voxedge: note: $p is not in this system's package archive (Ubuntu has it as a snap only); the" \
         "panel's browser tests will be skipped unless a Chromium is found (see scripts/install_system_deps.sh)" >&2
    continue
  fi
  available+=("$p")
done
missing=("${available[@]}")
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "voxedge: installing system packages: ${missing[*]}"
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
