"""The image VAE applied to video, one frame at a time: z = [E(x^1), ..., E(x^F)].

Frames are folded into the batch and processed in chunks of `chunk_size` to bound memory.
Latents are scaled (and shifted, for VAEs that have a `shift_factor`) as the VAE's config says.
"""

from __future__ import annotations

import torch
from einops import rearrange


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
    """Scaled latents (B, C, F, h, w) -> video (B, 3, F, H, W) in [-1, 1] (not clamped)."""
    scale, shift = scaling(vae)
    frames = rearrange(latents, "b c f h w -> (b f) c h w").to(vae.device, vae.dtype) / scale + shift
    decoded = torch.cat([vae.decode(chunk).sample for chunk in frames.split(chunk_size)])
    return rearrange(decoded, "(b f) c h w -> b c f h w", b=latents.shape[0])
