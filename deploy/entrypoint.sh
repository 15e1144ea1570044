#!/bin/sh
# Container entrypoint: put the bundle in the persistent volume, build the TensorRT
# engine for this Jetson if it has none yet (minutes, once; progress in the log),
# then serve. Arguments are passed to `voxedge serve` (e.g. --link /dev/robot).
set -eu
BUNDLE="${VOXEDGE_BUNDLE:-/var/lib/voxedge/bundle}"
if [ ! -f "$BUNDLE/manifest.json" ]; then
    if [ -f /opt/voxedge/bundle/manifest.json ]; then
        mkdir -p "$(dirname "$BUNDLE")"
        cp -a /opt/voxedge/bundle "$BUNDLE"
    else
        echo "voxedge: no bundle at $BUNDLE; copy one into the volume (voxedge convert on a workstation)" >&2
        exit 2
    fi
fi
if [ "${VOXEDGE_BACKEND:-tensorrt}" = "tensorrt" ]; then
    voxedge build-engine "$BUNDLE" --precision "${VOXEDGE_PRECISION:-int8}" --if-missing
fi
exec voxedge serve "$BUNDLE" "$@"
