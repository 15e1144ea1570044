"""Alerts for people: one alert per condition, with how long it has lasted and how often it recurred.

A condition is either *checked* (a health check finds it each period: camera
frozen, link down; it ends when the check passes) or *reported* (something
failed once: an inference error, an audit write; it ends when it has not
recurred for ``QUIET_S``). Either way the event log gets one alert when the
condition starts and one note when it ends ("camera recovered after 3.2 s"),
never one per period or per failure: a missing camera at 8 tracking steps a
second would otherwise push everything else out of the 200-entry log. A
condition whose *kind* changes (frozen -> no frames) is a new alert; its
numbers changing (1.2 s -> 1.4 s) is not.

Texts are for operators: ``plain`` strips Python exception class names
("StaleFrameError: ..."); the runtime's log file keeps them with the
traceback.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Callable

QUIET_S = 10.0  # a reported condition ends when it has not recurred for this long

_EXC_NAME = re.compile(r"\b[A-Z][A-Za-z0-9_]*(?:Error|Exception|Warning|Exit|Interrupt|Fault)\b:\s*")
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")


def plain(text: str) -> str:
    """``text`` without Python exception class names ("read failed: RuntimeError: x" -> "read failed: x")."""
    return _EXC_NAME.sub("", text).strip()


def kind_of(text: str) -> str:
    """What a condition is, ignoring its numbers and details: the text up to its first " (" or ";"."""
    head = re.split(r" \(|;", text, maxsplit=1)[0]
    return _NUMBER.sub("#", head)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


@dataclass
class Condition:
    key: str  # the component ("camera") or the reporter ("inference-errors")
    text: str  # the newest wording
    since: float  # monotonic time it started
    last: float  # monotonic time it was last seen
    count: int  # how often it was seen (reports; 1 for a checked condition)
    checked: bool

    def as_dict(self, now: float) -> dict:
        return {"key": self.key, "text": self.text, "for_s": round(now - self.since, 3), "count": self.count}


class Alerts:
    """The active conditions; ``emit(kind, text, data)`` appends to the runtime's event log."""

    def __init__(self, emit: Callable[[str, str, dict], object]) -> None:
        self._emit = emit
        self._lock = threading.Lock()
        self._active: dict[str, Condition] = {}
        self.raised = 0  # alerts emitted (conditions started)

    def check(self, key: str, text: str | None, now: float) -> None:
        """A health check's verdict for ``key``: its problem now, or None when healthy."""
        if text is None:
            self._end(key, now)
        else:
            self._see(key, plain(text), now, checked=True)

    def report(self, key: str, text: str, now: float) -> None:
        """Something failed once (it ends after ``QUIET_S`` without a repeat)."""
        self._see(key, plain(text), now, checked=False)

    def expire(self, now: float) -> None:
        """End the reported conditions that have been quiet for ``QUIET_S``."""
        with self._lock:
            quiet = [c.key for c in self._active.values() if not c.checked and now - c.last >= QUIET_S]
        for key in quiet:
            self._end(key, now)

    def active(self, now: float) -> list[dict]:
        with self._lock:
            return [c.as_dict(now) for c in self._active.values()]

    def _see(self, key: str, text: str, now: float, checked: bool) -> None:
        with self._lock:
            c = self._active.get(key)
            if c is not None and kind_of(c.text) == kind_of(text):
                c.text, c.last = text, now
                c.count += 0 if checked else 1
                return
            self._active[key] = Condition(key, text, now, now, 1, checked)
            self.raised += 1
        self._emit("alert", text, {"component": key.split("-")[0], "key": key})

    def _end(self, key: str, now: float) -> None:
        with self._lock:
            c = self._active.pop(key, None)
        if c is None:
            return
        if c.checked:
            text = f"{key}: recovered after {_duration(now - c.since)}"
        else:
            what = key.replace("-", " ")
            text = f"{what}: none for {_duration(now - c.last)} ({c.count} in {_duration(c.last - c.since)}; " \
                   f"last: {c.text})"
        self._emit("info", text, {"component": key.split("-")[0], "key": key, "count": c.count,
                                  "for_s": round(now - c.since, 3)})
