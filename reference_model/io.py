"""Small file helpers shared by the dataset, training and evaluation code."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Write a file through ``write(fileobj)`` into a temp file beside it, then rename.

    Readers never see a half-written file, and a failure leaves the old file
    (or none) in place and no temp file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | Path, obj) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    return atomic_write(path, lambda f: f.write(json.dumps(obj, indent=2, sort_keys=True).encode() + b"\n"))


def progress_bar(total: int, desc: str, enabled: bool = True):
    """A tqdm bar (imported lazily: only data generation, training and evaluation show one)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="it", disable=not enabled, leave=False, dynamic_ncols=True)


def load_or_build(path: Path, load: Callable[[Path], object], build: Callable[[], object],
                  save: Callable[[object, Path], object], what: str, log=print):
    """The cached object at ``path``, or ``build()`` saved there first.

    A damaged or outdated cache file is rebuilt, never trusted (and said so through ``log``).
    """
    import zipfile
    import zlib

    path = Path(path)
    if path.exists():
        try:
            return load(path)
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, zlib.error) as exc:
            log(f"warning: cached {what} {path} is unreadable ({exc}); rebuilding")
    obj = build()
    save(obj, path)
    return obj
