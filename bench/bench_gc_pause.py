"""How long a full garbage collection stops a started ``voxedge serve``, with and without its gc freeze.

A full collection holds the GIL, so every thread waits for it, the actuator loop too, and that loop's
setpoints are the MCU's heartbeat (no valid setpoint for 250 ms latches a failsafe). This runs the real
``voxedge serve BUNDLE --sim`` in this process (on its main thread, as the command does), waits until it
answers /v2/health/ready, then from a side thread times ``gc.collect()`` in alternating rounds: as serve
runs (what start-up made is frozen) and with the freeze undone for the round. It prints both, their ratio
and the tracked object counts, then stops serve as systemd does (SIGTERM), and writes the figures to a JSON
file.

    .venv/bin/python bench/bench_gc_pause.py [--bundle DIR] [--rounds 7] [--out bench/results/gc_pause.json]

Without --bundle it converts the shipped checkpoint first (`voxedge convert`, seconds here).
"""

from __future__ import annotations

import argparse
import gc
import os
import secrets
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from serving import free_port, wait_ready, write_json  # noqa: E402

WATCHDOG_MS = 250  # firmware_bridge.spec WATCHDOG_TIMEOUT_MS
READY_S = 180.0  # voxedge serve's start-up, model load included
STOP_S = 30.0  # serve gets this long to stop after SIGTERM before the bench gives up (exit status 1)


def _timed_collect() -> float:
    t0 = time.perf_counter()
    gc.collect()
    return (time.perf_counter() - t0) * 1e3


def measure(url: str, rounds: int, settle_s: float, result: dict, served: threading.Event) -> None:
    """From a side thread: wait for serve, time full collections both ways, then stop serve."""
    import signal

    try:
        why = wait_ready(url, READY_S)
        if why is not None:
            raise RuntimeError(f"voxedge serve {why}")
        time.sleep(settle_s)  # the loops run, the panel's first requests are served
        result["frozen_objects"] = gc.get_freeze_count()
        result["tracked_objects"] = len(gc.get_objects())
        frozen, unfrozen = [], []
        for i in range(rounds):
            frozen.append(_timed_collect())
            gc.unfreeze()
            unfrozen.append(_timed_collect())
            gc.freeze()  # as serve had it (what was made in between joins, as gc_pause.settle() does)
            print(f"round {i + 1}/{rounds}: frozen {frozen[-1]:.2f} ms, not frozen {unfrozen[-1]:.1f} ms",
                  flush=True)
        result["frozen_ms"], result["not_frozen_ms"] = frozen, unfrozen
    except BaseException as exc:  # said in the result, and serve is still stopped
        result["error"] = repr(exc)
    finally:
        # Stopped as systemd stops it: serve's SIGTERM handler ends its loop and stops the runtime. (Not
        # _thread.interrupt_main(): a process started in the background ignores SIGINT, and then that does
        # nothing.)
        os.kill(os.getpid(), signal.SIGTERM)
        if not served.wait(STOP_S):
            print(f"bench_gc_pause: voxedge serve did not stop within {STOP_S:.0f} s of SIGTERM",
                  file=sys.stderr, flush=True)
            os._exit(1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", help="a bundle directory (default: convert the shipped checkpoint)")
    parser.add_argument("--rounds", type=int, default=7, help="full collections timed each way")
    parser.add_argument("--settle-s", type=float, default=5.0, help="serve runs this long before the rounds")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "gc_pause.json"))
    args = parser.parse_args()

    from edge.cli import main as voxedge

    with tempfile.TemporaryDirectory(prefix="voxedge-gc-bench-") as tmp:
        bundle = args.bundle
        if bundle is None:  # in its own process: torch loaded here would be tracked objects serve never has
            import subprocess

            bundle = str(Path(tmp) / "bundle")
            print("converting the shipped checkpoint (voxedge convert) ...", flush=True)
            subprocess.run([sys.executable, "-m", "edge.cli", "convert", "--out", bundle], check=True,
                           stdout=subprocess.DEVNULL)
        os.environ["VOXEDGE_TOKEN"] = secrets.token_hex(16)  # given, so serve keeps no token file
        port = free_port()
        result: dict = {"bundle": bundle, "rounds": args.rounds, "python": sys.version.split()[0]}
        served = threading.Event()
        side = threading.Thread(target=measure, args=(f"http://127.0.0.1:{port}", args.rounds, args.settle_s,
                                                       result, served), daemon=True)
        side.start()
        try:
            rc = voxedge(["serve", bundle, "--sim", "--port", str(port), "--estop-port", "0"])
        except KeyboardInterrupt:  # the signal landed outside serve's own loop
            rc = 0
        finally:
            served.set()
        side.join(10.0)
    if "error" in result or rc != 0:
        why = result.get("error", f"voxedge serve exited {rc}")
        print(f"bench_gc_pause: failed ({why})", file=sys.stderr)
        return 1
    fz, nf = result["frozen_ms"], result["not_frozen_ms"]
    result["summary"] = {"frozen_p50_ms": statistics.median(fz), "frozen_max_ms": max(fz),
                         "not_frozen_p50_ms": statistics.median(nf), "not_frozen_max_ms": max(nf),
                         "ratio_p50": statistics.median(nf) / max(statistics.median(fz), 1e-6)}
    s = result["summary"]
    print(f"\nvoxedge serve --sim, one full gc.collect() (stops every thread; MCU watchdog {WATCHDOG_MS} ms):"
          f"\n  start-up frozen (as serve runs): p50 {s['frozen_p50_ms']:.2f} ms, "
          f"max {s['frozen_max_ms']:.2f} ms\n"
          f"  freeze undone:                   p50 {s['not_frozen_p50_ms']:.1f} ms, "
          f"max {s['not_frozen_max_ms']:.1f} ms\n"
          f"  ratio (p50): {s['ratio_p50']:.0f}x; objects frozen {result['frozen_objects']}, "
          f"tracked outside the freeze {result['tracked_objects']}")
    write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
