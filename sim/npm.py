"""npm packages the evaluation and corpus synthesizers run in node.js (SAM, GnuSpeech), installed on first use."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from sim.errors import SynthesisError

NPM_TIMEOUT_S = 300.0


def ensure_package(root: Path, package: str, what: str) -> Path:
    """``root`` (made absolute) with ``node_modules/<package>`` in it, installed from npm the first time.

    ``package`` is an npm spec with its version (``sam-js@0.3.1``, ``@scope/name@1.0.0``); ``what`` names the
    synthesizer in the errors.

    Raises:
        SynthesisError: node.js or npm is missing, or npm could not install the package (its error is quoted).
    """
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise SynthesisError(f"{what} needs node.js and npm: `sudo apt-get install nodejs npm`")
    root = Path(root).resolve()  # absolute: node later runs in it, and a relative path would resolve twice
    name = package.rsplit("@", 1)[0] if package.count("@") > package.startswith("@") else package
    if not (root / "node_modules" / name / "package.json").is_file():
        root.mkdir(parents=True, exist_ok=True)
        try:
            subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", str(root), package],
                           check=True, capture_output=True, timeout=NPM_TIMEOUT_S)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            detail = (getattr(exc, "stderr", b"") or b"").decode(errors="replace").strip()
            raise SynthesisError(f"could not install {package} from npm: {detail[-400:] or exc}") from exc
    return root
