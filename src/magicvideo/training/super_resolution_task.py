"""The super-resolution stage's training task (`task: super_resolution` in a config).

Data: high-resolution patches rendered on the fly from the real MNIST digits of `sr.split`
(:func:`magicvideo.digits.hires.random_patch`: crisp x4 renderings, see that module), each sample
a function of (seed, stream position) only, so resume and any process count follow the same
trajectory. The low-resolution input is the patch area-downsampled by `sr.scale`.

Loss: the diffusion variable is the residual r = (hr - bicubic(lr)) * residual_scale; noise
n and timestep t per sample, the conditioning frame bicubic(lr) noise-augmented at a level drawn
uniformly from [0, sr.max_noise_level] (0 with probability `sr.clean_prob`); MSE of the model's
prediction against `train.prediction_type`'s target of r: `sample` (x0, r itself), v or epsilon.

Saved: a `MagicVideoUpscalePipeline` folder (unet + DDIM scheduler, trailing spacing).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler
from torch.utils.data import Dataset

from ..models.super_resolution import SuperResolutionUNet, augment, upsample
from .config import Config
from .diffusion import prediction_target
from .trainer import sample_generator


class HiresDigitPatches(Dataset):
    """Endless map-style stream of high-resolution digit patches: item p -> pixel_values (3, S, S) in [-1, 1]."""

    def __init__(self, config: Config):
        self.config = config

    def __len__(self) -> int:  # a stream: StreamSampler draws positions, never this length
        return 1 << 62

    def __getitem__(self, position: int) -> dict:
        from ..digits.hires import random_patch

        sr = self.config.sr
        rng = np.random.default_rng([self.config.train.seed, int(position)])
        patch = random_patch(rng, sr.split, sr.patch_size, sr.two_digit_prob)
        pixels = torch.from_numpy(np.ascontiguousarray(patch)) * 2 - 1
        return {"pixel_values": pixels.expand(3, -1, -1).clone(), "fps": 0.0, "position": int(position), "skipped": []}


def build_sr_unet(config: Config) -> SuperResolutionUNet:
    sr = config.sr
    if sr.init:
        unet = SuperResolutionUNet.from_pretrained(sr.init, subfolder="unet" if (Path(sr.init) / "unet").is_dir() else None)
        unet.register_to_config(prediction_type=config.train.prediction_type)  # a fine-tune may change it
        return unet
    return SuperResolutionUNet(scale=sr.scale, pixel_shuffle=sr.pixel_shuffle, block_out_channels=tuple(sr.block_out_channels),
                               layers_per_block=sr.layers_per_block, norm_num_groups=sr.norm_num_groups,
                               residual_scale=sr.residual_scale, head_channels=sr.head_channels,
                               prediction_type=config.train.prediction_type)


def noise_scheduler(config: Config) -> DDPMScheduler:
    train = config.train
    return DDPMScheduler(num_train_timesteps=train.num_train_timesteps, beta_schedule=train.beta_schedule,
                         beta_start=train.beta_start, beta_end=train.beta_end, prediction_type=train.prediction_type)


class SuperResolutionTask:
    name = "train-sr"

    def __init__(self, config: Config, accelerator):
        self.config, self.device = config, accelerator.device
        self.model = build_sr_unet(config)
        self.model.train()
        self.scheduler = noise_scheduler(config)

    def dataset(self, rank: int, world_size: int, start_micro_batch: int):
        return HiresDigitPatches(self.config)

    def loss(self, model, batch: dict) -> torch.Tensor:
        sr, seed = self.config.sr, self.config.train.seed
        hr = batch["pixel_values"].to(self.device)
        lr = F.avg_pool2d(hr, sr.scale)
        up = upsample(lr, sr.scale)
        residual = (hr - up) * sr.residual_scale
        gens = [sample_generator(seed, int(p), salt=3) for p in batch["position"]]
        noise = torch.stack([torch.randn(hr.shape[1:], generator=g) for g in gens]).to(self.device)
        aug_noise = torch.stack([torch.randn(hr.shape[1:], generator=g) for g in gens]).to(self.device)
        draws = torch.stack([torch.rand(3, generator=g) for g in gens])
        timesteps = (draws[:, 0] * self.scheduler.config.num_train_timesteps).long().clamp(max=self.scheduler.config.num_train_timesteps - 1)
        levels = (draws[:, 1] * (sr.max_noise_level + 1)).long().clamp(max=sr.max_noise_level)
        levels = torch.where(draws[:, 2] < sr.clean_prob, torch.zeros_like(levels), levels)
        timesteps, levels = timesteps.to(self.device), levels.to(self.device)
        condition = augment(up, levels, self.scheduler.alphas_cumprod, aug_noise)
        noisy = self.scheduler.add_noise(residual, noise, timesteps)
        prediction = model(noisy, timesteps, condition, levels)
        target = prediction_target(self.scheduler, residual, noise, timesteps)  # x0: the residual itself
        return F.mse_loss(prediction.float(), target.float())

    def pipeline(self, unet):
        from ..pipelines.upscale import MagicVideoUpscalePipeline

        train = self.config.train
        scheduler = DDIMScheduler(num_train_timesteps=train.num_train_timesteps, beta_schedule=train.beta_schedule,
                                  beta_start=train.beta_start, beta_end=train.beta_end,
                                  prediction_type=train.prediction_type, timestep_spacing="trailing",
                                  clip_sample=False, set_alpha_to_one=False)
        return MagicVideoUpscalePipeline(unet=unet, scheduler=scheduler)

    @torch.no_grad()
    def sample(self, unet, folder: Path) -> None:
        """Contact sheet (LR nearest | bicubic | SR | truth) of two held-out test frames, with PSNRs."""
        from PIL import Image

        from ..digits.hires import test_frames

        was_training = unet.training
        unet.eval()
        sr = self.config.sr
        hr, lr, _ = test_frames(2, seed=self.config.output.sample_seed, num_clips=2)
        hr, lr = hr[:, 0], lr[:, 0]  # the first frame of two clips
        video = np.repeat(lr[..., None], 3, axis=-1)
        pipe = self.pipeline(unet)
        pipe.set_progress_bar_config(disable=True)
        out = pipe(video, num_inference_steps=sr.sample_steps, noise_level=sr.sample_noise_level,
                   generator=torch.Generator().manual_seed(0), output_type="np").frames[..., 0]
        bic = upsample(torch.from_numpy(lr)[:, None] * 2 - 1, sr.scale)[:, 0].numpy() * 0.5 + 0.5
        nearest = np.kron(lr, np.ones((1, sr.scale, sr.scale)))
        rows = [np.concatenate([n, b, o, h], axis=1) for n, b, o, h in zip(nearest, bic, out, hr)]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((np.clip(np.concatenate(rows), 0, 1) * 255).round().astype(np.uint8)).save(folder / "contact-sheet.png")

        def psnr(a, b):
            return float(10 * np.log10(1.0 / max(np.mean((a - b) ** 2), 1e-12)))
        (folder / "psnr.txt").write_text(f"sr {psnr(out, hr):.2f} dB, bicubic {psnr(bic, hr):.2f} dB\n")
        unet.train(was_training)

    def save_final(self, unet, folder: Path) -> None:
        unet.eval()
        self.pipeline(unet).save_pretrained(folder)
