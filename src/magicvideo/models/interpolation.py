"""The frame-interpolation model (cascade stage 2): a `MagicVideoUNet3D` with conditioning channels.

Its input is the noisy latents (C channels) followed by `CONDITION_CHANNELS` = 2C + 2 channels that
give every frame both of its neighbouring keyframes; with directed (causal) temporal attention a
frame cannot attend to a later keyframe, so each frame carries them in its own input:

    [ left keyframe latent (C) | right keyframe latent (C) | position between them in [0, 1] (1) | keyframe mask (1) ]

A keyframe is its own left and right neighbour (position 0, mask 1). The clip is laid out as in
training: keyframes at 0, k, 2k, ... and k - 1 frames between consecutive keyframes. Text and fps
conditioning are the keyframe model's (fps = the output frame rate).

Residual over the blend (`residual=True` in the pipeline's config): the diffusion variable of the
in-between frames is their difference from the linear blend of their two keyframes' latents
(`linear_blend`), predicted as x0, as the super-resolution stage's is the difference from bicubic
upsampling. The untrained model (`conv_out` at zero) then returns the blend itself, the strongest
simple baseline, and training only has to learn what the blend gets wrong (the motion).

Windows: a model with `num_frames` N holds m = (N - 1) // k + 1 keyframes per window (k = 3,
N = 16: 6 keyframes at 0, 3, ..., 15). K keyframes are split into windows of m keyframes that
share their boundary keyframe (16 keyframes -> 3 windows, 46 frames). Keyframes are held fixed
during sampling, so the shared keyframe is the same latent in both windows: there is no seam.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import UNet2DConditionModel

from .unet_3d import MagicVideoUNet3D


def condition_channels(latent_channels: int) -> int:
    """Conditioning channels for `latent_channels`-channel latents: left, right, position, mask."""
    return 2 * latent_channels + 2


def is_interpolation_unet(unet) -> bool:
    """True for a U-Net whose input is its output latents plus the interpolation conditioning."""
    config = unet.config
    return config.in_channels == config.out_channels + condition_channels(config.out_channels)


def from_keyframe_model(unet: MagicVideoUNet3D, zero_output: bool = False, **config_overrides) -> MagicVideoUNet3D:
    """An interpolation U-Net initialised from a keyframe `MagicVideoUNet3D`: every shared weight
    copied, the new input channels of `conv_in` at zero. Before training it therefore predicts, from
    the noisy latents, exactly what the keyframe model predicts (the conditioning is ignored).
    `zero_output`: `conv_out` at zero as well (a residual model that starts at the linear blend)."""
    if not isinstance(unet, MagicVideoUNet3D):
        raise TypeError(f"from_keyframe_model needs a MagicVideoUNet3D, got {type(unet).__name__} "
                        "(inflate a UNet2DConditionModel with from_unet2d first, or use from_unet2d_model)")
    if is_interpolation_unet(unet):
        raise ValueError("this U-Net is already an interpolation model")
    model = unet.with_input_channels(unet.config.in_channels + condition_channels(unet.config.out_channels),
                                     **config_overrides)
    if zero_output:  # the convolution and its frame-wise adaptor's shift: the output is exactly zero
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if name in ("conv_out.weight", "conv_out.bias", "conv_out.adaptor.shift"):
                    parameter.zero_()
    return model


def from_unet2d_model(unet2d: UNet2DConditionModel, num_frames: int = 16, **config_overrides) -> MagicVideoUNet3D:
    """An interpolation U-Net from an image U-Net (e.g. Stable Diffusion's): inflated by
    `MagicVideoUNet3D.from_unet2d`, then given the conditioning channels by `from_keyframe_model`."""
    return from_keyframe_model(MagicVideoUNet3D.from_unet2d(unet2d, num_frames=num_frames), **config_overrides)


def linear_blend(conditioning: torch.Tensor) -> torch.Tensor:
    """(1 - p) * left + p * right from conditioning channels (B, 2C + 2, F, h, w): the linear blend of
    every frame's neighbouring keyframe latents (a keyframe's own latent at keyframes, p = 0)."""
    channels = (conditioning.shape[1] - 2) // 2
    left, right = conditioning[:, :channels], conditioning[:, channels : 2 * channels]
    position = conditioning[:, 2 * channels : 2 * channels + 1]
    return left * (1 - position) + right * position


@dataclass(frozen=True)
class Window:
    """One model window: keyframes `first` .. `last` (inclusive, indices into the keyframe list)."""

    first: int
    last: int

    @property
    def keyframes(self) -> int:
        return self.last - self.first + 1


def keyframes_per_window(num_frames: int, factor: int) -> int:
    """Keyframes in one window of a `num_frames`-frame model at interpolation factor `factor`."""
    return (num_frames - 1) // factor + 1


def plan_windows(num_keyframes: int, factor: int, num_frames: int) -> list[Window]:
    """Split `num_keyframes` keyframes into windows that share their boundary keyframe."""
    per_window = keyframes_per_window(num_frames, factor)
    if per_window < 2:
        raise ValueError(f"a {num_frames}-frame model cannot hold two keyframes {factor} frames apart")
    windows, first = [], 0
    while first < num_keyframes - 1:
        last = min(first + per_window - 1, num_keyframes - 1)
        windows.append(Window(first, last))
        first = last
    return windows


def output_length(num_keyframes: int, factor: int) -> int:
    """Frames out for `num_keyframes` keyframes: (K - 1) * k + 1 (16 keyframes, k = 3: 46)."""
    return (num_keyframes - 1) * factor + 1


def window_layout(keyframes: torch.Tensor, factor: int, frames: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Lay keyframe latents (B, C, m, h, w) out on a window of `frames` frames (default (m - 1) * k + 1;
    more frames pad the end with copies of the last keyframe).

    Returns (known latents (B, C, frames, h, w) with the keyframes in place and zeros between,
    the keyframe mask (frames,) bool, the conditioning (B, 2C + 2, frames, h, w))."""
    batch, channels, m, height, width = keyframes.shape
    length = (m - 1) * factor + 1
    frames = length if frames is None else frames
    if frames < length:
        raise ValueError(f"{m} keyframes at factor {factor} need {length} frames, the window has {frames}")
    index = torch.arange(frames)
    left = torch.clamp(index // factor, max=m - 1)
    right = torch.clamp(left + (index % factor > 0).long(), max=m - 1)
    position = torch.where(index < length, (index % factor).float() / factor, torch.zeros(()))
    mask = (index % factor == 0) | (index >= length)  # padding frames are held (copies of the last keyframe)
    left_latents, right_latents = keyframes[:, :, left], keyframes[:, :, right]
    known = torch.where(mask.view(1, 1, -1, 1, 1), left_latents, torch.zeros_like(left_latents))
    shape = (batch, 1, frames, height, width)
    position_channel = position.to(keyframes).view(1, 1, -1, 1, 1).expand(shape)
    mask_channel = mask.to(keyframes.dtype).to(keyframes.device).view(1, 1, -1, 1, 1).expand(shape)
    conditioning = torch.cat([left_latents, right_latents, position_channel, mask_channel], dim=1)
    return known, mask.to(keyframes.device), conditioning
