"""Frame-wise adaptor: z^i = S^i * Conv2d(z^i) + B^i for frame i.

MagicVideo keeps every 2D convolution of the image model and shares it across frames; each
convolution gets a learnable per-frame, per-channel scale S and shift B, initialised to the
identity (S = 1, B = 0) so that the inflated network starts as the image model.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn


class FrameAdaptor(nn.Module):
    """Per-frame, per-channel affine map on a (batch * frames, C, H, W) feature."""

    def __init__(self, channels: int, num_frames: int):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(num_frames, channels))
        self.shift = nn.Parameter(torch.zeros(num_frames, channels))
        self.frames = num_frames  # frames of the current clip, set by the 3D U-Net before each call

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.frames
        x = rearrange(x, "(b f) c h w -> b f c h w", f=f)
        x = x * self.scale[:f, :, None, None].to(x.dtype) + self.shift[:f, :, None, None].to(x.dtype)
        return rearrange(x, "b f c h w -> (b f) c h w")


class FrameAdaptedConv2d(nn.Conv2d):
    """A 2D convolution shared by all frames, followed by its frame-wise adaptor.

    Parameters keep the names of the wrapped convolution (`weight`, `bias`), so image-model
    checkpoints load unchanged; the adaptor adds `adaptor.scale` and `adaptor.shift`.
    """

    adaptor: FrameAdaptor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.adaptor(super().forward(x))


def add_frame_adaptors(model: nn.Module, num_frames: int) -> None:
    """Give every `nn.Conv2d` in `model` a frame-wise adaptor, in place."""
    convs = [m for m in model.modules() if type(m) is nn.Conv2d]
    for conv in convs:
        conv.__class__ = FrameAdaptedConv2d
        conv.adaptor = FrameAdaptor(conv.out_channels, num_frames).to(conv.weight.device)
