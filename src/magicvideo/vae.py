"""The VAE applied to video: encoding and decoding clips of scaled latents, and loading a VAE folder.

Encoding is the image VAE's, one frame at a time: z = [E(x^1), ..., E(x^F)]. Decoding is frame by
frame too, unless the VAE is a VideoVAE (`models/video_vae.py`), whose temporal decoder sees the
clip. Frames are folded into the batch and processed in chunks of `chunk_size` to bound memory.
Latents are scaled (and shifted, for VAEs that have a `shift_factor`) as the VAE's config says.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL
from einops import rearrange

from .errors import InvalidArgumentError
from .models.video_vae import VideoAutoencoderKL

DECODERS = ("video", "image")


def scaling(vae) -> tuple[float, float]:
    """(scaling_factor, shift_factor) of a VAE's config: scaled = (z - shift) * scale."""
    return vae.config.scaling_factor, getattr(vae.config, "shift_factor", None) or 0.0


def encode_video(vae, video: torch.Tensor, chunk_size: int = 16, sample_posterior: bool = False, generator=None) -> torch.Tensor:
    """(B, 3, F, H, W) in [-1, 1] -> scaled latents (B, C, F, h, w).

    `sample_posterior` draws from the posterior (as in training); otherwise its mode is used.
    """
    scale, shift = scaling(vae)
    frames = rearrange(video, "b c f h w -> (b f) c h w").to(vae.device, vae.dtype)
    chunks = []
    for chunk in frames.split(chunk_size):
        dist = vae.encode(chunk).latent_dist
        chunks.append(dist.sample(generator) if sample_posterior else dist.mode())
    latents = (torch.cat(chunks) - shift) * scale
    return rearrange(latents, "(b f) c h w -> b c f h w", b=video.shape[0])


def decode_video(vae, latents: torch.Tensor, chunk_size: int = 16) -> torch.Tensor:
    """Scaled latents (B, C, F, h, w) -> video (B, 3, F, H, W) in [-1, 1] (not clamped), frame by frame."""
    scale, shift = scaling(vae)
    frames = rearrange(latents, "b c f h w -> (b f) c h w").to(vae.device, vae.dtype) / scale + shift
    decoded = torch.cat([vae.decode(chunk).sample for chunk in frames.split(chunk_size)])
    return rearrange(decoded, "(b f) c h w -> b c f h w", b=latents.shape[0])


def decode_latents_video(vae: AutoencoderKL, latents: torch.Tensor, chunk_size: int | None = 16,
                         decoder: str = "video", caches: dict | None = None) -> torch.Tensor:
    """Scaled latents (B, C, F, h, w) (as a diffusion model makes them) -> video (B, 3, F, H, W) in
    [-1, 1], not clamped. `decoder="video"` uses the temporal decoder when `vae` is a
    `VideoAutoencoderKL` (and the image decoder otherwise); `"image"` always decodes frame by frame.
    `caches`: the temporal decoder's state carried from one call to the next (a dict, empty at first),
    so that a long clip decoded piece by piece equals its decoding at once."""
    if decoder not in DECODERS:
        raise InvalidArgumentError("decoder", f"must be one of {', '.join(DECODERS)}, got {decoder!r}")
    if not is_video_vae(vae):
        return decode_video(vae, latents, chunk_size or latents.shape[0] * latents.shape[2])
    scale, shift = scaling(vae)
    latents = latents.to(vae.device, vae.dtype) / scale + shift
    return vae.decode_video(latents, chunk_size, temporal=decoder == "video", caches=caches)


def is_video_vae(vae) -> bool:
    return isinstance(vae, VideoAutoencoderKL)


def load_vae(folder) -> AutoencoderKL:
    """A VAE folder loaded as the class its config names: `VideoAutoencoderKL` (whose `encode` and
    `decode` are the image VAE's) or diffusers' `AutoencoderKL`."""
    video = AutoencoderKL.load_config(folder).get("_class_name") == VideoAutoencoderKL.__name__
    return (VideoAutoencoderKL if video else AutoencoderKL).from_pretrained(folder)
