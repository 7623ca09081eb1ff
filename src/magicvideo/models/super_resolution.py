"""The super-resolution stage's denoiser: a pixel-space conditional diffusion U-Net (cascade stage 3).

As in DeepFloyd IF stage II / Imagen, the network sees the noisy high-resolution frame
concatenated with the low-resolution frame upsampled to the output size (bicubic) and noised
("noise augmentation"); the augmentation level is given as a class embedding
(`class_embed_type="timestep"`). Text is not used (the digits domain does not need it).

Two choices make it fast enough for a CPU (46 frames 64 -> 256 in under a minute):

* **Pixel (un)shuffle.** The 6 input channels at 256x256 are folded into 6 * p^2 channels at
  (256/p)^2 (`pixel_unshuffle`, p = `pixel_shuffle`, 4 by default: the U-Net runs at the
  low-resolution grid) and the output is unfolded back. The inner network is a plain diffusers
  `UNet2DModel` (in `self.unet`).
* **Residual target.** The diffusion variable is the residual over bicubic upsampling,
  ``(hr - bicubic(lr)) * residual_scale`` (in [-1, 1] pixel units), not the frame itself: the model
  only has to add the detail bicubic misses. `MagicVideoUpscalePipeline` adds the bicubic frame back.

The network is fully convolutional apart from its group norms: frames of any size divisible by
``pixel_shuffle * 2^(levels - 1)`` work; it was trained on 128x128 high-resolution patches and
applied to whole 256x256 frames.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import UNet2DModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin


class SuperResolutionUNet(ModelMixin, ConfigMixin):
    """eps/v-model of the residual of a x``scale`` upscale; see module docstring."""

    @register_to_config
    def __init__(
        self,
        scale: int = 4,
        pixel_shuffle: int = 4,
        channels: int = 3,
        block_out_channels: tuple[int, ...] = (64, 128, 128),
        layers_per_block: int = 1,
        norm_num_groups: int = 16,
        residual_scale: float = 2.0,
        prediction_type: str = "v_prediction",
        sample_size: int = 256,
        head_channels: int = 0,
    ):
        super().__init__()
        p = pixel_shuffle
        levels = len(block_out_channels)
        self.unet = UNet2DModel(
            sample_size=sample_size // p,
            in_channels=2 * channels * p * p,
            out_channels=channels * p * p,
            down_block_types=("DownBlock2D",) * levels,
            up_block_types=("UpBlock2D",) * levels,
            block_out_channels=tuple(block_out_channels),
            layers_per_block=layers_per_block,
            norm_num_groups=norm_num_groups,
            class_embed_type="timestep",
        )
        # Full-resolution head: the folded U-Net sees each 4x4 block as 16 channels, which makes the
        # local, per-pixel part of the residual (sharpening an edge) slow to learn; a small conv stack
        # at the output resolution over [U-Net output, noisy sample, upsampled frame] learns it fast
        # (measured: 5x lower x0 loss after 100 steps, see docs/super-resolution.md).
        self.head = None
        if head_channels:
            self.head = nn.Sequential(
                nn.Conv2d(3 * channels, head_channels, 3, padding=1), nn.SiLU(),
                nn.Conv2d(head_channels, head_channels, 3, padding=1), nn.SiLU(),
                nn.Conv2d(head_channels, channels, 3, padding=1),
            )

    @property
    def size_multiple(self) -> int:
        """High-resolution sizes must be multiples of this."""
        return self.config.pixel_shuffle * 2 ** (len(self.config.block_out_channels) - 1)

    def forward(self, sample: torch.Tensor, timestep, upsampled: torch.Tensor, noise_level) -> torch.Tensor:
        """sample: noisy residual (B, C, H, W); upsampled: the noise-augmented bicubic-upsampled
        low-resolution frame (B, C, H, W) in [-1, 1]; timestep and noise_level: ints or (B,)."""
        p = self.config.pixel_shuffle
        b = sample.shape[0]
        timestep = torch.as_tensor(timestep, device=sample.device).reshape(-1).expand(b)
        noise_level = torch.as_tensor(noise_level, device=sample.device).reshape(-1).expand(b)
        x = F.pixel_unshuffle(torch.cat([sample, upsampled.to(sample.dtype)], dim=1), p)
        out = F.pixel_shuffle(self.unet(x, timestep, class_labels=noise_level).sample, p)
        if self.head is not None:
            out = self.head(torch.cat([out, sample, upsampled.to(sample.dtype)], dim=1))
        return out


def upsample(low: torch.Tensor, scale: int) -> torch.Tensor:
    """Bicubic upsampling (pixel-centre aligned) of (B, C, h, w) frames, clamped to [-1, 1]."""
    return F.interpolate(low, scale_factor=scale, mode="bicubic", align_corners=False).clamp(-1, 1)


def augment(upsampled: torch.Tensor, noise_level: torch.Tensor, alphas_cumprod: torch.Tensor, noise: torch.Tensor):
    """Noise augmentation of the conditioning frame: sqrt(a) x + sqrt(1 - a) n at level ``noise_level``
    of the scheduler's ``alphas_cumprod`` (level 0: unchanged)."""
    a = alphas_cumprod.to(upsampled.device)[noise_level.long()].to(upsampled.dtype).reshape(-1, 1, 1, 1)
    noisy = a.sqrt() * upsampled + (1 - a).sqrt() * noise
    return torch.where(noise_level.reshape(-1, 1, 1, 1) > 0, noisy, upsampled)
