"""MagicVideoInterpolationPipeline, cascade stage 2: keyframes -> k times the frame rate.

Keyframe latents (or a video, encoded by the VAE frame by frame) are laid out on windows of the
interpolation U-Net (`models/interpolation.py`): keyframes at 0, k, 2k, ..., held fixed by the
shared sampling loop (`sampling.KnownFrames`: returned bit-identical), the k - 1 frames between
consecutive keyframes denoised with both neighbours in their conditioning channels. Consecutive
windows share their boundary keyframe; all windows of a call are denoised as one batch.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers.utils.torch_utils import randn_tensor

from ..errors import InvalidArgumentError
from ..loading import BUNDLED_INTERPOLATION_MODEL, load_folder
from ..models.interpolation import (is_interpolation_unet, keyframes_per_window, linear_blend, output_length,
                                    plan_windows, window_layout)
from ..models.unet_3d import MagicVideoUNet3D
from ..sampling import KnownFrames, denoise
from ..vae import encode_video
from .frames import as_clips, check_output_type, decoded_to_output
from .keyframes import MagicVideoPipeline, MagicVideoPipelineOutput, _finite_number


class _TailTimesteps:
    """A scheduler seen from step `start` on: `timesteps` is the tail, everything else (step index
    included: `set_begin_index(start)`) is the scheduler's own, as diffusers' img2img pipelines run it."""

    def __init__(self, scheduler, start: int):
        self._scheduler, self.timesteps = scheduler, scheduler.timesteps[start:]
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(start)

    def __getattr__(self, name):
        return getattr(self._scheduler, name)


class MagicVideoInterpolationPipeline(MagicVideoPipeline):
    """Frame interpolation with MagicVideo's stage-2 model.

    Components: as `MagicVideoPipeline` (`unet` is an interpolation U-Net, see
    `models/interpolation.py`), plus `keyframe_stride`, the factor k the model was trained for
    (saved in `model_index.json`), and `residual`: whether the model denoises the difference from the
    linear blend of the keyframe latents (added back here) instead of the latents themselves."""

    model_cpu_offload_seq = "text_encoder->unet->vae"
    samples_causally = False  # its frames are denoised together, between known keyframes
    _callback_tensor_inputs = ["latents", "prompt_embeds", "negative_prompt_embeds"]

    def __init__(self, unet: MagicVideoUNet3D, vae, text_encoder, tokenizer, scheduler, keyframe_stride: int = 3,
                 fps_range: list[float] | None = None, residual: bool = False):
        if unet is not None and not is_interpolation_unet(unet):
            raise InvalidArgumentError(
                "model", f"the U-Net takes {unet.config.in_channels} input channels: a keyframe model, not an "
                "interpolation model (use MagicVideoPipeline, or convert it with from_keyframe_model and train it)")
        super().__init__(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler,
                         fps_range=fps_range)
        self.register_to_config(keyframe_stride=keyframe_stride, residual=residual)

    @property
    def keyframe_stride(self) -> int:
        return self.config.keyframe_stride

    def check_interpolation_inputs(self, num_keyframes: int, factor, num_inference_steps, guidance_scale, fps,
                                   argument: str, callback_on_step_end_tensor_inputs=None) -> None:
        if num_keyframes < 2:
            raise InvalidArgumentError(argument, f"needs at least 2 frames to interpolate between, got {num_keyframes}")
        if not isinstance(factor, int) or isinstance(factor, bool) or factor < 2:
            raise InvalidArgumentError("factor", f"must be an integer >= 2, got {factor!r}")
        if factor != self.keyframe_stride:
            raise InvalidArgumentError("factor", f"this model was trained to interpolate by {self.keyframe_stride} "
                                       f"(keyframe stride), got {factor}")
        if keyframes_per_window(self.unet.config.num_frames, factor) < 2:
            raise InvalidArgumentError("factor", f"a {self.unet.config.num_frames}-frame model cannot hold two "
                                       f"keyframes {factor} frames apart")
        if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise InvalidArgumentError("num_inference_steps", f"must be an integer >= 1, got {num_inference_steps}")
        _finite_number("guidance_scale", guidance_scale, 0)
        _finite_number("fps", fps, 0, exclusive=True)
        unknown = set(callback_on_step_end_tensor_inputs or ()) - set(self._callback_tensor_inputs)
        if unknown:
            raise InvalidArgumentError("callback_on_step_end_tensor_inputs",
                                       f"{sorted(unknown)} not among {self._callback_tensor_inputs}")

    def encode_keyframes(self, video: torch.Tensor, chunk_size: int = 16) -> torch.Tensor:
        """Video (B, 3, K, H, W) in [-1, 1] -> scaled latents (B, C, K, h, w) (posterior mode)."""
        factor = self.spatial_factor
        height, width = video.shape[-2:]
        if height % factor or width % factor:
            raise InvalidArgumentError("video", f"frame size {width}x{height} must be a multiple of {factor} "
                                       "(VAE x U-Net downsampling)")
        return encode_video(self.vae, video.to(self._execution_device, self.vae.dtype), chunk_size)

    def window_batch(self, keyframe_latents: torch.Tensor, factor: int):
        """The windows of a call as one batch: (known latents, keyframe mask (1, 1, n, 1, 1),
        conditioning, windows); clips first, then windows: index b * W + w."""
        windows = plan_windows(keyframe_latents.shape[2], factor, self.unet.config.num_frames)
        per_window = keyframes_per_window(self.unet.config.num_frames, factor)
        frames = (per_window - 1) * factor + 1
        known, cond = [], []
        for clip in keyframe_latents:
            for window in windows:
                part = clip[None, :, window.first : window.last + 1]
                if window.keyframes < per_window:  # pad with the last keyframe: causal attention keeps the
                    part = torch.cat([part] + [part[:, :, -1:]] * (per_window - window.keyframes), dim=2)
                k, mask, c = window_layout(part, factor, frames)
                known.append(k)
                cond.append(c)
        return torch.cat(known), mask.view(1, 1, -1, 1, 1), torch.cat(cond), windows

    @staticmethod
    def stitch(window_latents: torch.Tensor, windows, factor: int, batch: int) -> torch.Tensor:
        """Window latents (B * W, C, n, h, w) -> the clip (B, C, (K - 1) * k + 1, h, w)."""
        per_clip = window_latents.view(batch, len(windows), *window_latents.shape[1:])
        parts = []
        for i, window in enumerate(windows):
            start = 0 if i == 0 else 1  # the boundary keyframe is the previous window's last frame
            parts.append(per_clip[:, i, :, start : (window.keyframes - 1) * factor + 1])
        return torch.cat(parts, dim=2)

    def denoise_windows(self, keyframe_latents, factor, context, fps_input, num_inference_steps, guidance_scale,
                        generator, callback_on_step_end=None, callback_on_step_end_tensor_inputs=("latents",),
                        prompt_embeds=None, negative_prompt_embeds=None, strength: float = 1.0):
        """Denoise every window of `keyframe_latents` (B, C, K, h, w); returns (window latents
        (B * W, C, n, h, w), windows). `context` / `fps_input` are per window batch entry.

        `strength` < 1 starts from the linear blend of the neighbouring keyframe latents noised to
        that fraction of the schedule (SDEdit / img2img) and runs only the remaining steps."""
        known, mask, conditioning, windows = self.window_batch(keyframe_latents, factor)
        dtype = self.unet.dtype
        known, conditioning = known.to(dtype), conditioning.to(dtype)
        blend = linear_blend(conditioning)
        residual = self.config.get("residual", False)
        self.scheduler.set_timesteps(num_inference_steps, device=known.device)
        scheduler = self.scheduler
        latents = randn_tensor(known.shape, generator=generator, device=known.device, dtype=dtype)
        start = num_inference_steps - max(1, round(num_inference_steps * strength))
        if start > 0:
            scheduler = _TailTimesteps(self.scheduler, start * self.scheduler.order)
            latents = self.scheduler.add_noise(torch.zeros_like(blend) if residual else blend, latents,
                                               scheduler.timesteps[:1])
        else:
            latents = latents * self.scheduler.init_noise_sigma

        def model(x, t):
            return self.unet(x, t, context, fps=fps_input).sample

        on_step_end = self.step_callback(callback_on_step_end, callback_on_step_end_tensor_inputs, prompt_embeds,
                                         negative_prompt_embeds)
        held = KnownFrames(torch.zeros_like(known) if residual else known, mask)
        latents = denoise(model, scheduler, latents, guidance_scale=guidance_scale, conditioning=conditioning,
                          known=held, generator=generator, on_step_end=on_step_end, progress=self.progress_bar)
        if residual:  # back from the difference to the latents; keyframes bit-identical
            latents = torch.where(mask.bool(), known, blend + latents)
        return latents, windows

    @torch.no_grad()
    def __call__(
        self,
        video=None,
        keyframe_latents: torch.Tensor | None = None,
        factor: int | None = None,
        prompt: str | list[str] | None = None,
        negative_prompt: str | list[str] | None = None,
        fps: float = 8,
        num_inference_steps: int = 25,
        guidance_scale: float = 1.0,
        strength: float = 1.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        output_type: str = "np",
        keep_input_frames: bool = True,
        decode_chunk_size: int = 16,
        return_dict: bool = True,
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs: list[str] = ("latents",),
    ) -> MagicVideoPipelineOutput | tuple:
        """Interpolate K keyframes to (K - 1) * factor + 1 frames.

        Give either `keyframe_latents` (B, C, K, h, w), scaled as the keyframe pipeline's
        `output_type="latent"` returns them (the cascade's path: the returned latents hold them
        bit-identical at frames 0, k, 2k, ...), or `video` (a clip or clips, see `frames.as_clips`), encoded here; with
        `keep_input_frames` the input frames are put back at the keyframe positions of the output.
        `fps`: the keyframes' frame rate; the model is conditioned on, and the output runs at,
        fps * factor. `factor` defaults to the model's `keyframe_stride`. `prompt` (optional: the
        empty prompt by default) and `guidance_scale` (> 1 enables classifier-free guidance) as in
        the keyframe pipeline. `strength` in (0, 1]: 1 starts the in-between frames from pure noise;
        less starts them from the latent blend of their keyframes noised to that level (fewer steps run)."""
        if (video is None) == (keyframe_latents is None):
            raise InvalidArgumentError("video", "give either a video or keyframe_latents (exactly one)")
        check_output_type(output_type)
        factor = self.keyframe_stride if factor is None else factor
        pixels = None
        if video is not None:
            pixels = as_clips(video).permute(0, 4, 1, 2, 3) * 2.0 - 1.0  # (B, 3, F, H, W) in [-1, 1]
            argument, num_keyframes = "video", pixels.shape[2]
        else:
            if not isinstance(keyframe_latents, torch.Tensor) or keyframe_latents.ndim != 5:
                raise InvalidArgumentError("keyframe_latents", "expected a (B, C, K, h, w) tensor")
            if keyframe_latents.shape[1] != self.unet.config.out_channels:
                raise InvalidArgumentError("keyframe_latents", f"expected {self.unet.config.out_channels} channels, "
                                           f"got {keyframe_latents.shape[1]}")
            argument, num_keyframes = "keyframe_latents", keyframe_latents.shape[2]
        self.check_interpolation_inputs(num_keyframes, factor, num_inference_steps, guidance_scale, fps, argument,
                                        callback_on_step_end_tensor_inputs)
        _finite_number("strength", strength, 0, exclusive=True)
        if strength > 1:
            raise InvalidArgumentError("strength", f"must be in (0, 1], got {strength}")
        self._interrupt = False
        device = self._execution_device
        if pixels is not None:
            keyframe_latents = self.encode_keyframes(pixels, decode_chunk_size)
        keyframe_latents = keyframe_latents.to(device)
        batch = keyframe_latents.shape[0]

        cfg = guidance_scale > 1.0
        if prompt is None and prompt_embeds is None:
            prompt = ""
        if isinstance(prompt, str):
            prompt = [prompt] * batch
        prompt_embeds, negative_prompt_embeds = self.encode_prompt(prompt, device, 1, cfg, negative_prompt,
                                                                   prompt_embeds, negative_prompt_embeds)
        if len(prompt_embeds) != batch:
            raise InvalidArgumentError("prompt", f"{len(prompt_embeds)} prompts for {batch} clips")
        windows = plan_windows(num_keyframes, factor, self.unet.config.num_frames)
        per_window = lambda e: e.repeat_interleave(len(windows), dim=0)  # noqa: E731
        context = per_window(prompt_embeds)
        if cfg:
            context = torch.cat([per_window(negative_prompt_embeds), context])
        context = context.to(self.unet.dtype)
        fps_input = torch.full((len(context),), float(fps) * factor, device=device)

        window_latents, windows = self.denoise_windows(
            keyframe_latents.to(self.unet.dtype), factor, context, fps_input, num_inference_steps, guidance_scale,
            generator, callback_on_step_end, callback_on_step_end_tensor_inputs, prompt_embeds, negative_prompt_embeds,
            strength)
        latents = self.stitch(window_latents, windows, factor, batch)
        assert latents.shape[2] == output_length(num_keyframes, factor)

        if output_type == "latent":
            frames = latents
        else:
            decoded = self.decode_latents(latents, decode_chunk_size)
            if pixels is not None and keep_input_frames:
                decoded[:, :, ::factor] = pixels.to(decoded)
            frames = decoded_to_output(decoded, output_type)
        self.maybe_free_model_hooks()
        return MagicVideoPipelineOutput(frames=frames) if return_dict else (frames,)


def load_interpolation_pipeline(model: str | Path | None = None, device: str | None = None, dtype: str | None = None,
                                progress_bar: bool = True) -> MagicVideoInterpolationPipeline:
    """The interpolation pipeline saved in `model` (default: the bundled digits interpolation model)
    on `device` in `dtype` (see `loading.load_folder`). A folder of another kind (e.g. a keyframe
    pipeline) raises `InvalidArgumentError("model", ...)`."""
    return load_folder(MagicVideoInterpolationPipeline, model, BUNDLED_INTERPOLATION_MODEL, device, dtype, progress_bar)
