"""The VAE's training task (`magicvideo train-vae`, or `task: vae`): a KL autoencoder in diffusers'
`AutoencoderKL` architecture trained from scratch on video frames, for domains without a
pretrained VAE.

Loss per frame x: rec(x, D(z)) + kl_weight * KL(q(z|x) || N(0, I)) / (3 H W), with z sampled from
the posterior (seeded by stream position) and rec the mean L1 or squared error per pixel value;
dividing the KL (summed over the latent) by the number of pixel values gives it LDM's weighting.
At the end, `scaling_factor` is set to 1 / std of the latents (posterior modes) of
`vae.scaling_samples` clips, so that scaled latents have unit variance as diffusion expects.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from einops import rearrange

from ..video_io import write_video
from .config import Config
from .trainer import sample_generator, video_dataset


def build_vae(config: Config) -> AutoencoderKL:
    vae = config.vae
    if vae.init:
        return AutoencoderKL.from_pretrained(vae.init)
    levels = len(vae.block_out_channels)
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * levels,
                         up_block_types=["UpDecoderBlock2D"] * levels, block_out_channels=vae.block_out_channels,
                         layers_per_block=vae.layers_per_block, latent_channels=vae.latent_channels,
                         norm_num_groups=vae.norm_num_groups, sample_size=config.data.resolution)


@torch.no_grad()
def validation_clips(config: Config, count: int) -> torch.Tensor:
    """The first `count` clips of the data stream (fixed: the same at every call): the samples of the
    VAE tasks."""
    dataset = video_dataset(config, 0, 1, 0)
    items = iter(dataset) if isinstance(dataset, torch.utils.data.IterableDataset) else map(dataset.__getitem__, range(count))
    return torch.stack([item["pixel_values"] for _, item in zip(range(count), items)])


class VAETask:
    name = "train-vae"

    def __init__(self, config: Config, accelerator):
        self.config, self.device = config, accelerator.device
        self.model = build_vae(config)
        if config.model.gradient_checkpointing:
            self.model.enable_gradient_checkpointing()
        self.model.train()
        self.rank, self.world_size = accelerator.process_index, accelerator.num_processes

    def dataset(self, rank: int, world_size: int, start_micro_batch: int):
        return video_dataset(self.config, rank, world_size, start_micro_batch)

    def loss(self, model, batch: dict) -> torch.Tensor:
        frames = rearrange(batch["pixel_values"].to(self.device), "b c f h w -> (b f) c h w")
        posterior = model.encode(frames).latent_dist
        per_clip = frames.shape[0] // len(batch["position"])
        eps = torch.cat([torch.randn((per_clip, *posterior.mean.shape[1:]), generator=sample_generator(
            self.config.train.seed, int(p), salt=2)) for p in batch["position"]]).to(self.device)
        latents = posterior.mean + posterior.std * eps
        reconstruction = model.decode(latents).sample
        vae = self.config.vae
        rec = F.l1_loss if vae.reconstruction_loss == "l1" else F.mse_loss
        kl = posterior.kl().mean() / frames[0].numel()
        return rec(reconstruction.float(), frames.float()) + vae.kl_weight * kl

    @torch.no_grad()
    def sample(self, vae, folder: Path) -> None:
        """Original | reconstruction side by side for two fixed clips."""
        was_training = vae.training
        vae.eval()
        clips = validation_clips(self.config, 2).to(self.device)
        frames = rearrange(clips, "b c f h w -> (b f) c h w")
        reconstruction = vae.decode(vae.encode(frames).latent_dist.mode()).sample.clamp(-1, 1)
        both = torch.cat([frames, reconstruction], dim=-1)  # side by side
        both = rearrange(both, "(b f) c h w -> b f h w c", b=clips.shape[0]).cpu().numpy() * 0.5 + 0.5
        for i, clip in enumerate(both):
            write_video(folder / f"{i:02d}-reconstruction.mp4", clip.astype(np.float32), self.config.output.sample_fps)
        vae.train(was_training)

    @torch.no_grad()
    def scaling_factor(self, vae) -> float:
        clips = validation_clips(self.config, self.config.vae.scaling_samples).to(self.device)
        frames = rearrange(clips, "b c f h w -> (b f) c h w")
        latents = torch.cat([vae.encode(chunk).latent_dist.mode() for chunk in frames.split(16)])
        return float(1.0 / latents.float().std())

    def save_final(self, vae, folder: Path) -> None:
        vae.eval()
        vae.register_to_config(scaling_factor=self.scaling_factor(vae))
        vae.save_pretrained(folder)
        print(f"scaling_factor = {vae.config.scaling_factor:.5f} (1 / std of the latents of "
              f"{self.config.vae.scaling_samples} clips)")
