"""The controls on their way to the MCU: the queue, the one in flight, and the e-stop.

Controls (arm, disarm, clear failsafe, gripper, config) are queued (at most
``CONTROL_QUEUE_MAX``), sent one at a time and retried with the same id and
first-send timestamp until acknowledged; the MCU executes an id at most once and
re-acks duplicates. After ``CONTROL_ATTEMPTS`` sends without an ack, the control
is reported failed (its TTL, equal to the retry window, keeps a late copy from
executing). E-stop overtakes everything, is repeated until acknowledged, survives
reconnects, and nothing else is sent before it is acknowledged. Pending controls
fail when the link drops (never replayed on a new connection).

Every control ends as a ``ControlResult`` set on its future, exactly once.

Threads: callers add controls (``enqueue``, ``request_estop``); the link's I/O
thread sends them (``due_estop``, ``due_control``, then ``sent``), resolves them
(``on_ack``) and fails them (``fail_inflight``, ``fail_all``). ``queue`` and
``estop`` are shared under the link's lock, which ``enqueue``'s caller holds (so
that the link's phase cannot change between its check and the append);
``inflight`` belongs to the I/O thread.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass

from firmware_bridge import messages as M
from firmware_bridge.spec import CONST, Op, Result
from firmware_bridge.values import ControlResult, LinkCounters, Outcome

ACK_TIMEOUT_S = CONST["CONTROL_ACK_TIMEOUT_MS"] / 1000.0
CONTROL_ATTEMPTS = int(CONST["CONTROL_ATTEMPTS"])
CONTROL_QUEUE_MAX = 8  # controls waiting behind the one in flight; more fail at once ("queue full")
_U32 = 0xFFFFFFFF

_REFUSAL_ADVICE = {
    Result.REFUSED_NO_SESSION: "the MCU has no handshake on this connection; reconnect",
    Result.REFUSED_SCHEMA: "host and firmware protocol tables differ; flash firmware built from this checkout",
    Result.REFUSED_ESTOP: "the e-stop is latched; call clear_failsafe() first",
    Result.BAD_ARGS: "an argument is outside the firmware's limits",
    Result.UNKNOWN_OP: "the firmware does not know this operation; update it",
    Result.EXPIRED: "it arrived after its TTL (link delay); try again",
}


@dataclass
class PendingControl:
    """A control not resolved yet (the e-stop too: ``op`` ESTOP, no TTL)."""

    op: Op
    control_id: int
    future: Future
    enqueued_at: float
    args: tuple[float, float, int] = (0.0, 0.0, 0)
    ttl_ms: int = 0
    issued_ms: int | None = None  # header timestamp: the first send, kept by every retry
    attempts: int = 0
    next_at: float = 0.0
    last_sent_at: float = 0.0


class ControlQueue:
    """The controls waiting, the one in flight and the e-stop, with their retry and ack bookkeeping.

    Args:
        lock: the link's lock (guards ``queue``, ``estop`` and ``counters``).
        counters: the link's counters (sends, retries, outcomes, round trips).
        ack_timeout_s: wait for an ack before resending a control.
        attempts: sends of a control before it is reported failed.
    """

    def __init__(self, lock: threading.Lock, counters: LinkCounters, *, ack_timeout_s: float, attempts: int) -> None:
        self._lock = lock
        self._n = counters
        self._ack_timeout_s = ack_timeout_s
        self._attempts = attempts
        self.queue: deque[PendingControl] = deque()  # under the lock
        self.estop: PendingControl | None = None  # under the lock
        self.inflight: PendingControl | None = None  # the I/O thread's
        self._next_id = 1

    # ------------------------------------------------------------------ callers

    def enqueue(self, op: Op, args: tuple[float, float, int]) -> Future | None:
        """Queue a control (the caller holds the lock); None when ``CONTROL_QUEUE_MAX`` are already waiting."""
        if len(self.queue) >= CONTROL_QUEUE_MAX:
            return None
        pending = PendingControl(op, self._new_id(), Future(), time.monotonic(), args,
                                 ttl_ms=round(self._attempts * self._ack_timeout_s * 1000))
        self.queue.append(pending)
        return pending.future

    def request_estop(self) -> Future:
        """The pending e-stop's future (a new e-stop unless one is pending already)."""
        with self._lock:
            if self.estop is None:
                self.estop = PendingControl(Op.ESTOP, self._new_id(), Future(), time.monotonic())
            return self.estop.future

    def resolved(self, op: Op, outcome: Outcome, result: Result | None, detail: str) -> Future:
        """A future already done: a control refused or failed before it was queued (it is counted)."""
        fut: Future = Future()
        with self._lock:
            if outcome is Outcome.REFUSED:
                self._n.controls_refused += 1
            elif outcome is Outcome.FAILED:
                self._n.controls_failed += 1
        fut.set_result(ControlResult(op, 0, outcome, result, 0, detail))
        return fut

    def _new_id(self) -> int:
        cid = self._next_id
        self._next_id = (cid + 1) & _U32 or 1
        return cid

    # ------------------------------------------------------------------ I/O thread: sending

    def next_send_at(self, now: float) -> float:
        """When a control or the e-stop is due to be sent (``now`` for a waiting one; ``inf``: none)."""
        at = math.inf
        if self.estop is not None:
            at = min(at, self.estop.next_at)
        if self.inflight is not None:
            at = min(at, self.inflight.next_at)
        elif self.queue:
            at = min(at, now)
        return at

    def due_estop(self, now: float) -> PendingControl | None:
        """The e-stop, when it is due to be sent (again)."""
        e = self.estop
        if e is None or now < e.next_at:
            return None
        return e

    def due_control(self, now: float) -> PendingControl | None:
        """The control to send (again) now, if any; fails one that waited too long or ran out of attempts."""
        if self.estop is not None:
            return None  # nothing overtakes an unacknowledged e-stop
        if self.inflight is None:
            with self._lock:
                nxt = self.queue.popleft() if self.queue else None
            if nxt is None:
                return None
            window = nxt.ttl_ms / 1000.0
            if now - nxt.enqueued_at > window:
                self.finish(nxt, Outcome.FAILED, None, f"{nxt.op.name} waited {now - nxt.enqueued_at:.2f} s in the "
                            f"queue (limit {window:.2f} s) and was not sent; try again")
                return None
            self.inflight = nxt
            nxt.next_at = now
        p = self.inflight
        if now < p.next_at:
            return None
        if p.attempts >= self._attempts:
            self.inflight = None
            self.finish(p, Outcome.FAILED, None,
                        f"{p.op.name} (id {p.control_id}) not acknowledged after {p.attempts} attempts "
                        f"{self._ack_timeout_s * 1000:.0f} ms apart; check the link (stats) and try again")
            return None
        return p

    def sent(self, p: PendingControl, now: float) -> None:
        """``p`` (the e-stop or the control in flight) was written: its next send is an ack timeout away."""
        p.attempts += 1
        p.last_sent_at = now
        p.next_at = now + self._ack_timeout_s
        with self._lock:
            if p.op is Op.ESTOP:
                self._n.estops_sent += 1
            elif p.attempts == 1:
                self._n.controls_sent += 1
            else:
                self._n.retries += 1

    # ------------------------------------------------------------------ I/O thread: outcomes

    def on_ack(self, msg: M.Ack, now: float) -> str | None:
        """Resolve the control ``msg`` acknowledges; returns why the link should handshake again, if it should."""
        for p in (self.estop, self.inflight):
            if p is None or p.control_id != msg.control_id:
                continue
            try:
                result = Result(msg.result)
            except ValueError:
                result = None
            # Karn: only an ack to a control sent once gives an unambiguous round trip.
            rtt = now - p.last_sent_at if p.attempts == 1 else None
            if rtt is not None:
                with self._lock:
                    self._n.add_rtt(rtt)
            if result is Result.OK:
                outcome, detail = Outcome.DELIVERED, f"{p.op.name} executed"
            else:
                outcome = Outcome.REFUSED
                name = result.name if result is not None else f"code {msg.result}"
                detail = f"{p.op.name} refused by the MCU: {name}; {_REFUSAL_ADVICE.get(result, 'see the firmware docs')}"
            if msg.duplicate:
                detail += " (acknowledged on a retry)"
            if p is self.estop:
                with self._lock:
                    self.estop = None
            else:
                self.inflight = None
            self.finish(p, outcome, result, detail, rtt)
            if result is Result.EXPIRED and rtt is not None and rtt * 1000.0 < p.ttl_ms / 2:
                # Sent once and answered well within its TTL, yet "expired": the MCU's clock estimate is off.
                return f"the MCU refused {p.op.name} as EXPIRED although it was answered in {rtt * 1000:.0f} ms"
            return None
        return None

    def fail_all(self, detail: str, *, include_estop: bool) -> None:
        """Fail the waiting controls (and, with ``include_estop``, the e-stop and the one in flight)."""
        with self._lock:
            pending = list(self.queue)
            self.queue.clear()
            if include_estop and self.estop is not None:
                pending.append(self.estop)
                self.estop = None
        if self.inflight is not None and include_estop:
            pending.append(self.inflight)
            self.inflight = None
        for p in pending:
            self.finish(p, Outcome.FAILED, None, f"{p.op.name} {detail}")

    def fail_inflight(self, detail: str) -> None:
        """Fail the control in flight, if any (it may or may not have executed)."""
        if self.inflight is not None:
            p, self.inflight = self.inflight, None
            self.finish(p, Outcome.FAILED, None, f"{p.op.name} (id {p.control_id}): {detail}")

    def finish(self, p: PendingControl, outcome: Outcome, result: Result | None, detail: str,
               rtt_s: float | None = None) -> None:
        """Count the outcome and set ``p``'s result (once; later calls do nothing)."""
        if p.future.done():
            return
        with self._lock:
            if outcome is Outcome.DELIVERED:
                self._n.controls_delivered += 1
            elif outcome is Outcome.REFUSED:
                self._n.controls_refused += 1
            else:
                self._n.controls_failed += 1
        p.future.set_result(ControlResult(p.op, p.control_id, outcome, result, p.attempts, detail, rtt_s))
