"""`task: interpolation`: train the frame-interpolation U-Net (cascade stage 2).

A training clip is `data.num_frames` consecutive frames at the video's native rate
(`data.min_stride = data.max_stride = 1`); every k-th frame (k = `interpolation.keyframe_stride`,
frames 0, k, 2k, ...) is a keyframe. All frames are noised at one timestep t (as the sampler sees
them: known frames are held at the step's noise level), the conditioning channels carry the clean
keyframe latents (left, right neighbour, position, mask; `models/interpolation.py`), and the loss
(v / epsilon MSE, Min-SNR weighted as the keyframe task's) is taken on the in-between frames only.

With `interpolation.residual` the diffusion variable is the difference of the latents from the
linear blend of their keyframes (zero at the keyframes), predicted as x0 (plain MSE), and a
converted keyframe model starts with `conv_out` at zero: it returns the blend before training.

The model starts from `model.pretrained`'s U-Net: a keyframe model (or an inflated Stable Diffusion
U-Net from `magicvideo init-from-sd`) is converted by `from_keyframe_model`; an interpolation
pipeline's U-Net is used as it is. Data, latent cache, resume, EMA, checkpoints and metrics are the
trainer's, exactly as for the keyframe task.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler

from ..models.interpolation import from_keyframe_model, is_interpolation_unet, linear_blend, window_layout
from ..video_io import write_video
from .config import Config
from .diffusion import DiffusionTask, min_snr_weight, position_noise, prediction_target

logger = logging.getLogger("magicvideo.training")


class InterpolationTask(DiffusionTask):
    name = "interpolation"

    def __init__(self, config: Config, accelerator):
        data, stride = config.data, config.interpolation.keyframe_stride
        if data.min_stride != 1 or data.max_stride != 1:
            raise ValueError("interpolation training takes consecutive frames: set data.min_stride = data.max_stride = 1 "
                             f"(got {data.min_stride}, {data.max_stride})")
        if (data.num_frames - 1) % stride or data.num_frames < 2 * stride + 1:
            raise ValueError(f"data.num_frames = {data.num_frames}: must be m * {stride} + 1 frames (m >= 2) for "
                             f"interpolation.keyframe_stride = {stride}, e.g. {5 * stride + 1}")
        super().__init__(config, accelerator)
        self.residual = config.interpolation.residual
        if self.residual:
            self.scheduler = DDPMScheduler.from_config(self.scheduler.config, prediction_type="sample")
        if not is_interpolation_unet(self.model):
            logger.info("converting the pretrained U-Net into an interpolation U-Net (from_keyframe_model)")
            self.model = from_keyframe_model(self.model, zero_output=self.residual)
        if data.num_frames > self.model.config.num_frames:
            raise ValueError(f"data.num_frames = {data.num_frames} exceeds the model's num_frames "
                             f"{self.model.config.num_frames}")
        if config.model.freeze_spatial:
            trainable = set(self.model.new_parameter_names()) | {"conv_in.weight"}
            for name, param in self.model.named_parameters():
                param.requires_grad_(name in trainable)
        if config.model.gradient_checkpointing:
            self.model.enable_gradient_checkpointing()
        self.model.train()
        self.stride = stride
        self._dataset = None

    def dataset(self, rank: int, world_size: int, start_micro_batch: int):
        self._dataset = super().dataset(rank, world_size, start_micro_batch)
        return self._dataset

    def inputs(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(conditioning (B, 2C + 2, F, h, w), in-between mask (F,) bool) of clean latents (B, C, F, h, w)."""
        _, mask, conditioning = window_layout(latents[:, :, :: self.stride], self.stride, latents.shape[2])
        return conditioning, ~mask

    def loss(self, model, batch: dict) -> torch.Tensor:
        latents, context = self.conditioning(batch)
        noise, timesteps, _ = position_noise(self.config.train.seed, batch["position"], latents.shape[1:],
                                             self.scheduler.config.num_train_timesteps, self.device)
        conditioning, between = self.inputs(latents)
        if self.residual:
            latents = latents - linear_blend(conditioning)
        noisy = self.scheduler.add_noise(latents, noise, timesteps)
        target = prediction_target(self.scheduler, latents, noise, timesteps)
        model_input = torch.cat([noisy, conditioning.to(noisy)], dim=1)
        prediction = model(model_input, timesteps, context, fps=batch["fps"].to(self.device)).sample
        error = F.mse_loss(prediction.float(), target.float(), reduction="none")[:, :, between.to(self.device)]
        per_clip = error.flatten(1).mean(1)
        gamma = self.config.train.snr_gamma
        if not gamma or self.scheduler.config.prediction_type == "sample":  # x0 (residual): plain MSE
            return per_clip.mean()
        return (per_clip * min_snr_weight(self.scheduler, timesteps, gamma)).mean()

    def pipeline(self, unet):
        from ..pipelines.interpolation import MagicVideoInterpolationPipeline

        scheduler = DDIMScheduler.from_config(self.scheduler.config)
        return MagicVideoInterpolationPipeline(unet=unet, vae=self.vae, text_encoder=self.text_encoder,
                                               tokenizer=self.tokenizer, scheduler=scheduler,
                                               keyframe_stride=self.stride, residual=self.residual,
                                               fps_range=self.fps_range())  # output rates (window fps)

    @torch.no_grad()
    def sample(self, unet, folder: Path) -> None:
        """Interpolate the keyframes of the first two training clips: keyframes | interpolated | truth."""
        if self._dataset is None or not hasattr(self._dataset, "__getitem__"):
            return
        out = self.config.output
        was_training = unet.training
        unet.eval()
        pipe = self.pipeline(unet)
        pipe.set_progress_bar_config(disable=True)
        for position in range(2):
            item = self._dataset[position]
            if "latents" in item:
                truth = item["latents"][None].to(self.device)
            else:
                from ..vae import encode_video

                truth = encode_video(self.vae, item["pixel_values"][None].to(self.device))
            fps = float(item["fps"]) / self.stride
            frames = pipe(keyframe_latents=truth[:, :, :: self.stride], fps=fps, num_inference_steps=out.sample_steps,
                          guidance_scale=out.sample_guidance_scale, generator=torch.Generator().manual_seed(out.sample_seed),
                          prompt="").frames[0]
            real = pipe.video_processor.postprocess_video(pipe.decode_latents(truth), "np")[0]
            held = np.repeat(real[:: self.stride], self.stride, axis=0)[: len(real)]
            write_video(folder / f"{position:02d}-keyframes-interpolated-truth.mp4",
                        np.concatenate([held, frames, real], axis=2), fps * self.stride)
        unet.train(was_training)
