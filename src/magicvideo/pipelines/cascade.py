"""MagicVideoCascadePipeline: the whole MagicVideo cascade as one pipeline.

text -> keyframes (3D U-Net, `keyframes.py`) -> frame interpolation (`interpolation.py`) ->
decode (the VideoVAE's temporal decoder, or the image decoder frame by frame) ->
super-resolution (`upscale.py`, or Stable Diffusion's x4 upscaler). Every stage but the keyframes
is optional and swappable. One seed gives the same video every time: stage i draws its noise from
a generator seeded with `seed + i`. Clips longer than the keyframe model's window run through
every stage window by window, optionally into a frame sink (docs/long-video.md); `extend`
continues a given clip.

A cascade folder holds a `model_index.json` naming the folder of each stage (relative to it) and
the stage pipelines' own folders:

    {"_class_name": "MagicVideoCascadePipeline", "keyframes": "keyframes",
     "interpolation": "interpolation", "upscale": "upscale"}
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import InvalidArgumentError
from ..loading import follow_umask, read_index
from ..vae import decode_latents_video, encode_video, is_video_vae
from .frames import as_clips, decoded_to_output
from .keyframes import load_pipeline

# Steps of the interpolation stage unless given: the bundled residual model was measured at 10 (docs/interpolation.md).
DEFAULT_INTERPOLATION_STEPS = 10
KIND = "MagicVideoCascadePipeline"
STAGES = ("keyframes", "interpolation", "upscale")
DECODERS = ("video", "image")

# (stage, step, total steps of the stage) after every step of every stage
ProgressCallback = Callable[[str, int, int], None]


@dataclass
class CascadeOutput:
    """`frames`: (F, H, W, 3) floats in [0, 1] (None when they went to a `frame_sink`); `fps`: their frame
    rate; `stages`: what ran, in order; `settings`: every setting of the run (for reproducing it)."""

    frames: np.ndarray | None
    fps: float
    stages: list[str]
    settings: dict = field(default_factory=dict)


def _fork(pipe):
    """A view of `pipe` that shares its models but owns its scheduler state, progress-bar settings
    and interrupt flag, so that several requests can run on one loaded cascade at once."""
    if pipe is None:
        return None
    view = copy.copy(pipe)
    if hasattr(pipe, "scheduler"):
        view.scheduler = copy.deepcopy(pipe.scheduler)
    if hasattr(pipe, "_progress_bar_config"):
        view._progress_bar_config = dict(pipe._progress_bar_config)
    if hasattr(pipe, "pipe"):  # SDUpscaleStage wraps a diffusers pipeline
        view.pipe = _fork(pipe.pipe)
    return view


class MagicVideoCascadePipeline:
    """keyframes -> interpolation -> decode -> super-resolution (see the module docstring).

    `keyframes`: a `MagicVideoPipeline` (its VAE decodes every stage's latents; a
    `VideoAutoencoderKL` decodes with its temporal layers unless `decoder="image"`);
    `interpolation`: a `MagicVideoInterpolationPipeline` or None; `upscaler`: a
    `MagicVideoUpscalePipeline`, an `SDUpscaleStage` or None."""

    def __init__(self, keyframes, interpolation=None, upscaler=None):
        self.keyframes, self.interpolation, self.upscaler = keyframes, interpolation, upscaler

    # -- loading and saving ----------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | None = None, dtype: str | None = None,
                        progress_bar: bool = True, stages: Iterable[str] = STAGES) -> "MagicVideoCascadePipeline":
        """A cascade folder, or a keyframe pipeline folder (a cascade of its keyframe stage only).

        `stages`: the stages to load, "keyframes" among them; the others are left out (None), so
        that e.g. a keyframes-only run neither imports nor loads the interpolation and
        super-resolution models."""
        wanted = set(stages)
        if "keyframes" not in wanted or not wanted <= set(STAGES):
            raise InvalidArgumentError("stages", f"must name 'keyframes' and only stages of {STAGES}, "
                                       f"got {sorted(wanted)}")
        root = Path(path)
        index = read_index(root)
        if index.get("_class_name") != KIND:
            return cls(load_pipeline(root, device, dtype, progress_bar))
        folders = {}
        for stage in STAGES:
            sub = index.get(stage)
            if stage == "keyframes" and not sub:
                raise InvalidArgumentError("model", f"{root / 'model_index.json'} names no keyframes stage")
            folders[stage] = root / sub if sub and stage in wanted else None
        keyframes = load_pipeline(folders["keyframes"], device, dtype, progress_bar)
        interpolation = upscaler = None
        if folders["interpolation"] is not None:
            from .interpolation import load_interpolation_pipeline

            interpolation = load_interpolation_pipeline(folders["interpolation"], device, dtype, progress_bar)
        if folders["upscale"] is not None:
            from .upscale import load_upscale_pipeline

            upscaler = load_upscale_pipeline(folders["upscale"], str(keyframes.device), progress_bar=progress_bar)
        return cls(keyframes, interpolation, upscaler)

    def save_pretrained(self, path: str | Path) -> Path:
        """Every present stage in a subfolder of `path`, and the `model_index.json` naming them."""
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        index = {"_class_name": KIND}
        for stage, pipe in zip(STAGES, (self.keyframes, self.interpolation, self.upscaler)):
            if pipe is not None and not hasattr(pipe, "save_pretrained"):
                raise InvalidArgumentError(stage, f"a {type(pipe).__name__} stage cannot be saved in a cascade folder")
            if pipe is not None:
                pipe.save_pretrained(root / stage)
            index[stage] = stage if pipe is not None else None
        (root / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
        return follow_umask(root)

    def to(self, device) -> "MagicVideoCascadePipeline":
        for pipe in (self.keyframes, self.interpolation, self.upscaler):
            if pipe is not None and hasattr(pipe, "to"):
                pipe.to(device)
        return self

    def fork(self) -> "MagicVideoCascadePipeline":
        """A cascade sharing this one's models with its own sampler state: one per request."""
        return MagicVideoCascadePipeline(_fork(self.keyframes), _fork(self.interpolation), _fork(self.upscaler))

    def set_progress_bar_config(self, **kwargs) -> None:
        for pipe in (self.keyframes, self.interpolation, self.upscaler):
            if pipe is not None and hasattr(pipe, "set_progress_bar_config"):
                pipe.set_progress_bar_config(**kwargs)

    # -- facts about the stages ------------------------------------------------------------------
    @property
    def has_video_decoder(self) -> bool:
        return is_video_vae(self.keyframes.vae)

    @property
    def interpolation_factor(self) -> int | None:
        return None if self.interpolation is None else self.interpolation.keyframe_stride

    @property
    def upscale_factor(self) -> int | None:
        return None if self.upscaler is None else self.upscaler.scale

    def fps_warning(self, fps: float | None, interpolate: bool = True) -> str | None:
        """A warning when the keyframes' `fps`, or (with `interpolate`) the interpolation's output rate
        fps x factor, lies outside the rates the stage was trained at; else None."""
        warning = self.keyframes.fps_warning(fps)
        if warning is None and interpolate and self.interpolation is not None and fps is not None:
            warning = self.interpolation.fps_warning(fps * self.interpolation_factor)
            if warning:
                warning = f"interpolation x{self.interpolation_factor}: {warning}"
        return warning

    def check_stages(self, interpolate: bool, decoder: str, upscale: bool) -> None:
        """Refuse stage settings this cascade cannot apply, naming the argument."""
        if interpolate and self.interpolation is None:
            raise InvalidArgumentError("interpolate", "this model has no interpolation stage")
        if decoder not in DECODERS:
            raise InvalidArgumentError("decoder", f"must be one of {DECODERS}, got {decoder!r}")
        if upscale and self.upscaler is None:
            raise InvalidArgumentError("upscale", "this model has no super-resolution stage")

    # -- the cascade ------------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(
        self,
        prompt: str,
        negative_prompt: str | None = None,
        num_frames: int | None = None,
        fps: float = 8,
        num_inference_steps: int = 25,
        guidance_scale: float = 7.5,
        seed: int = 0,
        interpolate: bool | None = None,
        interpolation_steps: int | None = None,
        decoder: str = "video",
        upscale: bool = False,
        upscale_steps: int | None = None,
        noise_level: int | None = None,
        height: int | None = None,
        width: int | None = None,
        scheduler: str | None = None,
        callback: ProgressCallback | None = None,
        chunk_size: int | None = None,
        frame_lag: int | None = None,
        image=None,
        context_frames: int | None = None,
        frame_sink: Callable[[np.ndarray], None] | None = None,
    ) -> CascadeOutput:
        """Generate one clip through every enabled stage.

        `num_frames` keyframes (default: the model's window, 16); more are made by causal extension
        (`MagicVideoPipeline`: each window continues from the last `context_frames` keyframes), and
        every later stage runs window by window on the new keyframes: interpolation between
        neighbouring keyframes (the previous window's last keyframe and the new ones), decoding with
        the VideoVAE's temporal state carried over, super-resolution per frame. So the first frames of
        a long clip are the clip of one window, bit for bit, and memory does not grow with the length
        when the frames go to `frame_sink(frames (n, H, W, 3) in [0, 1])` as they are made (e.g.
        `video_io.VideoWriter.write`; the output's `frames` is then None). `image`: the first keyframe
        (image-to-video; resized and centre-cropped to the frame size, see `keyframes.fit_image`).

        `interpolate` (default: when the cascade has the stage) multiplies the frame rate by the
        interpolation model's factor, in `interpolation_steps` steps (default 10, as measured in
        docs/interpolation.md); `decoder` "video" (the VideoVAE's temporal decoder, when the
        VAE is one) or "image"; `upscale` runs super-resolution (`upscale_steps`, `noise_level`:
        its own defaults when None). `chunk_size`, `frame_lag`: causal sampling of the keyframes
        (`MagicVideoPipeline.__call__`; None: the keyframe pipeline's own). `seed` seeds every stage (stage i uses seed + i)."""
        interpolate = self.interpolation is not None if interpolate is None else interpolate
        self.check_stages(interpolate, decoder, upscale)
        if not isinstance(seed, int) or not 0 <= seed < 2**63 - 2:
            raise InvalidArgumentError("seed", f"must be an integer between 0 and 2**63 - 3, got {seed!r}")
        run = self.fork()
        if scheduler:
            run.keyframes.set_scheduler(scheduler)
        generator = lambda i: torch.Generator().manual_seed(seed + i)  # noqa: E731
        keyframes = run.keyframes.unet.config.num_frames if num_frames is None else num_frames
        given = 0 if image is None else 1
        windows = 1
        if isinstance(keyframes, int) and keyframes > 0:  # (other values are refused by the keyframe stage)
            windows = len(run.keyframes.window_plan(keyframes, context_frames, given))
        counts: dict[str, int] = {}

        def progress(stage: str, total: int):
            if callback is None:
                return None

            def report(pipe, i, t, tensors):
                counts[stage] = counts.get(stage, 0) + 1
                callback(stage, counts[stage], total)
                return {}

            return report

        keyframe_steps = run.keyframes.num_sampling_calls(keyframes, num_inference_steps, chunk_size, frame_lag,
                                                          context_frames, given)
        steps = interpolation_steps or DEFAULT_INTERPOLATION_STEPS
        upscale_kwargs = {key: value for key, value in (("num_inference_steps", upscale_steps),
                                                        ("noise_level", noise_level)) if value is not None}

        def pieces():
            caches, previous = {}, None
            interpolation_generator = generator(1)
            for window, latents in enumerate(run.keyframes.latent_windows(
                    prompt, negative_prompt=negative_prompt, num_frames=num_frames, fps=fps, height=height, width=width,
                    num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, generator=generator(0),
                    chunk_size=chunk_size, frame_lag=frame_lag, image=image, context_frames=context_frames,
                    callback_on_step_end=progress("keyframes", keyframe_steps))):
                if interpolate:  # between neighbouring keyframes: the previous window's last one and the new ones
                    keys = latents if previous is None else torch.cat([previous, latents], dim=2)
                    previous = latents[:, :, -1:]
                    latents = run.interpolation(keyframe_latents=keys, prompt=prompt, fps=fps, num_inference_steps=steps,
                                                generator=interpolation_generator, output_type="latent",
                                                callback_on_step_end=progress("interpolation", steps * windows)).frames
                    latents = latents[:, :, 1:] if window else latents  # the boundary keyframe is out already
                frames = self.decode(latents, decoder, caches)
                if upscale:
                    # a fresh generator each window: the upscaler's shared noise makes every frame's output a
                    # function of that frame alone, whichever window it comes in
                    frames = run.upscaler(frames, generator=generator(2), **upscale_kwargs).frames
                    if callback is not None:
                        callback("upscale", window + 1, windows)
                yield np.asarray(frames, dtype=np.float32)

        parts = []
        for frames in pieces():
            if frame_sink is None:
                parts.append(frames)
            else:
                frame_sink(frames)
        stages = ["keyframes"] + ["interpolation"] * interpolate + [
            f"decode ({'VideoVAE' if decoder == 'video' and self.has_video_decoder else 'image decoder'})"]
        stages += ["upscale"] * upscale
        settings = dict(prompt=prompt, negative_prompt=negative_prompt, num_frames=num_frames, fps=fps,
                        num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, seed=seed,
                        interpolate=interpolate, interpolation_steps=interpolation_steps, decoder=decoder,
                        upscale=upscale, upscale_steps=upscale_steps, noise_level=noise_level, scheduler=scheduler,
                        chunk_size=chunk_size, frame_lag=frame_lag, image=image is not None,
                        context_frames=context_frames)
        return CascadeOutput(np.concatenate(parts) if frame_sink is None else None, self.output_fps(fps, interpolate),
                             stages, settings)

    def output_fps(self, fps: float, interpolate: bool | None = None) -> float:
        """The frame rate of the clips made from keyframes at `fps` (times the interpolation factor when
        interpolating; `interpolate` None: when the cascade has the stage)."""
        interpolate = self.interpolation is not None if interpolate is None else interpolate
        return float(fps) * (self.interpolation_factor if interpolate else 1)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, decoder: str = "video", caches: dict | None = None) -> np.ndarray:
        """Scaled latents (1, C, F, h, w) -> frames (F, H, W, 3) in [0, 1]. `caches`: the VideoVAE's
        temporal state, carried from call to call (a dict, empty at first) to decode a clip piece by piece."""
        video = decode_latents_video(self.keyframes.vae, latents, 16, decoder=decoder, caches=caches)
        return decoded_to_output(video, "np")[0]

    @torch.no_grad()
    def extend(
        self,
        video,
        num_frames: int,
        prompt: str = "",
        negative_prompt: str | None = None,
        fps: float = 8,
        num_inference_steps: int = 25,
        guidance_scale: float = 7.5,
        seed: int = 0,
        decoder: str = "video",
        scheduler: str | None = None,
        context_frames: int | None = None,
        callback: ProgressCallback | None = None,
        frame_sink: Callable[[np.ndarray], None] | None = None,
    ) -> CascadeOutput:
        """Continue a clip by `num_frames` keyframes (the keyframe stage only: the clip's frames are
        taken as keyframes at `fps`, and the new ones come at that rate).

        `video`: one clip (`frames.as_clips`: (F, H, W, 3), uint8 or floats in [0, 1]); the new frames
        have its size. Its last `context_frames` frames (default: the keyframe pipeline's, half its
        window) are encoded by the VAE and given as the context of the first window
        (`MagicVideoPipeline`'s `context_latents`), so the clip goes on from them; the prompt is
        optional (the empty prompt by default). The new latents are decoded after the context's
        (`decoder` "video": the VideoVAE's temporal state is carried on from the clip's last frames).
        Returns the new frames only (or sends them to `frame_sink` as they are made), at `fps`."""
        self.check_stages(False, decoder, False)
        if not isinstance(seed, int) or not 0 <= seed < 2**63:
            raise InvalidArgumentError("seed", f"must be an integer between 0 and 2**63 - 1, got {seed!r}")
        if not isinstance(num_frames, int) or isinstance(num_frames, bool) or num_frames < 1:
            raise InvalidArgumentError("num_frames", f"must be an integer >= 1 (the frames to add), got {num_frames!r}")
        clips = as_clips(video)
        if len(clips) != 1:
            raise InvalidArgumentError("video", f"expected one clip (F, H, W, 3), got {len(clips)} clips")
        run = self.fork()
        if scheduler:
            run.keyframes.set_scheduler(scheduler)
        window = run.keyframes.unet.config.num_frames
        k = run.keyframes.context_frames_of(context_frames)
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k < window:
            raise InvalidArgumentError("context_frames", f"must be an integer between 1 and {window - 1}, got {k!r}")
        length, height, width = clips.shape[1:4]
        if length < k:
            raise InvalidArgumentError("video", f"the clip has {length} frame{'s' * (length != 1)}, fewer than the {k} "
                                       "it continues from (context_frames): give a longer clip or fewer context frames")
        factor = run.keyframes.spatial_factor
        if height % factor or width % factor:
            raise InvalidArgumentError("video", f"frames of {width}x{height}: this model makes frames whose sides are "
                                       f"multiples of {factor}")
        pixels = clips[:, -k:].permute(0, 4, 1, 2, 3) * 2 - 1  # (1, 3, k, H, W) in [-1, 1]
        context = encode_video(run.keyframes.vae, pixels.to(run.keyframes._execution_device))
        total = run.keyframes.num_sampling_calls(k + num_frames, num_inference_steps, context_frames=k, given=k)
        step = {"done": 0}

        def report(pipe, i, t, tensors):
            step["done"] += 1
            callback("keyframes", step["done"], total)
            return {}

        caches, parts = {}, []
        for window_index, latents in enumerate(run.keyframes.latent_windows(
                prompt, negative_prompt=negative_prompt, num_frames=k + num_frames, height=height, width=width, fps=fps,
                num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                generator=torch.Generator().manual_seed(seed), context_latents=context, context_frames=k,
                callback_on_step_end=None if callback is None else report)):
            frames = np.asarray(self.decode(latents, decoder, caches), dtype=np.float32)
            frames = frames[k:] if window_index == 0 else frames  # the context's decoding only warms the decoder up
            if frame_sink is None:
                parts.append(frames)
            else:
                frame_sink(frames)
        stage = f"decode ({'VideoVAE' if decoder == 'video' and self.has_video_decoder else 'image decoder'})"
        settings = dict(prompt=prompt, negative_prompt=negative_prompt, num_frames=num_frames, fps=fps,
                        num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, seed=seed,
                        decoder=decoder, scheduler=scheduler, context_frames=k, extended_frames=length)
        return CascadeOutput(np.concatenate(parts) if frame_sink is None else None, float(fps),
                             ["keyframes", stage], settings)
