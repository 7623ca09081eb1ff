"""The 3D U-Net's training task: noise-prediction MSE on VAE latents of video clips.

For a clip at stream position p: latents z0 = E(x) (posterior mode, or read from the latent
cache), the caption replaced by "" with probability `train.caption_dropout`, noise and timestep
drawn from a generator seeded by p, z_t = DDPMScheduler.add_noise(z0, noise, t), and the loss
||eps_theta(z_t, t, tau(y), fps) - noise||^2 (the velocity instead for v-prediction schedulers),
optionally weighted per clip by Min-SNR-gamma (`train.snr_gamma`), optionally plus a loss on how the
error changes between frames (`train.frame_difference_weight`, `trainer.video_mse`).
"""

from __future__ import annotations

import logging
import re
from functools import partial
from pathlib import Path

import torch
from diffusers import DDIMScheduler

from ..manifest import ManifestColumns, read_manifest
from ..text import context_length, encode_prompts
from ..vae import encode_video
from ..video_io import write_video
from .cache import CachedClipDataset, cache_exists
from .components import load_components
from .config import Config
from .clips import sample_rng
from .trainer import (clip_spec, frames_as_batch, min_snr_weight, position_noise, prediction_target, video_dataset,
                      video_mse)

logger = logging.getLogger("magicvideo.training")


class DiffusionTask:
    name = "train"

    def __init__(self, config: Config, accelerator):
        self.config, self.device = config, accelerator.device
        parts = load_components(config)
        self.vae = parts.vae.to(self.device)
        self.text_encoder = parts.text_encoder.to(self.device)
        self.tokenizer, self.scheduler = parts.tokenizer, parts.scheduler
        self.model = parts.unet
        if config.model.freeze_spatial:
            trainable = set(self.model.new_parameter_names())
            for name, param in self.model.named_parameters():
                param.requires_grad_(name in trainable)
        if config.model.gradient_checkpointing:
            self.model.enable_gradient_checkpointing()
        self.model.train()
        self.null_text = None

    def dataset(self, rank: int, world_size: int, start_micro_batch: int):
        data = self.config.data
        if cache_exists(data.cache_dir):
            dataset = CachedClipDataset(data.cache_dir, clip_spec(self.config), self.config.train.seed, data.shuffle,
                                        context_length(self.tokenizer))
            self.null_text = dataset.null_text.to(self.device)
            return dataset
        if data.cache_dir:
            logger.warning("data.cache_dir %s holds no cache (run `magicvideo cache`): decoding videos", data.cache_dir)
        return video_dataset(self.config, rank, world_size, start_micro_batch)

    @torch.no_grad()
    def conditioning(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Clean latents (B, C, F, h, w) and text context (B, L, D), caption dropout applied."""
        seed, dropout = self.config.train.seed, self.config.train.caption_dropout
        drop = [sample_rng(seed, int(p), salt=1).random() < dropout for p in batch["position"]]
        if "latents" in batch:
            latents = batch["latents"].to(self.device)
            context = batch["text_embeds"].to(self.device).clone()
            for i, dropped in enumerate(drop):
                if dropped:
                    context[i] = self.null_text
        else:
            latents = encode_video(self.vae, batch["pixel_values"].to(self.device))
            prompts = ["" if dropped else caption for dropped, caption in zip(drop, batch["caption"])]
            context = encode_prompts(self.tokenizer, self.text_encoder, prompts, device=self.device)
        return latents.float(), context.float()

    def loss(self, model, batch: dict) -> torch.Tensor:
        latents, context = self.conditioning(batch)
        train = self.config.train
        noise, timesteps = position_noise(train.seed, batch["position"], latents.shape[1:],
                                          self.scheduler.config.num_train_timesteps, self.device,
                                          train.noise_sharing, train.staggered_fraction, train.staggered_max_slope)
        noisy = frames_as_batch(self.scheduler.add_noise, latents, noise, timesteps)
        target = frames_as_batch(partial(prediction_target, self.scheduler), latents, noise, timesteps)
        prediction = model(noisy, timesteps, context, fps=batch["fps"].to(self.device)).sample
        weights = min_snr_weight(self.scheduler, timesteps.flatten(), train.snr_gamma).reshape(timesteps.shape) \
            if train.snr_gamma else None
        return video_mse(prediction, target, train.frame_difference_weight, train.frame_difference_lags, weights).mean()

    def pipeline(self, unet):
        from ..pipelines.keyframes import MagicVideoPipeline

        scheduler = DDIMScheduler.from_config(self.scheduler.config)
        return MagicVideoPipeline(unet=unet, vae=self.vae, text_encoder=self.text_encoder, tokenizer=self.tokenizer,
                                  scheduler=scheduler, fps_range=self.fps_range(),
                                  noise_sharing=self.config.train.noise_sharing)

    def fps_range(self) -> tuple[float, float] | None:
        """The frame rates the clips of a manifest with an fps column are trained at: native fps /
        stride over the configured strides (None for shards or videos of unknown rate)."""
        data = self.config.data
        if not data.manifest:
            return None
        columns = ManifestColumns(data.path_column, data.caption_column, data.fps_column)
        rates = {record.fps for record in read_manifest(data.manifest, data.root, columns)}
        if None in rates:
            return None
        return min(rates) / data.max_stride, max(rates) / data.min_stride

    @torch.no_grad()
    def sample(self, unet, folder: Path) -> None:
        out, data = self.config.output, self.config.data
        if not out.validation_prompts:
            return
        was_training = unet.training
        unet.eval()
        pipe = self.pipeline(unet)
        pipe.set_progress_bar_config(disable=True)
        for i, prompt in enumerate(out.validation_prompts):
            frames = pipe(prompt, num_frames=data.num_frames, height=data.resolution, width=data.resolution,
                          fps=out.sample_fps, num_inference_steps=out.sample_steps,
                          guidance_scale=out.sample_guidance_scale,
                          generator=torch.Generator().manual_seed(out.sample_seed)).frames[0]
            slug = re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")[:60]
            write_video(folder / f"{i:02d}-{slug}.mp4", frames, out.sample_fps)
        unet.train(was_training)

    def save_final(self, unet, folder: Path) -> None:
        self.pipeline(unet).save_pretrained(folder)
