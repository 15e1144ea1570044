"""Bounded hand-over between threads: a slot that holds one item and drops the older one.

Queues between the runtime's threads never grow (``docs/architecture.md``):
a slow consumer sees only the newest item, and every replaced item is counted
so the panel and ``/metrics`` can show what was dropped.
"""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class LatestSlot(Generic[T]):
    """Holds at most one item; ``put`` replaces an untaken one (counted in ``dropped``)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: T | None = None
        self._full = False
        self.put_count = 0
        self.dropped = 0

    def put(self, item: T) -> bool:
        """Store ``item``; returns False if it replaced one nobody took."""
        with self._cond:
            replaced = self._full
            if replaced:
                self.dropped += 1
            self._item, self._full = item, True
            self.put_count += 1
            self._cond.notify_all()
            return not replaced

    def take(self, timeout_s: float | None = None) -> T | None:
        """The item, removing it; None if none arrived within ``timeout_s``."""
        with self._cond:
            if not self._full and not self._cond.wait_for(lambda: self._full, timeout_s):
                return None
            item, self._item, self._full = self._item, None, False
            return item

    def clear(self) -> None:
        with self._cond:
            self._item, self._full = None, False

    def __bool__(self) -> bool:
        with self._cond:
            return self._full
