"""Benchmark of the serial link to the (simulated) MCU over a pseudo-terminal.

Prints and saves:
- setpoint round trip: the host Link sends a setpoint with an echo request, the
  real firmware core answers with SETPOINT_ECHO; measured in the Link's I/O
  thread (write -> echo decoded) and end to end from the caller
  (send_setpoint() -> echo seen through link.stats), p50/p99;
- control round trip (GRIPPER_OPEN/CLOSE -> ACK, first attempts only);
- frames per second: host -> MCU setpoints the link sustains when offered as
  fast as possible (and how many the MCU accepted), MCU -> host telemetry at the
  fastest configurable period;
- the pure Python codec's encode+decode rate (the host-side ceiling).

A pseudo-terminal has no baud rate: the figures show the software path. For the
real UART at 115200 baud the script also prints the wire-limited frame rates.

    .venv/bin/python bench/bench_bridge.py [--samples 1000] [--out bench/results/bridge.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

from firmware_bridge import codec
from firmware_bridge import messages as M
from firmware_bridge.link import Link
from firmware_bridge.simulator import McuSimulator, build_simulator
from firmware_bridge.spec import CONST, MESSAGE_BY_NAME, MsgType

UART_BITS_PER_BYTE = 10  # 8N1: start + 8 data + stop


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _summary_ms(values: list[float]) -> dict:
    return {"n": len(values), "p50_ms": statistics.median(values) * 1e3, "p99_ms": _pct(values, 0.99) * 1e3,
            "max_ms": max(values) * 1e3, "mean_ms": statistics.fmean(values) * 1e3}


def bench_setpoint_rtt(link: Link, samples: int, rate_hz: float) -> dict:
    """Paced setpoints, each with an echo request; one sample per echo."""
    io_rtts, e2e_rtts = [], []
    period = 1.0 / rate_hz
    next_at = time.monotonic()
    for i in range(samples):
        count = link.stats.rtt_count
        t0 = time.perf_counter()
        link.send_setpoint(0.05 + 0.0001 * (i % 10), 0.0)
        deadline = time.monotonic() + 0.5
        while (stats := link.stats).rtt_count == count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no echo for setpoint {i} within 0.5 s")
            time.sleep(0.00005)
        e2e_rtts.append(time.perf_counter() - t0)
        io_rtts.append(stats.rtt_last_s)
        next_at += period
        time.sleep(max(0.0, next_at - time.monotonic()))
    return {"rate_hz": rate_hz, "io_thread": _summary_ms(io_rtts), "end_to_end": _summary_ms(e2e_rtts)}


def bench_control_rtt(link: Link, samples: int) -> dict:
    rtts = []
    for i in range(samples):
        result = link.gripper(i % 2 == 0).result(2)
        if result.rtt_s is not None:
            rtts.append(result.rtt_s)
    return _summary_ms(rtts)


def bench_setpoint_fps(link: Link, seconds: float) -> dict:
    """Offer setpoints in a tight loop; the link sends latest-only."""
    before = link.stats
    t_before = link.wait_for_telemetry()
    offered = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        link.send_setpoint(0.1, 0.0)
        offered += 1
    elapsed = time.monotonic() - t0
    time.sleep(0.2)
    after = link.stats
    t_after = link.wait_for_telemetry()
    sent = after.setpoints_sent - before.setpoints_sent
    accepted = t_after.counters.frames_ok - t_before.counters.frames_ok
    return {"seconds": elapsed, "offered_per_s": offered / elapsed, "sent_per_s": sent / elapsed,
            "mcu_frames_ok_per_s": accepted / elapsed,
            "superseded_fraction": (after.setpoints_superseded - before.setpoints_superseded) / max(offered, 1),
            "mcu_crc_errors": t_after.counters.crc_errors - t_before.counters.crc_errors}


def bench_telemetry_fps(link: Link, seconds: float) -> dict:
    period = CONST["TELEMETRY_PERIOD_MIN_MS"] / 1000.0
    link.configure(telemetry_period_s=period).result(2).raise_for_status()
    time.sleep(0.1)
    first = link.wait_for_telemetry()
    time.sleep(seconds)
    last = link.wait_for_telemetry()
    span = last.received_at - first.received_at
    frames = (last.seq - first.seq) & 0xFFFFFFFF
    link.configure().result(2)
    return {"configured_hz": 1.0 / period, "received_per_s": frames / span if span else 0.0}


def bench_codec(seconds: float = 1.0) -> dict:
    payload = M.pack(M.Setpoint(0.2, 0.1, 200))
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        wire = codec.encode_frame(MsgType.SETPOINT, payload, seq=n, timestamp_ms=n)
        codec.decode_frame(wire[:-1])
        n += 1
    return {"frames_per_s": n / (time.perf_counter() - t0)}


def uart_limits() -> dict:
    out = {}
    for name in ("setpoint", "telemetry", "ack", "setpoint_echo"):
        raw = CONST["HEADER_SIZE"] + MESSAGE_BY_NAME[name].size + CONST["CRC_SIZE"]
        wire = raw + 1 + raw // 254 + 1  # COBS overhead + delimiter
        out[name] = {"wire_bytes": wire,
                     "max_frames_per_s": CONST["BAUD_RATE"] / (UART_BITS_PER_BYTE * wire)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1000, help="setpoint round trips (default: %(default)s)")
    parser.add_argument("--rate-hz", type=float, default=100.0, help="pace of the round trips (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each rate test (default: %(default)s)")
    parser.add_argument("--out", default="bench/results/bridge.json", help="JSON output (default: %(default)s)")
    args = parser.parse_args(argv)

    build_simulator()
    results: dict = {"host": platform.node(), "python": platform.python_version(),
                     "transport": "pseudo-terminal (no baud limit)", "uart_115200": uart_limits()}
    with McuSimulator() as sim, Link(sim.port, echo_every=1) as link:
        link.arm().result(2).raise_for_status()
        results["setpoint_rtt"] = bench_setpoint_rtt(link, args.samples, args.rate_hz)
        results["control_rtt"] = bench_control_rtt(link, 200)
        results["telemetry_fps"] = bench_telemetry_fps(link, 2.0)
    with McuSimulator() as sim, Link(sim.port, echo_every=0) as link:
        link.arm().result(2).raise_for_status()
        results["setpoint_fps"] = bench_setpoint_fps(link, args.seconds)
        link.disarm().result(2)
    results["codec"] = bench_codec()

    s, c = results["setpoint_rtt"], results["control_rtt"]
    print(f"setpoint round trip ({s['io_thread']['n']} samples at {args.rate_hz:g} Hz):")
    print(f"  I/O thread (write -> echo):      p50 {s['io_thread']['p50_ms']:.3f} ms  "
          f"p99 {s['io_thread']['p99_ms']:.3f} ms  max {s['io_thread']['max_ms']:.3f} ms")
    print(f"  caller (send_setpoint -> echo):  p50 {s['end_to_end']['p50_ms']:.3f} ms  "
          f"p99 {s['end_to_end']['p99_ms']:.3f} ms  max {s['end_to_end']['max_ms']:.3f} ms")
    print(f"control round trip (gripper -> ACK, {c['n']}): p50 {c['p50_ms']:.3f} ms  p99 {c['p99_ms']:.3f} ms")
    f = results["setpoint_fps"]
    print(f"setpoints offered as fast as possible: {f['offered_per_s']:.0f}/s offered, {f['sent_per_s']:.0f}/s sent "
          f"(latest-only), {f['mcu_frames_ok_per_s']:.0f}/s accepted by the MCU, CRC errors {f['mcu_crc_errors']}")
    t = results["telemetry_fps"]
    print(f"telemetry at the fastest period: {t['received_per_s']:.1f}/s received (configured {t['configured_hz']:g} Hz)")
    print(f"Python codec encode+decode: {results['codec']['frames_per_s']:.0f} frames/s")
    u = results["uart_115200"]
    print(f"on a 115200-baud UART the wire allows {u['setpoint']['max_frames_per_s']:.0f} setpoints/s "
          f"({u['setpoint']['wire_bytes']} B) and {u['telemetry']['max_frames_per_s']:.0f} telemetry frames/s "
          f"({u['telemetry']['wire_bytes']} B)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results["timestamp"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
