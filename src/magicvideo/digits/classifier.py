"""A tiny 3D-conv video classifier: digit identity (10) and motion direction (8) of a clip.

It reads 16-frame 64x64 grayscale clips (any frame count / size / RGB is converted by
:func:`prepare_clips`) and is what the digits evaluation uses to score generated videos.
Trained weights ship in ``magicvideo/digits/weights/classifier``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from magicvideo.digits.data import CANVAS, NUM_FRAMES

WEIGHTS_DIR = Path(__file__).parent / "weights" / "classifier"


class DigitClassifier(ModelMixin, ConfigMixin):
    """Strided 3D convolutions on the clip plus two coordinate channels, average pooled, two heads."""

    @register_to_config
    def __init__(
        self,
        channels: tuple[int, ...] = (16, 32, 64, 96),
        num_digits: int = 10,
        num_directions: int = 8,
        norm_groups: int = 4,
    ):
        super().__init__()
        layers, cin = [], 3  # video + x, y coordinate maps
        for i, cout in enumerate(channels):
            stride = (1, 2, 2) if i == 0 else (2, 2, 2)
            layers += [nn.Conv3d(cin, cout, 3, stride=stride, padding=1), nn.GroupNorm(norm_groups, cout), nn.SiLU()]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.digit_head = nn.Linear(cin, num_digits)
        self.direction_head = nn.Linear(cin, num_directions)

    def forward(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """video (B, 1, F, H, W) in [0, 1] -> (digit logits (B, 10), direction logits (B, 8))."""
        b, _, f, h, w = video.shape
        ys = torch.linspace(-1, 1, h, device=video.device, dtype=video.dtype)
        xs = torch.linspace(-1, 1, w, device=video.device, dtype=video.dtype)
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        coords = torch.stack([grid_x, grid_y]).expand(b, f, 2, h, w).permute(0, 2, 1, 3, 4)
        feats = self.features(torch.cat([video, coords], dim=1)).mean(dim=(2, 3, 4))
        return self.digit_head(feats), self.direction_head(feats)


def prepare_clips(clips, num_frames: int = NUM_FRAMES, size: int = CANVAS) -> torch.Tensor:
    """Clips (N, F, H, W), (N, F, H, W, 1) or (N, F, H, W, 3), uint8 or float in [0, 1] ->
    (N, 1, num_frames, size, size) float32 in [0, 1]: grayscale by channel mean, resized,
    and ``num_frames`` frames taken uniformly if F differs."""
    x = torch.as_tensor(np.asarray(clips))
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    if x.ndim == 5:
        x = x.mean(dim=-1)
    if x.ndim != 4:
        raise ValueError(f"clips must be (N, F, H, W[, C]), got shape {tuple(x.shape)}")
    if x.shape[1] != num_frames:
        x = x[:, torch.linspace(0, x.shape[1] - 1, num_frames).round().long()]
    if x.shape[-2:] != (size, size):
        n, f = x.shape[:2]
        x = F.interpolate(x.reshape(n * f, 1, *x.shape[-2:]), size=(size, size), mode="area")
        x = x.reshape(n, f, size, size)
    return x.clamp(0, 1).unsqueeze(1)


def load_classifier(path: str | Path | None = None) -> DigitClassifier:
    """The shipped classifier (or one saved at ``path``), in eval mode."""
    return DigitClassifier.from_pretrained(str(path or WEIGHTS_DIR)).eval()


@torch.no_grad()
def classify(model: DigitClassifier, clips, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Predicted (digit (N,), direction index (N,)) for clips in any :func:`prepare_clips` form."""
    x = prepare_clips(clips)
    digits, directions = [], []
    for chunk in x.split(batch_size):
        d, r = model(chunk)
        digits.append(d.argmax(-1))
        directions.append(r.argmax(-1))
    if not digits:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return torch.cat(digits).numpy(), torch.cat(directions).numpy()
