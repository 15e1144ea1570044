"""A second synthesizer for *evaluation*: SAM (Software Automatic Mouth, 1982), via npm's ``sam-js``.

Why: the reference model is trained on espeak-ng only. To measure whether it
hears words rather than one synthesizer, it is evaluated on speech from a
synthesizer it never saw, made by a different method: SAM is a 1982 phoneme
synthesizer with its own text-to-phoneme rules ("reciter") and its own
formant tables, unrelated to espeak-ng. It is used only to evaluate; never
for training, validation or model selection.

``sam-js`` (npm, 0.3.1) is a JavaScript port of the C64 program; its
README calls the original abandonware, so it is not shipped with voxedge:
``ensure_sam`` installs it from the npm registry into the data cache on first
use (``npm install``; node.js is needed), at development time only.
Output: 8-bit PCM at 22.05 kHz, resampled here to 16 kHz and trimmed.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.contract.wav import resample
from sim.errors import SynthesisError
from sim.npm import ensure_package
from sim.speech import SAMPLE_RATE_HZ, trim_silence

SAM_PACKAGE = "sam-js@0.3.1"
SAM_RATE_HZ = 22050
SYNTH_TIMEOUT_S = 600.0

_SCRIPT = r"""
const SamJs = require('sam-js');
const lines = require('fs').readFileSync(0, 'utf8').split('\n').filter(Boolean);
const out = lines.map((line) => {
  const r = JSON.parse(line);
  const sam = new SamJs({speed: r.speed, pitch: r.pitch, throat: r.throat, mouth: r.mouth});
  const buf = sam.buf8(r.text);
  return buf ? Buffer.from(buf).toString('base64') : '';
});
process.stdout.write(JSON.stringify(out));
"""


@dataclass(frozen=True)
class SamVoice:
    """One of the voices in SAM's manual (speed, pitch, throat, mouth)."""

    name: str
    speed: int
    pitch: int
    throat: int
    mouth: int


# The manual's typical voices; "Little Robot" and "Extra-Terrestrial" are left out
# as not meant to sound human.
VOICES: tuple[SamVoice, ...] = (
    SamVoice("SAM", 72, 64, 128, 128),
    SamVoice("Elf", 72, 64, 110, 160),
    SamVoice("Stuffy Guy", 82, 72, 110, 105),
    SamVoice("Little Old Lady", 82, 32, 145, 145),
)


def ensure_sam(cache_dir: Path) -> Path:
    """The folder with ``node_modules/sam-js``, installing it from npm the first time."""
    return ensure_package(Path(cache_dir) / "sam-js", SAM_PACKAGE, "SAM")


def synthesize_sam(texts: list[str], voices: list[SamVoice], cache_dir: Path) -> list[np.ndarray]:
    """Speak ``texts[i]`` with ``voices[i]``; float32 mono at 16 kHz, silence trimmed."""
    if len(texts) != len(voices):
        raise ValueError(f"{len(texts)} texts but {len(voices)} voices")
    root = ensure_sam(cache_dir)
    requests = "\n".join(json.dumps({"text": t, "speed": v.speed, "pitch": v.pitch, "throat": v.throat,
                                     "mouth": v.mouth}) for t, v in zip(texts, voices))
    try:
        done = subprocess.run(["node", "-e", _SCRIPT], input=requests.encode(), capture_output=True,
                              timeout=SYNTH_TIMEOUT_S, cwd=root, check=True)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        raise SynthesisError(f"SAM failed: {detail.decode(errors='replace').strip()[-300:]}") from exc
    import base64

    out = []
    for text, blob in zip(texts, json.loads(done.stdout)):
        if not blob:
            raise SynthesisError(f"SAM produced no audio for {text!r}")
        pcm = (np.frombuffer(base64.b64decode(blob), np.uint8).astype(np.float32) - 128.0) / 128.0
        audio = np.clip(resample(pcm, SAM_RATE_HZ, SAMPLE_RATE_HZ, method="polyphase"), -1.0, 1.0)
        out.append(trim_silence(audio.astype(np.float32), SAMPLE_RATE_HZ))
    return out


MAX_SPEECH_S = 1.9  # as for espeak-ng: a command must fit the 2 s window with room to move
FASTER = 0.8  # SAM's speed is a duration: smaller is faster


def synthesize_sam_fitting(texts: list[str], voices: list[SamVoice], cache_dir: Path) -> list[np.ndarray]:
    """``synthesize_sam``, with any utterance longer than MAX_SPEECH_S spoken again faster."""
    import dataclasses

    voices = list(voices)
    audio = synthesize_sam(texts, voices, cache_dir)
    for _ in range(4):
        long = [i for i, a in enumerate(audio) if len(a) > MAX_SPEECH_S * SAMPLE_RATE_HZ]
        if not long:
            break
        for i in long:
            voices[i] = dataclasses.replace(voices[i], speed=max(40, int(voices[i].speed * FASTER)))
        for i, a in zip(long, synthesize_sam([texts[i] for i in long], [voices[i] for i in long], cache_dir)):
            audio[i] = a
    return audio
