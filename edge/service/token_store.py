"""The operator token at rest: a file only its owner can read, never a line in the journal.

``voxedge serve`` without ``VOXEDGE_TOKEN`` (or ``"token"`` in its config) used to print a fresh token
on stdout at every start; under systemd that line lands in the journal, which everyone in the
``systemd-journal`` group reads. Now the token is kept in ``<state dir>/token`` (mode 0600), created
on the first start and reused after; ``serve`` shows it only on an interactive terminal, and
``voxedge token`` prints it (``--rotate`` replaces it).

The state directory: ``$VOXEDGE_STATE_DIR``; else systemd's ``$STATE_DIRECTORY`` (``StateDirectory=``
in the unit: /var/lib/voxedge); else ``$XDG_STATE_HOME/voxedge``; else ``~/.local/state/voxedge``.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

TOKEN_NAME = "token"


class TokenStoreError(OSError):
    """The token file cannot be read or written; the message names it and what to do."""


def state_dir() -> Path:
    env = os.environ
    if env.get("VOXEDGE_STATE_DIR"):
        return Path(env["VOXEDGE_STATE_DIR"])
    if env.get("STATE_DIRECTORY"):  # systemd: may list several, colon-separated
        return Path(env["STATE_DIRECTORY"].split(":")[0])
    base = Path(env["XDG_STATE_HOME"]) if env.get("XDG_STATE_HOME") else Path.home() / ".local" / "state"
    return base / "voxedge"


def token_path() -> Path:
    return state_dir() / TOKEN_NAME


def _write(path: Path, token: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never readable by others, not even briefly
    try:
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_or_create(rotate: bool = False) -> tuple[str, Path, bool]:
    """(token, its file, whether it was created now). A file others can read is tightened to 0600."""
    from edge.service.security import token_strength_problem

    path = token_path()
    try:
        if path.is_file() and not rotate:
            if path.stat().st_mode & 0o077:
                os.chmod(path, 0o600)
            token = path.read_text().strip()
            if not token_strength_problem(token):
                return token, path, False
        token = secrets.token_urlsafe(24)
        _write(path, token)
        return token, path, True
    except OSError as exc:
        raise TokenStoreError(f"cannot keep the operator token in {path}: {exc.strerror or exc}; set "
                              "VOXEDGE_STATE_DIR to a writable folder, or give the token in VOXEDGE_TOKEN") from None
