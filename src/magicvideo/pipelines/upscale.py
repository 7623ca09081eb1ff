"""Cascade stage 3: per-frame x4 super-resolution of a clip.

`MagicVideoUpscalePipeline` runs the pixel-space diffusion SR model
(:class:`magicvideo.models.super_resolution.SuperResolutionUNet`) on every frame of a clip with a
deterministic sampler (DDIM, trailing timesteps) and, by default, **shared noise**: every frame
starts from the same initial noise and gets the same noise augmentation, so identical input frames
give identical output frames and a static background does not flicker.

`SDUpscaleStage` is the alternative for users with Stable Diffusion x4 upscaler weights
(`stabilityai/stable-diffusion-x4-upscaler`, a `StableDiffusionUpscalePipeline` folder): the same
per-frame treatment with shared noise (one identically seeded generator per frame, so every frame
draws the same initial latents and the same augmentation noise).

Input: one clip, as `frames.as_clips` reads it ((F, H, W, 3) uint8 or floats in [0, 1], numpy or
torch; a (F, H, W) grayscale clip is taken as 3 equal channels). Output: its F frames at 4H x 4W
exactly, as `frames.to_output` gives them ("np": (F, 4H, 4W, 3)). The SR model is fully
convolutional: any H and W that are multiples of ``size_multiple / scale`` (4 for the bundled model)
work, other sizes are refused with an `InvalidArgumentError` (never resized silently); the bundled
digits model was trained for 64x64 Moving MNIST frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import DDIMScheduler, DiffusionPipeline
from diffusers.utils import BaseOutput

from ..errors import InvalidArgumentError
from ..loading import BUNDLED_SR_MODEL, follow_umask, load_folder, pipeline_folder
from ..models.super_resolution import SuperResolutionUNet, augment, upsample
from ..sampling import denoise
from .frames import as_clips, check_output_type, to_output

# Defaults of our SR model, chosen by measurement (docs/super-resolution.md): one x0 step from clean
# (unaugmented) input frames is both the most accurate and the fastest setting of the bundled model.
DEFAULT_STEPS = 1
DEFAULT_NOISE_LEVEL = 0


@dataclass
class UpscalePipelineOutput(BaseOutput):
    """frames: (F, sH, sW, 3) float in [0, 1] ("np"), (F, 3, sH, sW) ("pt"), uint8 ("uint8") or PIL images ("pil")."""

    frames: object


def _clip_frames(video) -> torch.Tensor:
    """One clip (`frames.as_clips`) -> float tensor (F, 3, H, W) in [0, 1]."""
    clips = as_clips(video)
    if len(clips) != 1:
        raise InvalidArgumentError("video", f"expected one clip (F, H, W, 3), got {len(clips)} clips")
    return clips[0].permute(0, 3, 1, 2).contiguous()


class MagicVideoUpscalePipeline(DiffusionPipeline):
    """x``unet.config.scale`` super-resolution of every frame of a clip (see module docstring).

    Load the bundled digits model with :func:`load_upscale_pipeline`.
    """

    model_cpu_offload_seq = "unet"

    def __init__(self, unet: SuperResolutionUNet, scheduler: DDIMScheduler):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)

    @property
    def scale(self) -> int:
        return int(self.unet.config.scale)

    def save_pretrained(self, save_directory, **kwargs):
        super().save_pretrained(save_directory, **kwargs)
        follow_umask(save_directory)

    def check_inputs(self, frames: torch.Tensor, scale, num_inference_steps, noise_level, output_type, batch_size):
        if scale is not None and scale != self.scale:
            raise InvalidArgumentError("scale", f"this model upscales x{self.scale}, not x{scale}")
        if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise InvalidArgumentError("num_inference_steps", f"must be a positive integer, got {num_inference_steps!r}")
        if num_inference_steps > self.scheduler.config.num_train_timesteps:
            raise InvalidArgumentError("num_inference_steps", f"at most {self.scheduler.config.num_train_timesteps}")
        levels = len(self.scheduler.alphas_cumprod)
        if not isinstance(noise_level, int) or not 0 <= noise_level < levels:
            raise InvalidArgumentError("noise_level", f"must be an integer in [0, {levels - 1}], got {noise_level!r}")
        check_output_type(output_type, latent=False)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidArgumentError("batch_size", f"must be a positive integer, got {batch_size!r}")
        multiple = self.unet.size_multiple
        h, w = frames.shape[-2:]
        if (h * self.scale) % multiple or (w * self.scale) % multiple:
            step = multiple // np.gcd(multiple, self.scale)
            raise InvalidArgumentError(
                "video", f"frames of {w}x{h} cannot be upscaled by this model: width and height must be multiples of "
                f"{step} (it was trained on {self.unet.config.sample_size // self.scale}x"
                f"{self.unet.config.sample_size // self.scale} frames); resize or pad the clip first")
        if frames.shape[1] != self.unet.config.channels:
            raise InvalidArgumentError("video", f"the model takes {self.unet.config.channels} channels, got {frames.shape[1]}")

    @torch.no_grad()
    def __call__(
        self,
        video,
        num_inference_steps: int = DEFAULT_STEPS,
        noise_level: int = DEFAULT_NOISE_LEVEL,
        generator: torch.Generator | None = None,
        shared_noise: bool = True,
        output_type: str = "np",
        scale: int | None = None,
        batch_size: int = 4,
        return_dict: bool = True,
    ):
        """Upscale ``video`` (module docstring) x``self.scale``.

        num_inference_steps: DDIM steps (1 by default); noise_level: augmentation of the
        low-resolution input, 0..999 (0 by default: the bundled model is most accurate on clean frames);
        generator: seeds the noise (None: a fresh seed); shared_noise: the same initial noise and
        augmentation noise for every frame (True, for temporal consistency) or independent noise per
        frame; scale: if given, must equal the model's scale; batch_size: frames a U-Net call.
        """
        frames = _clip_frames(video)
        self.check_inputs(frames, scale, num_inference_steps, noise_level, output_type, batch_size)
        device, dtype = self._execution_device, self.unet.dtype
        inverse = None
        if shared_noise:
            # the output is then a function of the frame alone: compute each distinct frame once, so
            # identical input frames give bit-identical output frames whatever the batching
            keys = [frame.numpy().tobytes() for frame in frames]
            first = {}
            inverse = torch.tensor([first.setdefault(key, len(first)) for key in keys])
            if len(first) < len(keys):
                frames = frames[[keys.index(key) for key in first]]
        count, _, h, w = frames.shape
        s = self.scale
        shape = (self.unet.config.channels, h * s, w * s)
        generator = generator if generator is not None else torch.Generator().manual_seed(int(torch.randint(0, 2**31, ()).item()))
        # noise on the CPU from the generator, so results do not depend on the device
        if shared_noise:
            init = torch.randn(shape, generator=generator).expand(count, *shape)
            aug = torch.randn(shape, generator=generator).expand(count, *shape)
        else:
            init = torch.randn((count, *shape), generator=generator)
            aug = torch.randn((count, *shape), generator=generator)
        residual_scale = float(self.unet.config.residual_scale)
        chunks = list(range(0, count, batch_size))
        outputs = []
        with self.progress_bar(total=len(chunks) * num_inference_steps) as bar:
            for start in chunks:
                low = frames[start : start + batch_size].to(device=device, dtype=dtype) * 2 - 1
                up = upsample(low, s)
                levels = torch.full((low.shape[0],), noise_level, device=device, dtype=torch.long)
                condition = augment(up, levels, self.scheduler.alphas_cumprod, aug[start : start + batch_size].to(device, dtype))
                sample = init[start : start + batch_size].to(device, dtype) * self.scheduler.init_noise_sigma
                self.scheduler.set_timesteps(num_inference_steps, device=device)  # also resets multistep state

                def ticking(timesteps):
                    for t in timesteps:
                        yield t
                        bar.update()

                sample = denoise(lambda x, t: self.unet(x, t, condition, levels), self.scheduler, sample,
                                 progress=ticking)
                outputs.append(((up + sample / residual_scale).clamp(-1, 1) * 0.5 + 0.5).float().cpu())
        upscaled = torch.cat(outputs)
        if inverse is not None:
            upscaled = upscaled[inverse]
        result = to_output(upscaled, output_type)
        self.maybe_free_model_hooks()
        return UpscalePipelineOutput(frames=result) if return_dict else (result,)


def load_upscale_pipeline(model: str | Path | None = None, device: str | None = None, dtype: str = "fp32",
                          progress_bar: bool = True) -> MagicVideoUpscalePipeline:
    """The SR pipeline saved in `model` (default: the bundled digits model) on `device` in `dtype`
    (float32 by default on any device: the bundled U-Net is stored in float16; see
    `loading.load_folder`). A folder of another kind raises `InvalidArgumentError("model", ...)`;
    StableDiffusionUpscalePipeline folders go to `SDUpscaleStage`."""
    return load_folder(MagicVideoUpscalePipeline, model, BUNDLED_SR_MODEL, device, dtype, progress_bar)


class SDUpscaleStage:
    """Per-frame x4 upscaling with diffusers' `StableDiffusionUpscalePipeline` (latent space), with
    shared noise: every frame gets its own generator seeded with the same seed, so all frames start
    from the same latents and get the same augmentation noise (``shared_noise=False``: seed + i).

    ``pipe``: a `StableDiffusionUpscalePipeline` or the path of its folder.
    """

    def __init__(self, pipe):
        from diffusers import StableDiffusionUpscalePipeline

        if isinstance(pipe, (str, Path)):
            pipe = StableDiffusionUpscalePipeline.from_pretrained(pipeline_folder(pipe, StableDiffusionUpscalePipeline.__name__))
        if not isinstance(pipe, StableDiffusionUpscalePipeline):
            raise InvalidArgumentError("model", f"expected a StableDiffusionUpscalePipeline, got {type(pipe).__name__}")
        self.pipe = pipe
        self.scale = 2 ** (len(pipe.vae.config.block_out_channels) - 1)

    def __call__(self, video, prompt: str = "", num_inference_steps: int = 20, noise_level: int = 20,
                 guidance_scale: float = 0.0, seed: int = 0, shared_noise: bool = True, batch_size: int = 4,
                 output_type: str = "np", scale: int | None = None):
        """(F, H, W, 3) frames -> (F, 4H, 4W, 3); guidance_scale <= 1 disables classifier-free guidance."""
        if scale is not None and scale != self.scale:
            raise InvalidArgumentError("scale", f"this model upscales x{self.scale}, not x{scale}")
        check_output_type(output_type, latent=False)
        frames = _clip_frames(video)
        max_level = self.pipe.config.max_noise_level
        if not isinstance(noise_level, int) or not 0 <= noise_level <= max_level:
            raise InvalidArgumentError("noise_level", f"must be an integer in [0, {max_level}], got {noise_level!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidArgumentError("batch_size", f"must be a positive integer, got {batch_size!r}")
        # the pipeline's image processor silently rounds sizes down to a multiple of its VAE factor: refuse instead
        multiple = self.pipe.vae_scale_factor
        h, w = frames.shape[-2:]
        if h % multiple or w % multiple:
            raise InvalidArgumentError("video", f"frames of {w}x{h} cannot be upscaled by this model: width and height "
                                       f"must be multiples of {multiple}; resize or pad the clip first")
        outputs = []
        for start in range(0, frames.shape[0], batch_size):
            chunk = frames[start : start + batch_size]  # [0, 1], as the image processor expects
            generators = [torch.Generator().manual_seed(seed if shared_noise else seed + start + i) for i in range(len(chunk))]
            images = self.pipe(prompt=[prompt] * len(chunk), image=chunk, num_inference_steps=num_inference_steps,
                               noise_level=noise_level, guidance_scale=guidance_scale, generator=generators,
                               output_type="pt").images
            outputs.append(images.float().cpu())
        return UpscalePipelineOutput(frames=to_output(torch.cat(outputs), output_type))
