"""A small camera + spoken-command model that meets voxedge's model contract (docs/own-model.md).

It is the worked example of "Bring your own model", not a good robot brain:
it trains for a few seconds on a ``voxedge make-set`` set.

Inputs (any names: the config's ``inputs`` list declares them, image first, then audio):
- ``image``: uint8 [N, 120, 160, 3], RGB, 0..255; scaled inside the model.
- ``audio``: float32 [N, 32000], 2 s of 16 kHz mono in [-1, 1].
Outputs (any names: the config's ``heads`` says which is which):
- ``intent`` [N, 9]: logits over ``INTENTS``.
- ``point`` [N, 2]: where the named object is, x right and y down, 0..1 of the image.
- ``seen`` [N]: logit that the named object is in view.
- ``heatmap`` [N, 15, 20]: where the command looks, one cell per 8 x 8 pixels.

Audio path: a fixed bank of band-pass filters (Hann-windowed cosine/sine
pairs, log-spaced centre frequencies) gives log band energies; small 1-D
convolutions turn them into a command embedding. Image path: three strided
convolutions give a 15 x 20 feature grid. The command embedding scales the
grid's channels (FiLM); a 1 x 1 convolution scores each cell, and the softmax
of the scores is the heat map, whose centre of mass is the target point.

Train a checkpoint (seeded, about 15 s on two CPU cores)::

    python my_model.py --train-set train-set --out my_model.pt
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

INTENTS = ("stop", "forward", "backward", "turn_left", "turn_right", "go_to", "pick_up", "drop", "none")
OBJECT_INTENTS = ("go_to", "pick_up")  # the intents whose target point and presence are trained
SAMPLE_RATE_HZ = 16_000
WINDOW_SAMPLES = 32_000
IMAGE_HEIGHT, IMAGE_WIDTH = 120, 160
GRID_STRIDE = 8  # the image encoder's three stride-2 convolutions
ENERGY_FLOOR = 1e-3  # 70 dB below a full-scale tone; keeps log() finite on digital silence


@dataclass(frozen=True)
class MyModelConfig:
    """Sizes of the model; stored in the checkpoint as ``model_config`` and given back to ``build``."""

    bands: int = 32
    frame_samples: int = 400  # 25 ms
    hop_samples: int = 160  # 10 ms
    image_channels: int = 32
    embed_dim: int = 64
    n_intents: int = len(INTENTS)


def _filter_bank(cfg: MyModelConfig) -> torch.Tensor:
    """[2 * bands, 1, frame_samples] Hann-windowed cosine then sine kernels at log-spaced frequencies."""
    t = (torch.arange(cfg.frame_samples, dtype=torch.float64) - cfg.frame_samples / 2) / SAMPLE_RATE_HZ
    freqs = torch.logspace(math.log10(150.0), math.log10(6000.0), cfg.bands, dtype=torch.float64)
    window = torch.hann_window(cfg.frame_samples, periodic=False, dtype=torch.float64)
    phase = 2 * math.pi * freqs[:, None] * t[None, :]
    # Scaled so that a full-scale tone gives an energy of 1e4: every value of the front end then fits
    # FP16's range (6e-5 .. 65504) too, which an FP16 variant needs (see docs/own-model.md).
    kernels = torch.cat([window * torch.cos(phase), window * torch.sin(phase)]) * (200.0 / window.sum())
    return kernels.float().unsqueeze(1)


class BandEnergies(nn.Module):
    """Waveform [N, samples] -> log band energies [N, bands, frames], minus their mean (gain-independent).

    Its log and its wide dynamic range are what INT8 cannot hold: my_model.json keeps
    its nodes (``/audio/frontend/...``) in floating point.
    """

    def __init__(self, cfg: MyModelConfig) -> None:
        super().__init__()
        self.hop = cfg.hop_samples
        self.register_buffer("kernels", _filter_bank(cfg), persistent=False)  # fixed: not in the checkpoint

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        x = nn.functional.conv1d(audio.unsqueeze(1), self.kernels, stride=self.hop)
        cos, sin = x.chunk(2, dim=1)
        energy = torch.log(cos * cos + sin * sin + ENERGY_FLOOR)
        return energy - energy.mean(dim=(1, 2), keepdim=True)


def _conv1d(c_in: int, c_out: int, k: int) -> nn.Sequential:
    conv = nn.Conv1d(c_in, c_out, k, stride=2, padding=k // 2, bias=False)
    return nn.Sequential(conv, nn.BatchNorm1d(c_out), nn.ReLU())


def _conv2d(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU())


class AudioEncoder(nn.Module):
    def __init__(self, cfg: MyModelConfig) -> None:
        super().__init__()
        self.frontend = BandEnergies(cfg)
        self.body = nn.Sequential(_conv1d(cfg.bands, 48, 5), _conv1d(48, 64, 5), _conv1d(64, 64, 3))
        self.proj = nn.Sequential(nn.Linear(128, cfg.embed_dim), nn.ReLU())

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        x = self.body(self.frontend(audio))
        return self.proj(torch.cat([x.mean(dim=-1), x.amax(dim=-1)], dim=1))


class MyModel(nn.Module):
    """(image, audio) -> (intent, point, seen, heatmap)."""

    def __init__(self, cfg: MyModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c = cfg.image_channels
        self.audio = AudioEncoder(cfg)
        self.image = nn.Sequential(_conv2d(3, 16), _conv2d(16, 24), _conv2d(24, c))
        self.intent_head = nn.Linear(cfg.embed_dim, cfg.n_intents)
        self.film = nn.Linear(cfg.embed_dim, 2 * c)
        self.cell_score = nn.Conv2d(c, 1, 1)
        self.seen_head = nn.Linear(cfg.embed_dim + 1, 1)
        grid_h, grid_w = IMAGE_HEIGHT // GRID_STRIDE, IMAGE_WIDTH // GRID_STRIDE
        ys, xs = torch.meshgrid((torch.arange(grid_h) + 0.5) / grid_h, (torch.arange(grid_w) + 0.5) / grid_w,
                                indexing="ij")
        self.register_buffer("cell_xy", torch.stack([xs.flatten(), ys.flatten()], dim=1), persistent=False)

    def forward(self, image: torch.Tensor, audio: torch.Tensor):
        x = image.permute(0, 3, 1, 2).float() * (1.0 / 255.0) - 0.5  # uint8 NHWC -> scaled float NCHW
        grid = self.image(x)  # [N, C, 15, 20]
        emb = self.audio(audio)  # [N, D]
        scale, shift = self.film(emb).unsqueeze(-1).unsqueeze(-1).chunk(2, dim=1)
        scores = self.cell_score(torch.relu(grid * (1.0 + scale) + shift))  # [N, 1, 15, 20]
        n, _, h, w = scores.shape
        flat = scores.flatten(1)  # [N, h * w]
        heatmap = torch.softmax(flat, dim=1)
        point = heatmap @ self.cell_xy  # [N, 2]: the heat map's centre of mass
        seen = self.seen_head(torch.cat([emb, flat.amax(dim=1, keepdim=True)], dim=1)).squeeze(1)
        return self.intent_head(emb), point, seen, heatmap.view(n, h, w)


def build(config: dict | None = None) -> MyModel:
    """The factory (``my_model:build``): ``voxedge convert`` passes it the checkpoint's ``model_config``."""
    return MyModel(MyModelConfig(**(config or {})))


# -- training --------------------------------------------------------------------------


def load_set(path: str | Path) -> dict[str, torch.Tensor]:
    """A voxedge sample set as tensors: image, audio, intent index, target point, has-target, object named."""
    from calibration.sampleset import read_set

    samples = read_set(path)
    images, audio = [], []
    for batch in samples.batches(64, (IMAGE_HEIGHT, IMAGE_WIDTH), WINDOW_SAMPLES, SAMPLE_RATE_HZ):
        images.append(batch["image"])
        audio.append(batch["audio"])
    recs = samples.records
    if any(r.intent is None for r in recs):
        raise SystemExit(f"{path} has unlabelled samples; training needs an intent on every sample")
    unknown = sorted({r.intent for r in recs} - set(INTENTS))
    if unknown:
        raise SystemExit(f"{path}: intents {unknown} are not this model's {list(INTENTS)}")
    return {
        "image": torch.from_numpy(np.concatenate(images)),
        "audio": torch.from_numpy(np.concatenate(audio)),
        "intent": torch.tensor([INTENTS.index(r.intent) for r in recs]),
        "xy": torch.tensor([r.target_xy or (0.5, 0.5) for r in recs], dtype=torch.float32),
        "has_xy": torch.tensor([r.target_xy is not None for r in recs], dtype=torch.float32),
        "named": torch.tensor([r.intent in OBJECT_INTENTS for r in recs], dtype=torch.float32),
    }


def loss_fn(model: MyModel, b: dict[str, torch.Tensor]) -> torch.Tensor:
    """Intent cross-entropy, presence on go_to / pick_up samples, target-point L1 where there is a target."""
    intent, point, seen, _ = model(b["image"], b["audio"])
    loss = nn.functional.cross_entropy(intent, b["intent"])
    named = b["named"]
    if named.any():
        bce = nn.functional.binary_cross_entropy_with_logits(seen, b["has_xy"], reduction="none")
        loss = loss + (bce * named).sum() / named.sum()
    has = b["has_xy"]
    if has.any():
        loss = loss + 4.0 * ((point - b["xy"]).abs().sum(dim=1) * has).sum() / has.sum()
    return loss


def train(train_set: str | Path, epochs: int, seed: int, log: Callable[[str], object] = print) -> MyModel:
    """Train a fresh model on a labelled set; the same seed and set give the same weights."""
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    data = load_set(train_set)
    model = build()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    order = torch.Generator().manual_seed(seed)
    n = len(data["intent"])
    for epoch in range(1, epochs + 1):
        model.train()
        total = 0.0
        for idx in torch.randperm(n, generator=order).split(32):
            loss = loss_fn(model, {k: v[idx] for k, v in data.items()})
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        log(f"epoch {epoch}/{epochs}: loss {total / n:.3f}")
    model.eval()
    with torch.no_grad():
        intent = torch.cat([model(data["image"][i:i + 128], data["audio"][i:i + 128])[0].argmax(1)
                            for i in range(0, n, 128)])
    accuracy = float((intent == data["intent"]).float().mean())
    log(f"intent accuracy on the training set: {100 * accuracy:.1f} %")
    return model


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="train the example model on a voxedge sample set")
    p.add_argument("--train-set", required=True, help="labelled sample set (voxedge make-set or import-set)")
    p.add_argument("--out", required=True, help="checkpoint to write")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    t0 = time.monotonic()
    model = train(args.train_set, args.epochs, args.seed)
    # Plain data only: voxedge loads checkpoints with torch.load(weights_only=True).
    torch.save({"state_dict": model.state_dict(), "model_config": asdict(model.cfg),
                "intents": list(INTENTS)}, args.out)
    print(f"wrote {args.out} in {time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
