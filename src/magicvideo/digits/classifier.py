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
    """Two branches. Direction: strided 3D convolutions over the whole clip plus two coordinate
    channels, average pooled. Digit: a 2D CNN on ``crop_size`` windows centred on the digit's
    centre of mass in ``digit_frames`` evenly spaced frames, logits averaged over frames."""

    @register_to_config
    def __init__(
        self,
        motion_channels: tuple[int, ...] = (16, 32, 48, 64),
        digit_channels: tuple[int, ...] = (32, 64, 128),
        crop_size: int = 32,
        digit_frames: int = 4,
        num_digits: int = 10,
        num_directions: int = 8,
        norm_groups: int = 4,
    ):
        super().__init__()
        layers, cin = [], 3  # video + x, y coordinate maps
        for i, cout in enumerate(motion_channels):
            stride = (1, 2, 2) if i == 0 else (2, 2, 2)
            layers += [nn.Conv3d(cin, cout, 3, stride=stride, padding=1), nn.GroupNorm(norm_groups, cout), nn.SiLU()]
            cin = cout
        self.motion = nn.Sequential(*layers)
        self.direction_head = nn.Linear(cin, num_directions)
        layers, cin = [], 1
        for i, cout in enumerate(digit_channels):
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(norm_groups, cout), nn.SiLU()]
            layers += [nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(norm_groups, cout), nn.SiLU()]
            if i < len(digit_channels) - 1:
                layers.append(nn.MaxPool2d(2))
            cin = cout
        self.digit_net = nn.Sequential(*layers)
        self.digit_head = nn.Linear(cin, num_digits)

    def direction_logits(self, video: torch.Tensor) -> torch.Tensor:
        b, _, f, h, w = video.shape
        ys = torch.linspace(-1, 1, h, device=video.device, dtype=video.dtype)
        xs = torch.linspace(-1, 1, w, device=video.device, dtype=video.dtype)
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        coords = torch.stack([grid_x, grid_y]).expand(b, f, 2, h, w).permute(0, 2, 1, 3, 4)
        return self.direction_head(self.motion(torch.cat([video, coords], dim=1)).mean(dim=(2, 3, 4)))

    def digit_frames_of(self, video: torch.Tensor) -> torch.Tensor:
        """(B, K, H, W): the ``digit_frames`` evenly spaced frames the digit branch reads."""
        f = video.shape[2]
        return video[:, 0, torch.linspace(0, f - 1, self.config.digit_frames).round().long()]

    def crop_transforms(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, K, 2, 3) affine maps (grid_sample, align_corners=False) of ``crop_size`` windows
        centred on the centre of mass (above the median level) of frames (B, K, H, W)."""
        b, k, h, w = frames.shape
        mass = (frames - frames.flatten(2).median(-1).values[..., None, None]).clamp(min=0)
        total = mass.sum(dim=(2, 3)).clamp(min=1e-6)
        xs = (torch.arange(w, dtype=frames.dtype) + 0.5) / w * 2 - 1
        ys = (torch.arange(h, dtype=frames.dtype) + 0.5) / h * 2 - 1
        theta = torch.zeros(b, k, 2, 3, dtype=frames.dtype)
        theta[..., 0, 0] = self.config.crop_size / w
        theta[..., 1, 1] = self.config.crop_size / h
        theta[..., 0, 2] = (mass.sum(2) * xs).sum(-1) / total
        theta[..., 1, 2] = (mass.sum(3) * ys).sum(-1) / total
        return theta

    def crops(self, frames: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """(B, K, crop, crop) windows of frames (B, K, H, W) under ``theta`` (B, K, 2, 3)."""
        b, k, h, w = frames.shape
        size = self.config.crop_size
        grid = F.affine_grid(theta.reshape(b * k, 2, 3), (b * k, 1, size, size), align_corners=False)
        return F.grid_sample(frames.reshape(b * k, 1, h, w), grid, align_corners=False).reshape(b, k, size, size)

    def digit_logits(self, crops: torch.Tensor) -> torch.Tensor:
        b, k, size, _ = crops.shape
        feats = self.digit_net(crops.reshape(b * k, 1, size, size)).mean(dim=(2, 3))
        return self.digit_head(feats).reshape(b, k, -1).mean(1)

    def forward(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """video (B, 1, F, H, W) in [0, 1] -> (digit logits (B, 10), direction logits (B, 8))."""
        frames = self.digit_frames_of(video)
        crops = self.crops(frames, self.crop_transforms(frames))
        return self.digit_logits(crops), self.direction_logits(video)


def prepare_clips(clips, num_frames: int | None = NUM_FRAMES, size: int = CANVAS) -> torch.Tensor:
    """Clips (N, F, H, W), (N, F, H, W, 1) or (N, F, H, W, 3), uint8 or float in [0, 1] ->
    (N, 1, num_frames, size, size) float32 in [0, 1]: grayscale by channel mean, resized,
    and ``num_frames`` frames taken uniformly if F differs (``None`` keeps all F)."""
    x = torch.as_tensor(np.asarray(clips))
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    if x.ndim == 5:
        x = x.mean(dim=-1)
    if x.ndim != 4:
        raise ValueError(f"clips must be (N, F, H, W[, C]), got shape {tuple(x.shape)}")
    if num_frames is not None and x.shape[1] != num_frames:
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
