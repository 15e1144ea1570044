#!/bin/sh
# Container entrypoint: put the bundle in the persistent volume, build the TensorRT
# engine for this Jetson if it has none yet (minutes, once; progress in the log),
# then serve. Arguments are passed to `voxedge serve` (e.g. --link /dev/robot).
set -eu
BUNDLE="${VOXEDGE_BUNDLE:-/var/lib/voxedge/bundle}"
IMAGE_BUNDLE="${VOXEDGE_IMAGE_BUNDLE:-/opt/voxedge/bundle}"
if [ ! -f "$BUNDLE/manifest.json" ]; then
    if [ -f "$IMAGE_BUNDLE/manifest.json" ]; then
        # Copy beside the target, then rename: a copy cut short (full volume, power loss) never
        # leaves a bundle that looks complete; the next start copies again.
        mkdir -p "$(dirname "$BUNDLE")"
        rm -rf "$BUNDLE.partial"
        cp -a "$IMAGE_BUNDLE" "$BUNDLE.partial"
        rm -rf "$BUNDLE"
        mv "$BUNDLE.partial" "$BUNDLE"
        echo "voxedge: copied the image's bundle into $BUNDLE"
    else
        echo "voxedge: no bundle at $BUNDLE; copy one into the volume (voxedge convert on a workstation)" >&2
        exit 2
    fi
fi
if [ "${VOXEDGE_BACKEND:-tensorrt}" = "tensorrt" ]; then
    voxedge build-engine "$BUNDLE" --precision "${VOXEDGE_PRECISION:-int8}" --if-missing
fi
exec voxedge serve "$BUNDLE" "$@"
