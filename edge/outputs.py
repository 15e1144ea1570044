"""Outputs never destroy what their command did not create.

``voxedge convert --out DIR`` once replaced whatever was at ``DIR`` (a folder
of the user's files, a regular file) and printed success. Every command that
writes a directory now claims it first: a path that does not exist, an empty
directory, or an earlier output of the same kind (recognised by its marker
file: a bundle's ``manifest.json``, a set's ``index.jsonl``) may be written;
anything else is refused before any work starts, unless ``--force``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path


class OutputError(Exception):
    """An output path the command will not write; the message says why and what to do."""


def writable_dir(path: str | Path, what: str = "--out") -> Path:
    """Create ``path`` (a directory) if needed and check that files can be written in it, before any work:
    an impossible or read-only output fails in seconds, not after the work is done."""
    import tempfile

    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=p).close()
    except OSError as exc:
        raise OutputError(f"{what} {p} cannot be written: {exc.strerror or exc}; choose a folder you can write "
                          "to") from None
    return p


@contextlib.contextmanager
def output_dir(path: str | Path, what: str = "--out") -> Iterator[Path]:
    """``writable_dir`` for the length of a command: the folders it had to create are removed again, if
    still empty, when the command fails, so a failed run leaves nothing behind."""
    p = Path(path)
    missing = []
    for d in (p, *p.parents):
        if d.exists() or d.is_symlink():
            break
        missing.append(d)
    try:
        yield writable_dir(p, what)
    except BaseException:
        for d in missing:  # deepest first; a folder that received something stays
            try:
                d.rmdir()
            except OSError:
                break
        raise


def _check_parent(p: Path) -> None:
    """The parent of a new output must be a directory that can be written (created if missing)."""
    writable_dir(p.parent, what=f"the folder of --out {p}")


def claim_output(path: str | Path, marker: str, what: str, force: bool = False, flag: str = "--out") -> Path:
    """Check that ``path`` may receive a ``what`` (a directory with ``marker``); raise OutputError if not.

    With ``force`` a directory is replaced whatever it holds (atomically, by the writer) and a file at
    the path is removed first. ``flag`` is how the user named the path (for the messages).
    """
    p = Path(path)
    if p.is_symlink():
        if not force:
            raise OutputError(f"{flag} {p} is a symbolic link; give the real directory, or --force to replace the link")
        p.unlink()
        return p
    if not p.exists():
        if p.parent.exists() and not p.parent.is_dir():
            raise OutputError(f"{flag} {p}: {p.parent} is a file, not a directory")
        _check_parent(p)
        return p
    if p.is_dir():
        if (p / marker).is_file() or not any(p.iterdir()) or force:
            return p
        raise OutputError(f"{flag} {p} exists and is not a {what} (it has no {marker}): it was not written by "
                          f"this command, so it is left alone. Choose another {flag}, or add --force to replace it")
    if not force:
        raise OutputError(f"{flag} {p} is a file, not a {what} directory; choose another {flag}, or add --force "
                          "to replace it")
    p.unlink()
    return p
