"""Per-block and per-frame costs of the sensor paths on this CPU.

What the capture threads spend per unit of work, which bounds how much of a
Jetson core the sensors take:

- microphone callback work per 20 ms block at 44.1 and 48 kHz (downmix,
  streaming resample to 16 kHz, BlockClock, ring write);
- AudioRing lookups (time_of / index_at) with a full 30 s ring;
- camera reader work per frame (BGR->RGB conversion and the frozen check)
  at 640x480 and 1280x720;
- SimCamera render time at the model's 160x120.

    .venv/bin/python bench/bench_sensors.py [--out bench/results/sensors.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from timing import median_s

from edge.contract.audio import SAMPLE_RATE_HZ, WINDOW_SAMPLES


def _median_us(fn, repeats: int, warmup: int = 5) -> float:
    return 1e6 * median_s(fn, repeats, warmup)


def bench_audio() -> dict[str, float]:
    from edge.sensors.audio_ring import AudioRing, BlockClock
    from edge.sensors.resample import StreamResampler

    out = {}
    for rate in (44100, 48000):
        n = rate // 50
        ring = AudioRing()
        rs = StreamResampler(rate, SAMPLE_RATE_HZ)
        clk = BlockClock(rate)
        block = np.random.default_rng(0).standard_normal(2 * n).astype(np.float32) * 0.1
        state = {"t": 0.0}

        def callback_work(n=n, rate=rate, ring=ring, rs=rs, clk=clk, block=block, state=state):
            state["t"] += n / rate
            x = block.reshape(-1, 2).mean(axis=1)
            t = clk.stamp(n, state["t"])
            y = rs.process(x)
            if y.size:
                ring.write(y, rs.last_output_time(t))

        out[f"mic_block_{rate}hz_stereo_us"] = _median_us(callback_work, 2000)
    ring = AudioRing()
    t = 0.0
    for _ in range(1500):  # 30 s of 20 ms blocks
        t += 0.02
        ring.write(np.zeros(320, np.float32), t)
    mid = ring.end_index // 2
    out["ring_time_of_us"] = _median_us(lambda: ring.time_of(mid), 5000)
    out["ring_index_at_us"] = _median_us(lambda: ring.index_at(15.0), 5000)
    out["ring_read_2s_us"] = _median_us(lambda: ring.read(mid, mid + WINDOW_SAMPLES), 2000)
    return out


def bench_camera() -> dict[str, float]:
    import cv2

    out = {}
    for w, h in ((640, 480), (1280, 720)):
        bgr = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
        prev = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

        def frame_work(bgr=bgr, prev=prev):
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            np.array_equal(rgb, prev)  # worst case: identical frames are compared in full

        out[f"camera_frame_{w}x{h}_us"] = _median_us(frame_work, 300)
    from sim.camera import render
    from sim.world import Pose, random_arena

    arena = random_arena(np.random.default_rng(0))
    out["sim_render_160x120_us"] = _median_us(lambda: render(arena, Pose(0.0, 0.0, 0.3)), 200)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")
    args = parser.parse_args()
    results = {**bench_audio(), **bench_camera()}
    width = max(len(k) for k in results)
    for key, value in results.items():
        print(f"{key:<{width}}  {value:10.1f} us")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
