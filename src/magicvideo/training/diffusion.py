"""The 3D U-Net's training task and the diffusion loss maths the stages share.

For a clip at stream position p: latents z0 = E(x) (posterior mode, or read from the latent
cache), the caption replaced by "" with probability `train.caption_dropout`, noise and timesteps
drawn from a generator seeded by p (`position_noise`), z_t = DDPMScheduler.add_noise(z0, noise, t),
and the loss ||eps_theta(z_t, t, tau(y), fps) - noise||^2 (the velocity instead for v-prediction
schedulers), optionally weighted by Min-SNR-gamma (`train.snr_gamma`).

Noise levels (`NoiseSchedule`, from `train`): one level for the clip (`noise_schedule: clip`, the
paper), or one per frame (`per_frame`, diffusion forcing); a share of clips ramped (`staggered_*`);
and a share of clips whose first k frames are *context* (`context_fraction`): clean or lightly
noised, at their own timestep, and left out of the loss, so that a directed model learns to continue
finished frames, as causal sampling (`sampling.denoise_causal`) shows it them.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from diffusers import DDIMScheduler
from diffusers.training_utils import compute_snr

from ..models.anchor import anchor_conditioning, is_anchor_unet, with_anchor
from ..manifest import ManifestColumns, read_manifest
from ..text import context_length, encode_prompts
from ..vae import encode_video
from ..video_io import write_video
from .cache import CachedClipDataset, cache_exists
from .components import load_components
from .config import Config
from .clips import sample_rng
from .trainer import clip_spec, sample_generator, video_dataset

logger = logging.getLogger("magicvideo.training")


@dataclass(frozen=True)
class NoiseSchedule:
    """How the frames of a training clip are noised (the `train` keys of the same names)."""

    kind: str = "clip"                 # "clip": one level for every frame; "per_frame": independent levels
    staggered_fraction: float = 0.0    # share of clips ramped: t0 + slope * f
    staggered_max_slope: float = 160.0
    context_fraction: float = 0.0      # share of clips whose first k frames are context (not in the loss)
    context_max_timestep: int = 0      # context frames at a timestep uniform in [0, this]
    context_after_start: int = 0       # clips that start after their video's first frame: at least this many

    @classmethod
    def from_config(cls, train) -> "NoiseSchedule":
        return cls(train.noise_schedule, train.staggered_fraction, train.staggered_max_slope, train.context_fraction,
                   train.context_max_timestep, train.context_after_start)

    @property
    def per_frame(self) -> bool:
        """Whether timesteps are drawn per frame (B, F) rather than per clip (B,)."""
        return self.kind == "per_frame" or self.staggered_fraction > 0 or self.has_context

    @property
    def has_context(self) -> bool:
        return self.context_fraction > 0 or self.context_after_start > 0


def position_noise(seed: int, positions, shape, num_timesteps: int, device,
                   schedule: NoiseSchedule = NoiseSchedule(),
                   starts=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The diffusion noise (B, *shape), timesteps and loss mask of the samples at these stream positions,
    each drawn from its position's generator, so any batching or resume draws the same. `shape` is
    (C, F, h, w). Timesteps are one per clip (B,) with the default schedule, else one per frame (B, F);
    the mask (B, F) is 1 for the frames in the loss (0 for context frames), None when all are. `starts`:
    each clip's first frame in its video (for `context_after_start`; None: every clip starts at 0)."""
    noise, timesteps, masks = [], [], []
    frames = shape[1]
    starts = [0] * len(positions) if starts is None else [int(s) for s in starts]
    for position, start in zip(positions, starts):
        generator = sample_generator(seed, int(position))
        own = torch.randn(tuple(shape), generator=generator)
        if schedule.kind == "per_frame":
            t = torch.randint(0, num_timesteps, (frames,), generator=generator)
        else:
            t = torch.randint(0, num_timesteps, (), generator=generator)
        if schedule.staggered_fraction:
            t = staggered_timesteps(t, frames, num_timesteps, schedule.staggered_fraction, schedule.staggered_max_slope,
                                    generator)
        mask = torch.ones(frames)
        if schedule.has_context:
            least = schedule.context_after_start if start > 0 else 0
            t, mask = context_timesteps(t.expand(frames), schedule.context_fraction, schedule.context_max_timestep,
                                        generator, least)
        noise.append(own)
        timesteps.append(t.expand(frames) if schedule.per_frame else t)
        masks.append(mask)
    mask = torch.stack(masks).to(device) if schedule.has_context else None
    return torch.stack(noise).to(device), torch.stack(timesteps).to(device), mask


def staggered_timesteps(t: torch.Tensor, frames: int, num_timesteps: int, fraction: float, max_slope: float,
                        generator: torch.Generator) -> torch.Tensor:
    """Per-frame timesteps (F,) of one clip: with probability `fraction` a ramp t0 + slope * f, clamped
    to 0 ... T - 1, slope uniform in [0, max_slope] timesteps per frame and t0 uniform in
    [-slope * (F - 1), T - 1] (from all but the last frame clean to all pure noise); otherwise `t` for
    every frame. The noise pattern of staggered sampling: the frames before a frame are cleaner."""
    u, slope, start = torch.rand(3, generator=generator).tolist()
    if u >= fraction:
        return t.expand(frames).clone()
    slope *= max_slope
    t0 = -slope * (frames - 1) + start * (num_timesteps - 1 + slope * (frames - 1))
    ramp = t0 + slope * torch.arange(frames, dtype=torch.float64)
    return ramp.round().clamp(0, num_timesteps - 1).long()


def context_timesteps(t: torch.Tensor, fraction: float, max_timestep: int,
                      generator: torch.Generator, least: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(timesteps (F,), loss mask (F,)) of one clip: with probability `fraction` its first k frames (k
    uniform in 1 ... F - 1) become context, at timesteps uniform in [0, `max_timestep`] (each frame its
    own) and out of the loss; otherwise `t` and every frame in the loss. Causal sampling shows a model
    finished frames beside the frames it makes. `least` > 0: always context, k uniform in least ... F - 1."""
    frames = len(t)
    u = torch.rand((), generator=generator).item()
    k = int(torch.randint(1, max(frames, 2), (), generator=generator))
    levels = torch.randint(0, max_timestep + 1, (frames,), generator=generator)
    mask = torch.ones(frames)
    forced = 0 < least < frames
    if forced:
        k = int(torch.randint(least, frames, (), generator=generator))
    elif u >= fraction or frames < 2:
        return t.clone(), mask
    t = t.clone()
    t[:k] = levels[:k]
    mask[:k] = 0
    return t, mask


def frames_as_batch(fn, sample: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """`fn(sample, noise, timesteps)` of a scheduler (add_noise, get_velocity, ...) on (B, C, F, h, w)
    clips with timesteps per clip (B,) or per frame (B, F): per frame, the frames as a batch."""
    if timesteps.dim() < 2:
        return fn(sample, noise, timesteps)
    b, c, f = sample.shape[:3]
    flat = lambda x: x.transpose(1, 2).reshape(b * f, c, *x.shape[3:])  # noqa: E731
    out = fn(flat(sample), flat(noise), timesteps.reshape(b * f))
    return out.reshape(b, f, c, *out.shape[2:]).transpose(1, 2)


def prediction_target(scheduler, sample: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """What a model trained with `scheduler`'s prediction type predicts for `sample` noised with `noise`
    at `timesteps`: the noise (epsilon), the velocity (v_prediction) or the sample itself (x0)."""
    kind = scheduler.config.prediction_type
    if kind == "v_prediction":
        return scheduler.get_velocity(sample, noise, timesteps)
    return sample if kind == "sample" else noise


def min_snr_weight(scheduler, timesteps: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-gamma weights (Hang et al. 2023) of per-sample MSEs: min(SNR(t), gamma) / SNR(t), with
    SNR(t) + 1 as the denominator for v-prediction (the target's scale), balancing the timesteps."""
    snr = compute_snr(scheduler, timesteps)
    return torch.clamp(snr, max=gamma) / (snr + 1 if scheduler.config.prediction_type == "v_prediction" else snr)


def video_mse(prediction: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None,
              mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-clip (B,) mean squared error of (B, C, F, h, w) predictions, each frame's weighted by
    `weights` (per clip (B,) or per frame (B, F); default 1), averaged over the frames of `mask`
    (B, F; default every frame)."""
    per_frame = (prediction.float() - target.float()).pow(2).mean(dim=(1, 3, 4))
    if weights is None:
        weights = torch.ones_like(per_frame)
    weights = weights.float().reshape(len(per_frame), -1).expand_as(per_frame)
    if mask is None:
        return (weights * per_frame).mean(1)
    return (mask * weights * per_frame).sum(1) / mask.sum(1).clamp(min=1)



class DiffusionTask:
    name = "train"

    def __init__(self, config: Config, accelerator):
        self.config, self.device = config, accelerator.device
        parts = load_components(config)
        self.vae = parts.vae.to(self.device)
        self.text_encoder = parts.text_encoder.to(self.device)
        self.tokenizer, self.scheduler = parts.tokenizer, parts.scheduler
        self.model = parts.unet
        if config.model.first_frame_anchor:
            self.model = with_anchor(self.model)
        self.anchor = is_anchor_unet(self.model)
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
        noise, timesteps, mask = position_noise(train.seed, batch["position"], latents.shape[1:],
                                                self.scheduler.config.num_train_timesteps, self.device,
                                                NoiseSchedule.from_config(train), batch.get("start"))
        noisy = frames_as_batch(self.scheduler.add_noise, latents, noise, timesteps)
        target = frames_as_batch(partial(prediction_target, self.scheduler), latents, noise, timesteps)
        if self.anchor:  # frame 0's clean latent for the clips whose frame 0 is context (models/anchor.py)
            given = mask[:, 0] == 0 if mask is not None else torch.zeros(len(latents), dtype=torch.bool)
            noisy = torch.cat([noisy, anchor_conditioning(latents[:, :, :1], noisy, given)], dim=1)
        prediction = model(noisy, timesteps, context, fps=batch["fps"].to(self.device)).sample
        weights = min_snr_weight(self.scheduler, timesteps.flatten(), train.snr_gamma).reshape(timesteps.shape) \
            if train.snr_gamma else None
        return video_mse(prediction, target, weights, mask).mean()

    def pipeline(self, unet):
        from ..pipelines.keyframes import MagicVideoPipeline

        scheduler = DDIMScheduler.from_config(self.scheduler.config)
        return MagicVideoPipeline(unet=unet, vae=self.vae, text_encoder=self.text_encoder, tokenizer=self.tokenizer,
                                  scheduler=scheduler, fps_range=self.fps_range())

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
