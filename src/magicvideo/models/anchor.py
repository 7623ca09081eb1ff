"""The first-frame anchor (beyond the paper): frame 0's latent as extra input channels of every frame.

Directed temporal attention lets frame f look at earlier frames only through attention over the
same spatial position; in small latents a moving digit is a few cells, and the attention does not
copy its shape precisely. As MCVD, SEINE and DynamiCrafter condition on known frames, an anchor
model's U-Net takes, beside the C noisy latent channels, C + 1 more: the clean latent of frame 0
(copied to every frame) and a mask channel (1 where the anchor is given), so that every frame's
convolutions see the first frame directly. The anchor is given once frame 0 is finished: for the
chunks after the first in causal sampling, for the frames after a given first image, and in training
for the clips whose frame 0 is context. Without it (the first chunk, the synchronous sampler) the
channels are zero.
"""

from __future__ import annotations

import torch

from .unet_3d import MagicVideoUNet3D


def is_anchor_unet(unet) -> bool:
    """Whether the U-Net takes the anchor channels: in = out + (out + 1)."""
    config = unet.config
    return config.in_channels == 2 * config.out_channels + 1


def anchor_conditioning(anchor: torch.Tensor | None, like: torch.Tensor, given: torch.Tensor | None = None) -> torch.Tensor:
    """The anchor channels (B, C + 1, F, h, w) of latents `like` (B, C, F, h, w): `anchor` (B, C, 1, h, w),
    the clean latent of frame 0, copied to every frame with a mask channel of 1, for the clips where
    `given` (B,) bool is true (default: all; None `anchor`: none)."""
    b, c, f, h, w = like.shape
    out = torch.zeros(b, c + 1, f, h, w, dtype=like.dtype, device=like.device)
    if anchor is None:
        return out
    given = torch.ones(b, dtype=torch.bool, device=like.device) if given is None else given.to(like.device)
    out[:, :c] = anchor.to(like.dtype).expand(-1, -1, f, -1, -1)
    out[:, c] = 1.0
    return out * given.to(like.dtype)[:, None, None, None, None]


def with_anchor(unet: MagicVideoUNet3D) -> MagicVideoUNet3D:
    """An anchor model initialised from a keyframe model: every weight copied, the new input channels of
    `conv_in` at zero, so that before training it computes exactly what `unet` computes."""
    if is_anchor_unet(unet):
        return unet
    return unet.with_input_channels(2 * unet.config.out_channels + 1)
