"""The reference multimodal model: image + spoken command -> intent, target point, presence, attention.

Inputs (the contract of ``edge/contract`` and ``docs/architecture.md``):
- ``image``: uint8 [N, H, W, 3] RGB; normalisation happens in the graph.
- ``audio``: float32 [N, WINDOW_SAMPLES], 2 s at 16 kHz mono in [-1, 1] (``edge.contract.audio``).
Outputs:
- ``intent_logits`` [N, 9]; ``target_xy`` [N, 2] normalised image coordinates
  (x right, y down, in [0, 1]); ``target_logit`` [N] (the named object is
  visible); ``attention`` [N, h, w] over the image grid.

Fusion: the spoken command is encoded to a query that attends over the image
feature grid; the attention picks the named object, so "the red ball" needs
both the words (which object) and the pixels (where it is).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from reference_model.errors import CheckpointError, ConfigError
from reference_model import speech_embedding
from reference_model.frontend import N_MELS, WINDOW_SAMPLES, LogMelFrontEnd
from edge.contract.vocabulary import INTENTS, OBJECT_TYPES

IMAGE_HEIGHT = 120
IMAGE_WIDTH = 160
GRID_STRIDES = (4, 8)  # attention grid cell size in pixels: 30 x 40 or 15 x 20 cells at 160 x 120
# One mean and scale for all three channels: scalars keep the in-graph
# normalisation a cheap scalar op wherever a runtime moves the NHWC->NCHW
# transpose (ONNX Runtime pushes it past these ops, and a per-channel constant
# then broadcasts over the innermost axis of 3, which costs ~0.5 ms per frame).
PIXEL_MEAN = 0.45 * 255.0
PIXEL_STD = 0.25 * 255.0
INPUT_NAMES = ("image", "audio")
OUTPUT_NAMES = ("intent_logits", "target_xy", "target_logit", "attention")
N_OBJECT_TYPES = len(OBJECT_TYPES)
# How the audio side hears: "speech_embedding" (Google's encoder pretrained on real speech,
# frozen or with its last blocks fine-tuned; see reference_model/speech_embedding.py) or
# "logmel" (a log-mel and a TC-ResNet trained from scratch, which learns the training
# synthesizer's voice).
AUDIO_FRONTENDS = ("speech_embedding", "logmel")


@dataclass(frozen=True)
class ModelConfig:
    """Sizes of the reference model; stored in every checkpoint."""

    image_height: int = IMAGE_HEIGHT
    image_width: int = IMAGE_WIDTH
    audio_samples: int = WINDOW_SAMPLES
    image_channels: tuple[int, int, int] = (16, 32, 64)
    audio_channels: tuple[int, int, int] = (96, 128, 160)
    embed_dim: int = 128
    attn_dim: int = 64
    grid_stride: int = 8
    n_intents: int = len(INTENTS)
    audio_frontend: str = "speech_embedding"
    head_dropout: float = 0.1  # on the speech embeddings in training (speech_embedding only)
    # speech_embedding only: how many of its last blocks train (0: all frozen). Fine-tuning the last
    # block beat the frozen network on every split in a first comparison (README, "Voices it never heard").
    finetune_blocks: int = 0

    def __post_init__(self) -> None:
        if self.audio_frontend not in AUDIO_FRONTENDS:
            raise ConfigError(f"audio_frontend {self.audio_frontend!r} is not one of {AUDIO_FRONTENDS}")
        if not 0 <= self.finetune_blocks <= speech_embedding.N_BLOCKS:
            raise ConfigError(f"finetune_blocks must be in 0..{speech_embedding.N_BLOCKS}, got {self.finetune_blocks!r}")
        if self.finetune_blocks and self.audio_frontend != "speech_embedding":
            raise ConfigError("finetune_blocks applies to the speech_embedding front end only; "
                              f"set it to 0 with audio_frontend {self.audio_frontend!r}")
        if self.image_width * 3 != self.image_height * 4:
            raise ConfigError(
                f"image size {self.image_width}x{self.image_height} is not 4:3; the camera contract is 4:3"
            )
        if self.grid_stride not in GRID_STRIDES:
            raise ConfigError(f"grid_stride {self.grid_stride!r} is not one of {GRID_STRIDES}")
        if self.image_height % 8 or self.image_width % 8:
            raise ConfigError(f"image size {self.image_width}x{self.image_height} must be a multiple of 8 pixels")

    @property
    def grid_hw(self) -> tuple[int, int]:
        return self.image_height // self.grid_stride, self.image_width // self.grid_stride

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        """A config from its dict (a checkpoint's ``model_config`` or a training config's ``model``).

        A dict that names no ``audio_frontend`` was written before the speech embedding
        existed, so it describes a log-mel model: old checkpoints keep loading.
        """
        data = {"audio_frontend": "logmel", **data}
        for key in ("image_channels", "audio_channels"):
            if key in data:
                data[key] = tuple(data[key])
        try:
            return cls(**data)
        except TypeError as exc:
            raise ConfigError(f"model config: {exc}") from exc


def _conv_bn(c_in: int, c_out: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class ImageEncoder(nn.Module):
    """RGB uint8 NHWC -> feature grid [N, C, H/s, W/s] for grid stride s of 8 or 4.

    With stride 4 the stride-8 features (which see whole objects) are upsampled
    and merged with the stride-4 ones (which keep position), FPN-style, so that
    small distant objects get cells of their own.
    """

    def __init__(self, channels: tuple[int, int, int], grid_stride: int = 8) -> None:
        super().__init__()
        c1, c2, c3 = channels
        self.stem = nn.Sequential(_conv_bn(3, c1, stride=2), _conv_bn(c1, c2, stride=2), _conv_bn(c2, c2))
        self.deep = nn.Sequential(_conv_bn(c2, c3, stride=2), _conv_bn(c3, c3), _conv_bn(c3, c3, dilation=2))
        self.merge = (
            nn.Sequential(nn.Conv2d(c2 + c3, c3, 1, bias=False), nn.BatchNorm2d(c3), nn.ReLU(inplace=True),
                          _conv_bn(c3, c3))
            if grid_stride == 4 else None
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        # Cast before the layout change: TensorRT takes uint8 only at the network's inputs and outputs.
        x = image.float().permute(0, 3, 1, 2)
        fine = self.stem((x - PIXEL_MEAN) * (1.0 / PIXEL_STD))
        coarse = self.deep(fine)
        if self.merge is None:
            return coarse
        up = nn.functional.interpolate(coarse, scale_factor=2.0, mode="nearest")
        return self.merge(torch.cat([fine, up], dim=1))


class _TemporalBlock(nn.Module):
    """Residual 1-D conv block over time (TC-ResNet style, cheap for keyword spotting)."""

    def __init__(self, c_in: int, c_out: int, stride: int, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm1d(c_out)
        self.conv2 = nn.Conv1d(c_out, c_out, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm1d(c_out)
        self.skip = (
            nn.Identity()
            if stride == 1 and c_in == c_out
            else nn.Sequential(nn.Conv1d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm1d(c_out))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + self.skip(x))


class AudioEncoder(nn.Module):
    """Waveform [N, samples] -> command embedding [N, D]."""

    def __init__(self, channels: tuple[int, int, int], embed_dim: int) -> None:
        super().__init__()
        c1, c2, c3 = channels
        self.frontend = LogMelFrontEnd()
        self.stem = nn.Sequential(nn.Conv1d(N_MELS, c1, 5, padding=2, bias=False), nn.BatchNorm1d(c1), nn.ReLU())
        self.blocks = nn.Sequential(
            _TemporalBlock(c1, c2, stride=2),
            _TemporalBlock(c2, c2, stride=1, dilation=2),
            _TemporalBlock(c2, c3, stride=2),
            _TemporalBlock(c3, c3, stride=1, dilation=2),
            _TemporalBlock(c3, c3, stride=2, dilation=1),
        )
        self.pool_score = nn.Conv1d(c3, 1, 1)
        self.proj = nn.Sequential(nn.Linear(2 * c3, embed_dim), nn.ReLU())

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        mel = self.frontend(audio)
        # Subtracting the utterance's mean log energy makes the encoder
        # independent of microphone gain and speaking level.
        mel = mel - mel.mean(dim=(1, 2), keepdim=True)
        x = self.blocks(self.stem(mel))
        # Attention pooling over time finds the command inside the 2 s window
        # wherever it lies; the max keeps short keywords from being averaged away.
        weights = torch.softmax(self.pool_score(x), dim=-1)
        pooled = torch.cat([(x * weights).sum(-1), x.amax(-1)], dim=1)
        return self.proj(pooled)


class SpeechEmbeddingEncoder(nn.Module):
    """Waveform [N, samples] -> command embedding [N, D] on top of the pretrained ``speech_embedding``.

    ``features`` (mel + the frozen part of the pretrained network) and ``head`` (its last
    ``finetune_blocks`` blocks, if any, and the command head) are separate so that training
    can compute the features once per augmented window.
    """

    def __init__(self, channels: tuple[int, int, int], embed_dim: int, dropout: float = 0.1,
                 pretrained: bool = True, finetune_blocks: int = 0) -> None:
        super().__init__()
        c1, c2, _ = channels
        self.finetune_blocks = finetune_blocks
        self.frontend = speech_embedding.SpeechMelFrontEnd()
        self.embedding = speech_embedding.SpeechEmbedding()
        if pretrained:
            self.embedding.load_pretrained()
        self.embedding.unfreeze(finetune_blocks)
        d = speech_embedding.EMBED_DIM
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.Sequential(_TemporalBlock(d, c1, stride=1), _TemporalBlock(c1, c2, stride=1, dilation=2))
        self.pool_score = nn.Conv1d(c2, 1, 1)
        self.proj = nn.Sequential(nn.Linear(2 * c2, embed_dim), nn.ReLU())

    def train(self, mode: bool = True):
        super().train(mode)
        self.embedding.eval()  # pretrained without dropout or batch norm: one behaviour in both modes
        return self

    def features(self, audio: torch.Tensor) -> torch.Tensor:
        """[N, samples] -> what the frozen part computes: [N, 96, 16] speech embeddings at an 80 ms
        step when all of it is frozen, else the activations below the fine-tuned blocks."""
        return speech_embedding.features(self.frontend, self.embedding, audio, self.finetune_blocks)

    def head(self, feats: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.dropout(self.embedding.upper(feats, self.finetune_blocks)))
        weights = torch.softmax(self.pool_score(x), dim=-1)
        pooled = torch.cat([(x * weights).sum(-1), x.amax(-1)], dim=1)
        return self.proj(pooled)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(audio))


class ReferenceModel(nn.Module):
    """Camera image + spoken command -> intent, target point, presence, attention."""

    def __init__(self, config: ModelConfig | None = None, pretrained: bool = True) -> None:
        super().__init__()
        self.config = config or ModelConfig()
        cfg = self.config
        c_img = cfg.image_channels[-1]
        grid_h, grid_w = cfg.grid_hw
        self.image_encoder = ImageEncoder(cfg.image_channels, cfg.grid_stride)
        if cfg.audio_frontend == "speech_embedding":
            self.audio_encoder = SpeechEmbeddingEncoder(cfg.audio_channels, cfg.embed_dim, cfg.head_dropout,
                                                        pretrained=pretrained, finetune_blocks=cfg.finetune_blocks)
        else:
            self.audio_encoder = AudioEncoder(cfg.audio_channels, cfg.embed_dim)
        self.intent_head = nn.Sequential(
            nn.Linear(cfg.embed_dim, cfg.embed_dim), nn.ReLU(), nn.Linear(cfg.embed_dim, cfg.n_intents)
        )
        self.query = nn.Linear(cfg.embed_dim, cfg.attn_dim)
        self.key = nn.Conv2d(c_img + 2, cfg.attn_dim, 1)
        self.value = nn.Conv2d(c_img + 2, cfg.attn_dim, 1)
        # A per-cell sub-cell offset (CenterNet-style) refines the soft-argmax
        # so that small, distant objects are hit, not just their grid cell.
        self.offset = nn.Conv2d(c_img, 2, 1)
        self.presence_head = nn.Sequential(
            nn.Linear(cfg.attn_dim * 2 + 1, cfg.attn_dim), nn.ReLU(), nn.Linear(cfg.attn_dim, 1)
        )
        ys = (torch.arange(grid_h, dtype=torch.float32) + 0.5) / grid_h
        xs = (torch.arange(grid_w, dtype=torch.float32) + 0.5) / grid_w
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        self.register_buffer("grid_xy", torch.stack([gx, gy]).unsqueeze(0), persistent=False)  # [1,2,h,w]
        self.register_buffer(
            "cell_size", torch.tensor([1.0 / grid_w, 1.0 / grid_h]).view(1, 2, 1, 1), persistent=False
        )
        self.attn_scale = 1.0 / math.sqrt(cfg.attn_dim)
        # Which object the command names (from the audio alone) and which object
        # type sits at each grid cell (from the image alone). Both are trained
        # with their own labels, which give every object in every scene a
        # label rather than just the named one. The attention adds the log
        # probability that a cell holds the named object type, averaged over
        # what the audio says was named, to the learned query-key score.
        self.object_head = nn.Linear(cfg.embed_dim, N_OBJECT_TYPES)
        self.cell_head = nn.Conv2d(c_img, N_OBJECT_TYPES + 1, 1)
        self.type_weight = nn.Parameter(torch.tensor(1.0))

    def forward(self, image: torch.Tensor, audio: torch.Tensor):
        return self._forward(image, audio)[0]

    def forward_train(self, image: torch.Tensor, audio: torch.Tensor | None = None,
                      audio_features: torch.Tensor | None = None):
        """Outputs plus the logits trained with their own labels: object [N, 12], cell types [N, 13, h, w].

        With the speech embedding, ``audio_features`` (``audio_encoder.features(audio)``,
        computed once per window) may stand in for ``audio``.
        """
        return self._forward(image, audio, audio_features)

    def _forward(self, image: torch.Tensor, audio: torch.Tensor | None, audio_features: torch.Tensor | None = None):
        feats = self.image_encoder(image)  # [N, C, h, w]
        n, _, h, w = feats.shape
        grid = self.grid_xy.expand(n, -1, -1, -1)
        feats_xy = torch.cat([feats, grid], dim=1)
        if audio_features is not None:
            emb = self.audio_encoder.head(audio_features)
        else:
            emb = self.audio_encoder(audio)  # [N, D]
        intent_logits = self.intent_head(emb)

        q = self.query(emb)  # [N, A]
        k = self.key(feats_xy).flatten(2)  # [N, A, h*w]
        v = self.value(feats_xy).flatten(2)
        object_logits = self.object_head(emb)  # [N, 12]
        cell_logits = self.cell_head(feats)  # [N, 13, h, w]
        named = torch.softmax(object_logits, dim=-1)
        cell_logp = torch.log_softmax(cell_logits, dim=1)[:, :N_OBJECT_TYPES].flatten(2)  # [N, 12, h*w]
        type_score = torch.einsum("no,nop->np", named, cell_logp)
        scores = torch.einsum("na,nap->np", q, k) * self.attn_scale + self.type_weight * type_score
        attn = torch.softmax(scores, dim=-1)
        offset = torch.tanh(self.offset(feats)) * self.cell_size  # within one cell
        points = (grid + offset).flatten(2)  # [N, 2, h*w]
        target_xy = torch.einsum("np,ncp->nc", attn, points)
        attended = torch.einsum("np,nap->na", attn, v)
        peak = scores.amax(dim=-1, keepdim=True)
        target_logit = self.presence_head(torch.cat([attended, q, peak], dim=1)).squeeze(-1)
        return (intent_logits, target_xy, target_logit, attn.view(n, h, w)), object_logits, cell_logits

    def third_party(self) -> list[dict]:
        """Pretrained parts made by others, with their licences (the converter puts them in the bundle)."""
        return [speech_embedding.third_party_entry()] if self.config.audio_frontend == "speech_embedding" else []

    @torch.no_grad()
    def predict(self, image: torch.Tensor, audio: torch.Tensor) -> dict[str, torch.Tensor]:
        """Eval-mode forward returning a name -> tensor dict."""
        self.eval()
        return dict(zip(OUTPUT_NAMES, self(image, audio)))


def build_model(config: dict | None = None, pretrained: bool = True) -> ReferenceModel:
    """Model factory (``reference_model.model:build_model``) used by the converter.

    ``config`` is a checkpoint's ``model_config`` (see ``ModelConfig.from_dict``);
    ``pretrained=False`` skips reading the speech embedding's weights (a checkpoint brings its own).
    """
    return ReferenceModel(ModelConfig.from_dict(config) if config else ModelConfig(), pretrained=pretrained)


def load_checkpoint(path, map_location: str = "cpu") -> tuple[ReferenceModel, dict]:
    """Load a reference checkpoint written by ``voxedge train``; returns (model in eval mode, metadata)."""
    try:
        # weights_only: a checkpoint holds tensors and plain data, never code to run.
        blob = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(
            f"checkpoint {path} does not exist; train one with `voxedge train` or `make reference-model`"
        ) from None
    except Exception as exc:  # torch raises several unrelated types for a damaged file
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"checkpoint {path} is unreadable ({reason}); retrain it with `voxedge train`") from exc
    if not isinstance(blob, dict) or "state_dict" not in blob or "model_config" not in blob:
        raise CheckpointError(
            f"{path} is not a voxedge reference checkpoint (no state_dict/model_config); "
            "train one with `voxedge train`"
        )
    model = build_model(blob["model_config"], pretrained=False)
    try:
        model.load_state_dict(blob["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(
            f"{path} does not fit this version of the reference model ({str(exc).splitlines()[0]}); "
            "retrain it with `voxedge train` or check out the voxedge version that wrote it"
        ) from exc
    model.eval()
    return model, {k: v for k, v in blob.items() if k != "state_dict"}
