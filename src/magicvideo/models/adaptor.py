"""Frame-wise adaptor: z^i = S^i * Conv2d(z^i) + B^i for frame i.

MagicVideo keeps every 2D convolution of the image model and shares it across frames; each
convolution gets a learnable per-frame, per-channel scale S and shift B, initialised to the
identity (S = 1, B = 0) so that the inflated network starts as the image model. The number of
frames of the clip is an argument of every call: frames are folded into the batch as (b f).
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

    def forward(self, x: torch.Tensor, num_frames: int, bias: torch.Tensor | None = None,
                frame_offset: int = 0) -> torch.Tensor:
        """S^i * (x^i + bias) + B^i, computed as S^i * x^i + (S^i * bias + B^i): one pass over `x`, so that a
        convolution can leave its bias to the adaptor (`FrameAdaptedConv2d`). The frames of `x` are frames
        `frame_offset`, ... of the clip (a causal sampler calls the model on a clip's later frames)."""
        f, first = num_frames, frame_offset
        if first + f > len(self.scale):
            raise ValueError(f"frames {first}...{first + f - 1}: this model has adaptors for {len(self.scale)} frames")
        scale, shift = self.scale[first:first + f].to(x.dtype), self.shift[first:first + f].to(x.dtype)
        if bias is not None:
            shift = torch.addcmul(shift, scale, bias.to(x.dtype))
        x = rearrange(x, "(b f) c h w -> b f c h w", f=f)
        return rearrange(torch.addcmul(shift[:, :, None, None], x, scale[:, :, None, None]), "b f c h w -> (b f) c h w")


class FrameAdaptedConv2d(nn.Conv2d):
    """A 2D convolution shared by all frames, followed by its frame-wise adaptor.

    Parameters keep the names of the wrapped convolution (`weight`, `bias`), so image-model
    checkpoints load unchanged; the adaptor adds `adaptor.scale` and `adaptor.shift`.
    """

    def __init__(self, *args, num_frames: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.adaptor = FrameAdaptor(self.out_channels, num_frames)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, num_frames: int) -> "FrameAdaptedConv2d":
        """The adapted twin of `conv`, sharing its weight and bias tensors."""
        new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                  conv.groups, conv.bias is not None, conv.padding_mode, num_frames=num_frames,
                  device=conv.weight.device, dtype=conv.weight.dtype)
        new.weight = conv.weight
        if conv.bias is not None:
            new.bias = conv.bias
        return new

    def forward(self, x: torch.Tensor, num_frames: int, frame_offset: int = 0) -> torch.Tensor:
        # the convolution without its bias; the adaptor adds it (scaled) in its single pass over the output
        return self.adaptor(self._conv_forward(x, self.weight, None), num_frames, self.bias, frame_offset)


def add_frame_adaptors(model: nn.Module, num_frames: int) -> None:
    """Replace every `nn.Conv2d` in `model` (subclasses included) by its `FrameAdaptedConv2d`, in place."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Conv2d) and not isinstance(child, FrameAdaptedConv2d):
                setattr(parent, name, FrameAdaptedConv2d.from_conv(child, num_frames))
