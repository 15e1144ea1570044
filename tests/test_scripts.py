"""The shell scripts: shellcheck-clean, and none of the `set -o pipefail` + `cmd | grep -q` trap.

Under pipefail, `cmd | grep -q PATTERN` fails whenever grep exits at its first match before cmd has
written everything (cmd dies of SIGPIPE, exit 141): `apt-cache policy chromium | grep -q ...` made
Debian's chromium look absent, so the browser tests never ran on a fresh machine (issue 18).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _shell_scripts() -> list[Path]:
    files = subprocess.run(["git", "ls-files"], capture_output=True, text=True, cwd=ROOT, check=True).stdout.split()
    out = []
    for name in files:
        path = ROOT / name
        if not path.is_file():
            continue
        head = path.read_bytes()[:64]
        if name.endswith(".sh") or re.match(rb"#!\s*(/usr/bin/env\s+)?(/bin/)?(ba)?sh\b", head):
            out.append(path)
    return out


def test_the_repository_has_the_scripts_this_checks():
    names = {p.relative_to(ROOT).as_posix() for p in _shell_scripts()}
    assert {".ci/run", "scripts/install_system_deps.sh", "deploy/entrypoint.sh"} <= names, names


def test_no_script_pipes_into_grep_q_under_pipefail():
    offenders = []
    for path in _shell_scripts():
        text = path.read_text()
        if re.search(r"set\s+-[a-z]*o\s+pipefail|set\s+-o\s+pipefail", text):
            for n, line in enumerate(text.splitlines(), start=1):
                if re.search(r"\|\s*grep\s+(-[a-zA-Z]*q|--quiet)", line) and not line.lstrip().startswith("#"):
                    offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not offenders, "pipefail + `| grep -q` (SIGPIPE makes it fail on a match):\n" + "\n".join(offenders)


@pytest.mark.skipif(shutil.which("shellcheck") is None,
                    reason="shellcheck is not installed (scripts/install_system_deps.sh installs it)")
def test_shellcheck_finds_no_warnings():
    r = subprocess.run(["shellcheck", "-S", "warning", *map(str, _shell_scripts())], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-4000:]


def test_the_grep_q_trap_is_real():
    """The pattern this file forbids fails with 141 under pipefail even though grep matched."""
    r = subprocess.run(["bash", "-c", "set -o pipefail; yes | grep -q y; echo $?"], capture_output=True, text=True)
    assert r.stdout.strip() == "141"
