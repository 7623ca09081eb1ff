"""MagicVideoCascadePipeline: the whole MagicVideo cascade as one pipeline.

text -> keyframes (3D U-Net, `keyframes.py`) -> frame interpolation (`interpolation.py`) ->
decode (the VideoVAE's temporal decoder, or the image decoder frame by frame) ->
super-resolution (`upscale.py`, or Stable Diffusion's x4 upscaler). Every stage but the keyframes
is optional and swappable. One seed gives the same video every time: stage i draws its noise from
a generator seeded with `seed + i`.

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
from ..loading import read_index
from ..vae import decode_latents_video, is_video_vae
from .frames import decoded_to_output
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
    """`frames`: (F, H, W, 3) floats in [0, 1]; `fps`: their frame rate; `stages`: what ran, in order;
    `settings`: every setting of the run (for reproducing it)."""

    frames: np.ndarray
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
        return root

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
    ) -> CascadeOutput:
        """Generate one clip through every enabled stage.

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
        stages = ["keyframes"]

        def progress(stage: str, total: int):
            if callback is None:
                return None
            return lambda pipe, i, t, tensors: callback(stage, i + 1, total) or {}

        keyframe_steps = run.keyframes.num_sampling_calls(num_frames or run.keyframes.unet.config.num_frames,
                                                          num_inference_steps, chunk_size, frame_lag)
        latents = run.keyframes(prompt, negative_prompt=negative_prompt, num_frames=num_frames, fps=fps,
                                height=height, width=width, num_inference_steps=num_inference_steps,
                                guidance_scale=guidance_scale, generator=generator(0), output_type="latent",
                                chunk_size=chunk_size, frame_lag=frame_lag,
                                callback_on_step_end=progress("keyframes", keyframe_steps)).frames
        out_fps = float(fps)
        if interpolate:
            steps = interpolation_steps or DEFAULT_INTERPOLATION_STEPS
            latents = run.interpolation(keyframe_latents=latents, prompt=prompt, fps=fps, num_inference_steps=steps,
                                        generator=generator(1), output_type="latent",
                                        callback_on_step_end=progress("interpolation", steps)).frames
            out_fps *= run.interpolation.keyframe_stride
            stages.append("interpolation")
        frames = self.decode(latents, decoder)
        stages.append(f"decode ({'VideoVAE' if decoder == 'video' and self.has_video_decoder else 'image decoder'})")
        if upscale:
            kwargs = {}
            if upscale_steps is not None:
                kwargs["num_inference_steps"] = upscale_steps
            if noise_level is not None:
                kwargs["noise_level"] = noise_level
            if callback is not None:
                callback("upscale", 0, 1)
            frames = run.upscaler(frames, generator=generator(2), **kwargs).frames
            if callback is not None:
                callback("upscale", 1, 1)
            stages.append("upscale")
        settings = dict(prompt=prompt, negative_prompt=negative_prompt, num_frames=num_frames, fps=fps,
                        num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, seed=seed,
                        interpolate=interpolate, interpolation_steps=interpolation_steps, decoder=decoder,
                        upscale=upscale, upscale_steps=upscale_steps, noise_level=noise_level, scheduler=scheduler,
                        chunk_size=chunk_size, frame_lag=frame_lag)
        return CascadeOutput(np.asarray(frames, dtype=np.float32), out_fps, stages, settings)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, decoder: str = "video") -> np.ndarray:
        """Scaled latents (1, C, F, h, w) -> frames (F, H, W, 3) in [0, 1]."""
        video = decode_latents_video(self.keyframes.vae, latents, 16, decoder=decoder)
        return decoded_to_output(video, "np")[0]

