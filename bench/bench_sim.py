"""Benchmark of the simulated world and the reference model's training step.

Prints, side by side in one run: render time per frame at three resolutions
(plain and randomised appearance), espeak-ng synthesis throughput with 1 and 2
workers (no cache), and the reference model's forward+backward time per batch.
Writes the figures to a JSON file.

    .venv/bin/python bench/bench_sim.py [--out bench/results/sim.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from edge.contract.audio import WINDOW_SAMPLES
from sim import camera, speech, world
from sim.commands import all_command_phrases


def _time_calls(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def bench_render(n: int = 100) -> list[dict]:
    rows = []
    for width in (160, 320, 640):
        cam = camera.CameraModel().scaled(width)
        for mode in ("plain", "random"):
            rng = np.random.default_rng(0)
            views = [world.sample_view(rng) for _ in range(n)]
            apps = [camera.random_appearance(rng) for _ in range(n)]
            it = iter(range(n))

            def one():
                i = next(it)
                if mode == "plain":
                    camera.render(*views[i], cam)
                else:
                    camera.render(*views[i], cam, apps[i], rng)

            times = _time_calls(one, n)
            rows.append({"width": width, "height": cam.height, "appearance": mode,
                         "median_ms": 1e3 * statistics.median(times),
                         "p95_ms": 1e3 * float(np.percentile(times, 95))})
    return rows


def bench_speech(n: int = 200) -> list[dict]:
    rng = np.random.default_rng(0)
    phrases = all_command_phrases()
    voices = speech.voice_split()["train"]
    requests = [speech.random_request(rng, phrases[int(rng.integers(len(phrases)))].text, voices) for _ in range(n)]
    rows = []
    for workers in (1, 2):
        t0 = time.perf_counter()
        speech.synthesize_many(requests, cache_dir=None, workers=workers)
        dt = time.perf_counter() - t0
        rows.append({"workers": workers, "utterances": n, "per_s": n / dt})
    with tempfile.TemporaryDirectory() as cache:
        speech.synthesize_many(requests, cache_dir=cache, workers=2)
        t0 = time.perf_counter()
        speech.synthesize_many(requests, cache_dir=cache, workers=2)
        rows.append({"workers": 2, "utterances": n, "per_s": n / (time.perf_counter() - t0), "cached": True})
    return rows


def bench_train_step(batch_sizes=(32, 64), steps: int = 10) -> list[dict]:
    import torch

    from reference_model.model import ReferenceModel

    rows = []
    model = ReferenceModel()
    opt = torch.optim.AdamW(model.parameters())
    for bs in batch_sizes:
        image = torch.randint(0, 256, (bs, 120, 160, 3), dtype=torch.uint8)
        audio = torch.randn(bs, WINDOW_SAMPLES) * 0.1

        def step():
            out = model(image, audio)
            loss = sum(o.float().mean() for o in out)
            opt.zero_grad()
            loss.backward()
            opt.step()

        step()  # warm-up
        times = _time_calls(step, steps)
        rows.append({"batch": bs, "median_s": statistics.median(times),
                     "samples_per_s": bs / statistics.median(times), "threads": torch.get_num_threads()})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/results/sim.json")
    args = parser.parse_args()

    results = {"render": bench_render(), "speech": bench_speech(), "train_step": bench_train_step()}
    print("render (per frame)")
    for r in results["render"]:
        print(f"  {r['width']:>4}x{r['height']:<4} {r['appearance']:<7} median {r['median_ms']:6.2f} ms"
              f"   p95 {r['p95_ms']:6.2f} ms")
    plain = {r["width"]: r["median_ms"] for r in results["render"] if r["appearance"] == "plain"}
    rand = {r["width"]: r["median_ms"] for r in results["render"] if r["appearance"] == "random"}
    for w in plain:
        print(f"  {w}: randomised / plain = {rand[w] / plain[w]:.2f}x")
    print("espeak-ng synthesis")
    for r in results["speech"]:
        print(f"  workers={r['workers']} {'cached' if r.get('cached') else 'uncached':<8} {r['per_s']:7.1f} utt/s")
    base = results["speech"][0]["per_s"]
    print(f"  2 workers / 1 worker = {results['speech'][1]['per_s'] / base:.2f}x")
    print("reference model training step (forward + backward + AdamW)")
    for r in results["train_step"]:
        print(f"  batch {r['batch']:>3}: {1e3 * r['median_s']:7.1f} ms  ({r['samples_per_s']:.0f} samples/s,"
              f" {r['threads']} threads)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
