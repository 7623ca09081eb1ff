"""Directed (causal) space-time convolution beside a res-block: beyond the paper, a config switch.

Issue #13: with directed temporal attention over the frames *at one spatial position*, a frame can
only copy from the same place in earlier frames, while a moving subject is elsewhere there; on 8 x 8
latents a digit crosses several cells in a clip. A 3D convolution whose kernel covers the previous
`kernel_frames - 1` frames and a 3 x 3 neighbourhood can learn "take the content from one cell over
in the frame before", the local shift that rigid motion is (as the 3D convolutions of VDM and Video
LDM's temporal blocks do, here causal so that the model stays directed).

    z + Conv3d_causal(SiLU(GroupNorm(z)))

The normalisation is per frame (a GroupNorm over (C, F, H, W) would let later frames change the
statistics of earlier ones), the kernel is padded with `kernel_frames - 1` zero frames in front
only, so output frame p is a function of input frames p - kernel_frames < q <= p. The convolution
starts at zero: a model extended with it computes exactly what it computed before.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


class CausalTemporalConvolution(nn.Module):
    """The residual branch Conv3d_causal(SiLU(GroupNorm(z))) of a (batch * frames, C, H, W) feature.

    The 3D kernel (C_out, C_in, kernel_frames, k, k) is applied as a 2D convolution over each frame
    stacked with its `kernel_frames - 1` predecessors along the channels (oldest first): the same sum,
    on the CPU about twice as fast as `nn.Conv3d` at these sizes. Plain parameters, not an
    `nn.Conv2d`, so that the U-Net's frame adaptors (added to every `nn.Conv2d`) leave it alone.
    """

    def __init__(self, channels: int, kernel_frames: int = 3, kernel_size: int = 3, norm_groups: int = 32):
        super().__init__()
        if kernel_frames < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_frames must be >= 1 and kernel_size odd, got {kernel_frames}, {kernel_size}")
        self.kernel_frames = kernel_frames
        self.norm = nn.GroupNorm(next(g for g in range(min(norm_groups, channels), 0, -1) if channels % g == 0),
                                 channels, eps=1e-6)
        self.weight = nn.Parameter(torch.zeros(channels, kernel_frames * channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        h = rearrange(F.silu(self.norm(x)), "(b f) c h w -> b f c h w", f=num_frames)
        past = F.pad(h, (0, 0, 0, 0, 0, 0, self.kernel_frames - 1, 0))  # zero frames in front only
        stacked = torch.cat([past[:, lag:lag + num_frames] for lag in range(self.kernel_frames)], dim=2)
        return F.conv2d(rearrange(stacked, "b f c h w -> (b f) c h w"), self.weight, self.bias,
                        padding=self.weight.shape[-1] // 2)
