"""Replace a whole directory so that a crash at any moment leaves either the old or the new one in place.

A bundle is a directory, and POSIX has no atomic "replace this directory". So:

1. The new directory is staged beside the destination as ``.NAME.<random>.tmp``, its files
   and the folder itself fsynced.
2. Linux swaps the staged directory and the destination in one step with
   ``renameat2(..., RENAME_EXCHANGE)`` (Linux >= 3.15, glibc >= 2.28, called through ctypes);
   the old one then sits at the staging path and is deleted.
3. Where the kernel, libc or filesystem lacks the exchange, two renames are used: the old
   directory to ``.NAME.old``, then the new one into place. A crash between them leaves no
   destination but a whole ``.NAME.old``, which ``recover`` renames back.

``recover`` runs before each replace and when a bundle is loaded: it rolls back an
interrupted two-rename swap and deletes staging and old directories that a crash left behind.
A lock (``flock`` on the parent folder, so no lock file is left beside the bundle) keeps it
from deleting the staging directory of a replace still running in another process.

``_step`` is called between every two filesystem operations; it does nothing, and the
crash-injection tests replace it to kill the process at each step in turn.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

AT_FDCWD = -100
RENAME_EXCHANGE = 2
# errnos that mean "no exchange here" (old kernel, libc or filesystem), not "this swap failed"
_NO_EXCHANGE = {errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP}


def _step(name: str) -> None:
    """A point between two filesystem operations (the crash-injection tests hook it)."""


def _staging_prefix(dest: Path) -> str:
    return f".{dest.name}."


def old_path(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.old")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file under ``root``, then every folder, deepest first (so the renames that follow
    publish data that is on the disk)."""
    dirs = []
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        dirs.append(Path(folder))
    for folder in reversed(dirs):
        _fsync_dir(folder)


def _exchange(a: Path, b: Path) -> bool:
    """Swap ``a`` and ``b`` in one step; False where this system cannot (then nothing happened)."""
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in _NO_EXCHANGE:
        return False
    raise OSError(err, f"cannot swap {a} and {b}: {os.strerror(err)}")


@contextlib.contextmanager
def _locked(dest: Path, blocking: bool = True) -> Iterator[bool]:
    """Hold the lock of the destination's parent folder; yields False (and holds nothing) if ``blocking``
    is False and another process holds it."""
    fd = os.open(dest.parent, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing releases the lock


def _recover_unlocked(dest: Path) -> list[str]:
    done = []
    old = old_path(dest)
    if old.is_dir():
        if not dest.exists():
            os.replace(old, dest)  # a two-rename swap was cut between its renames: roll back
            done.append(f"restored {dest.name} from {old.name} (a replace was interrupted)")
        else:
            shutil.rmtree(old, ignore_errors=True)
            done.append(f"removed {old.name} (left by an interrupted replace)")
    for leftover in dest.parent.glob(f"{_staging_prefix(dest)}*.tmp"):
        shutil.rmtree(leftover, ignore_errors=True)
        done.append(f"removed {leftover.name} (left by an interrupted replace)")
    return done


def recover(dest: str | Path) -> list[str]:
    """Finish or roll back a replace of ``dest`` that a crash interrupted; returns what was done.

    Does nothing while another process is replacing ``dest`` (it holds the lock), or where the
    parent folder is not writable (a read-only bundle: nothing to repair there).
    """
    dest = Path(dest)
    parent = dest.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        return []
    if not old_path(dest).exists() and not any(parent.glob(f"{_staging_prefix(dest)}*.tmp")):
        return []
    with _locked(dest, blocking=False) as held:
        return _recover_unlocked(dest) if held else []


def replace_dir(dest: str | Path, populate: Callable[[Path], object]):
    """Stage a new directory with ``populate(tmp)`` and swap it in for ``dest``; returns what populate
    returned. If populate raises, nothing changes and the staging directory is removed."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _locked(dest):
        _recover_unlocked(dest)
        tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=_staging_prefix(dest), suffix=".tmp"))
        _step("staged")
        try:
            result = populate(tmp)
            os.chmod(tmp, 0o755)
            fsync_tree(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _step("synced")
        if not dest.exists():
            os.replace(tmp, dest)
            _step("renamed")
        elif _exchange(tmp, dest):
            _step("exchanged")
            _fsync_dir(dest.parent)
            _step("exchange synced")
            shutil.rmtree(tmp, ignore_errors=True)  # the old directory, now at the staging path
        else:
            old = old_path(dest)
            os.replace(dest, old)
            _step("old moved aside")
            os.replace(tmp, dest)
            _step("new in place")
            _fsync_dir(dest.parent)
            shutil.rmtree(old, ignore_errors=True)
        _fsync_dir(dest.parent)
        _step("done")
    return result
