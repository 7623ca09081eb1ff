"""Frames into and out of the pipelines: the one reading of a clip a user gives (`as_clips`) and the
one set of output types (`OUTPUT_TYPES`, `check_output_type`, `to_output`, `decoded_to_output`).

A clip comes in as frames (F, H, W, 3), (F, H, W, 1) or grayscale (F, H, W), or as clips
(B, F, H, W, 3); uint8, or floats in [0, 1]; a numpy array, a torch tensor, or a list of frames
(arrays or PIL images). It goes out as `output_type`:

- "np": (..., F, H, W, 3) float32 in [0, 1]
- "pt": (..., F, 3, H, W) tensor in [0, 1] (diffusers' layout)
- "uint8": "np" in 0..255
- "pil": a list of PIL images per clip
- "latent": the latents, from the pipelines that make frames in a latent space
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import InvalidArgumentError

OUTPUT_TYPES = ("np", "pt", "uint8", "pil", "latent")


def as_clips(video, argument: str = "video") -> torch.Tensor:
    """A clip or clips (see the module docstring) -> float tensor (B, F, H, W, 3) in [0, 1]; anything
    else raises `InvalidArgumentError(argument, ...)`."""
    if isinstance(video, (list, tuple)):
        if not video:
            raise InvalidArgumentError(argument, "the clip has no frames")
        video = np.stack([np.asarray(frame.convert("RGB") if hasattr(frame, "convert") else frame) for frame in video])
    if isinstance(video, np.ndarray):
        video = torch.from_numpy(np.ascontiguousarray(video))
    if not isinstance(video, torch.Tensor):
        raise InvalidArgumentError(argument, f"expected frames (F, H, W, 3) as a numpy array or tensor, got {type(video).__name__}")
    if video.ndim == 3:
        video = video[..., None]
    if video.ndim == 4:
        video = video[None]
    if video.ndim != 5 or video.shape[-1] not in (1, 3):
        raise InvalidArgumentError(argument, f"expected frames (F, H, W, 3) or clips (B, F, H, W, 3), got shape "
                                   f"{tuple(video.shape)}")
    if video.shape[1] == 0:
        raise InvalidArgumentError(argument, "the clip has no frames")
    if video.shape[2] == 0 or video.shape[3] == 0:
        raise InvalidArgumentError(argument, f"empty frames of shape {tuple(video.shape[2:])}")
    if video.shape[-1] == 1:
        video = video.expand(*video.shape[:4], 3)
    return video.float() / 255.0 if video.dtype == torch.uint8 else video.float()


def check_output_type(output_type, latent: bool = True) -> None:
    """Refuse an `output_type` outside `OUTPUT_TYPES` ("latent" too, unless `latent`)."""
    allowed = OUTPUT_TYPES if latent else tuple(kind for kind in OUTPUT_TYPES if kind != "latent")
    if output_type not in allowed:
        raise InvalidArgumentError("output_type", f"must be one of {', '.join(allowed)}, got {output_type!r}")


def to_output(frames: torch.Tensor, output_type: str):
    """Frames (..., F, 3, H, W) in [0, 1] (clamped here) -> `output_type` (not "latent")."""
    frames = frames.clamp(0, 1)
    if output_type == "pt":
        return frames.contiguous()
    array = frames.cpu().movedim(-3, -1).float().numpy()
    if output_type == "np":
        return array
    uint8 = (array * 255).round().astype(np.uint8)
    if output_type == "uint8":
        return uint8
    from PIL import Image

    if uint8.ndim == 4:
        return [Image.fromarray(frame) for frame in uint8]
    return [[Image.fromarray(frame) for frame in clip] for clip in uint8]


def decoded_to_output(video: torch.Tensor, output_type: str):
    """A VAE's decoding (B, 3, F, H, W) in [-1, 1] -> `output_type` (not "latent")."""
    return to_output((video / 2 + 0.5).transpose(1, 2), output_type)
