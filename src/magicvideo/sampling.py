"""Sampling, shared by every stage: one denoising loop, classifier-free guidance, known frames.

In the spirit of k-diffusion / sgm, the loop is a plain function over a *denoiser*
``model(model_input, t) -> prediction`` and a diffusers scheduler; what a stage adds is passed in:
- classifier-free guidance: with ``guidance_scale > 1`` the model input holds the unconditional
  batch first, then the conditional one (the denoiser batches its own conditioning the same way),
  and the two predictions are mixed by `classifier_free_guidance`;
- conditioning channels (e.g. keyframe latents for frame interpolation, the low-resolution frame
  for super-resolution), concatenated to the scaled model input along the channel axis;
- known frames held fixed (`KnownFrames`): before every step they are set to their known latents
  noised to that step's level, and the result holds them exactly, bit for bit;
- a step callback that sees (and may replace) the latents after every step and may stop the loop;
- causal sampling (`denoise_causal`): a schedule of per-frame noise levels (`frame_schedule`): frames in
  chunks, each chunk denoised beside the finished frames before it (shown at t = 0, or lightly
  re-noised), whose temporal keys and values are computed once and cached; staggered ("diagonal")
  sampling is the same schedule with a chunk starting a few steps after the one before.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler
from diffusers.utils.torch_utils import randn_tensor

# Schedulers that can be swapped in by name (CLI `--scheduler`, `pipe.set_scheduler(name)`).
SCHEDULERS = {
    "ddim": DDIMScheduler,
    "ddpm": DDPMScheduler,
    "dpm++": DPMSolverMultistepScheduler,
    "euler": EulerDiscreteScheduler,
}

# model(model_input, t, **kwargs) -> prediction; the causal sampler passes `cache=` (a TemporalCache)
Denoiser = Callable[..., torch.Tensor]
# (step index, timestep, latents) -> (latents, stop): may replace the latents and stop the loop
StepCallback = Callable[[int, torch.Tensor, torch.Tensor], tuple[torch.Tensor, bool]]


def classifier_free_guidance(uncond: torch.Tensor, cond: torch.Tensor, scale: float) -> torch.Tensor:
    """eps_uncond + s * (eps_cond - eps_uncond) (Ho & Salimans 2022)."""
    return uncond + scale * (cond - uncond)


@dataclass
class KnownFrames:
    """Latents held fixed during sampling: `latents` (clean, the sample's shape) where `mask` is True.

    `mask` broadcasts against the sample, e.g. (B, 1, F, 1, 1) to hold whole frames."""

    latents: torch.Tensor
    mask: torch.Tensor

    def noised(self, scheduler, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The known latents at the noise level of timestep `t`, in the sampler's own scale."""
        if hasattr(scheduler, "sigmas") and getattr(scheduler, "init_noise_sigma", 1.0) != 1.0:
            # sigma-parameterised samplers (Euler) keep x = x0 + sigma * noise
            sigma = scheduler.sigmas[scheduler.index_for_timestep(t)].to(self.latents.dtype)
            return self.latents + sigma * noise
        return scheduler.add_noise(self.latents, noise, t.reshape(1))

    def hold(self, latents: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        return torch.where(self.mask.bool(), values.to(latents.dtype), latents)


def guided_prediction(model: Denoiser, latents: torch.Tensor, t: torch.Tensor, guidance_scale: float,
                      conditioning: torch.Tensor | None = None, scale=lambda x: x, **model_kwargs) -> torch.Tensor:
    """The model's prediction for `latents` at `t`: the input scaled by `scale` (the sampler's), the
    conditioning channels concatenated after it, and with `guidance_scale > 1` the unconditional and
    conditional batches in one call, mixed by `classifier_free_guidance`. A per-frame `t` (B, F) is
    repeated for the two batches. `model_kwargs` go to the model."""
    cfg = guidance_scale > 1.0
    model_input = scale(torch.cat([latents] * 2) if cfg else latents)
    if conditioning is not None:
        cond = torch.cat([conditioning] * 2) if cfg else conditioning
        model_input = torch.cat([model_input, cond.to(model_input.dtype)], dim=1)
    if t.dim() == 2 and cfg:
        t = torch.cat([t] * 2)
    prediction = model(model_input, t, **model_kwargs)
    return classifier_free_guidance(*prediction.chunk(2), guidance_scale) if cfg else prediction


def step_kwargs(scheduler, generator) -> dict:
    """`generator` for the schedulers whose `step` draws noise (DDPM, DDIM with eta, SDE samplers)."""
    return {"generator": generator} if "generator" in inspect.signature(scheduler.step).parameters else {}


def denoise(
    model: Denoiser,
    scheduler,
    latents: torch.Tensor,
    *,
    guidance_scale: float = 1.0,
    conditioning: torch.Tensor | None = None,
    known: KnownFrames | None = None,
    generator: torch.Generator | list[torch.Generator] | None = None,
    on_step_end: StepCallback | None = None,
    progress: Callable[[Iterable], Iterable] = lambda steps: steps,
) -> torch.Tensor:
    """Run `scheduler` (with its timesteps already set) from `latents` to a clean sample.

    `model(model_input, t)` predicts what the scheduler expects (noise, v or x0); with
    `guidance_scale > 1` it is called on the unconditional and conditional batches at once."""
    extra = step_kwargs(scheduler, generator)
    known_noise = None
    if known is not None:
        known_noise = randn_tensor(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
    for i, t in enumerate(progress(scheduler.timesteps)):
        if known is not None:
            latents = known.hold(latents, known.noised(scheduler, known_noise, t))
        prediction = guided_prediction(model, latents, t, guidance_scale, conditioning,
                                       scale=lambda x: scheduler.scale_model_input(x, t))
        latents = scheduler.step(prediction, t, latents, **extra).prev_sample
        if on_step_end is not None:
            latents, stop = on_step_end(i, t, latents)
            if stop:
                break
    if known is not None:
        latents = known.hold(latents, known.latents)
    return latents


def frame_schedule(num_steps: int, num_frames: int, chunk_size: int, lag: int | None = None) -> list[torch.Tensor]:
    """The grid index (0 = pure noise ... `num_steps` = clean) of every frame before each model call of
    causal sampling, and one more entry: every frame clean. Frames come in chunks of `chunk_size`;
    chunk j runs `lag * j` steps behind chunk 0 (default `lag` = `num_steps`: each chunk starts when the
    one before is finished). `chunk_size` >= `num_frames` is the synchronous sampler (every frame at
    one level); chunk 1 with a small lag is staggered ("diagonal") sampling."""
    if chunk_size < 1 or (lag is not None and lag < 0):
        raise ValueError(f"chunk_size must be >= 1 and lag >= 0, got {chunk_size}, {lag}")
    lag = num_steps if lag is None else lag
    offsets = torch.div(torch.arange(num_frames), chunk_size, rounding_mode="floor") * lag
    last = int(offsets[-1]) if num_frames else 0
    return [(k - offsets).clamp(0, num_steps) for k in range(num_steps + last + 1)]


def denoise_causal(
    model: Denoiser,
    scheduler,
    latents: torch.Tensor,
    *,
    chunk_size: int,
    lag: int | None = None,
    context: torch.Tensor | None = None,
    context_timestep: int = 0,
    guidance_scale: float = 1.0,
    conditioning: torch.Tensor | Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    cache=None,
    generator: torch.Generator | list[torch.Generator] | None = None,
    on_step_end: StepCallback | None = None,
    progress: Callable[[Iterable], Iterable] = lambda steps: steps,
) -> torch.Tensor:
    """Causal sampling of (B, C, F, h, w) latents on the timestep grid of `scheduler` (its timesteps
    already set), following `frame_schedule(steps, F - k, chunk_size, lag)`: every model call gives each
    frame its own timestep (B, F) and moves each frame under way one step along the grid with the
    deterministic DDIM update (`DDIMScheduler.step`, any prediction type).

    `context` (B, C, k, h, w): clean latents of the first k frames, given (image-to-video, a clip to
    continue); they and every finished frame are shown to the model at `context_timestep` (0: clean;
    t > 0: re-noised once with fixed noise, as "lightly noised context" is trained). With a `cache` (an empty
    `models.temporal_attention.TemporalCache`, for a model whose frame f depends on frames <= f only:
    directed temporal attention; passed to the model as `cache=`) each call computes only the frames
    under way: the finished frames before them enter through the cache of their temporal keys and
    values (computed once, in the first call after they finish), and frames not yet started are left
    out. So the result for frames <= f does not depend on the noise of later frames. Without a cache
    (a bidirectional model) every call computes the whole clip. `conditioning`: channels concatenated to
    the model input, a tensor (B, Cc, F, h, w), or a function of (latents, finished (F,) bool) giving one
    (conditioning on finished frames: the first-frame anchor, `models/anchor.py`)."""
    ddim = DDIMScheduler.from_config(scheduler.config)
    ddim.set_timesteps(len(scheduler.timesteps), device=latents.device)
    grid, n = ddim.timesteps, len(ddim.timesteps)
    batch, frames = latents.shape[0], latents.shape[2]
    known = 0 if context is None else context.shape[2]
    latents = latents.clone()
    if known:
        latents[:, :, :known] = context.to(latents.dtype)
    schedule = [torch.cat([torch.full((known,), n), levels]).to(latents.device)
                for levels in frame_schedule(n, frames - known, chunk_size, lag)]
    context_noise = None
    if context_timestep:
        context_noise = randn_tensor(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
    t_context = torch.tensor(context_timestep, device=latents.device, dtype=grid.dtype)
    for i in progress(range(len(schedule) - 1)):
        level, after = schedule[i], schedule[i + 1]
        moving = after > level
        finished = level == n
        t = torch.where(finished, t_context, grid[level.clamp(max=n - 1)])
        shown = latents
        if context_noise is not None:  # finished frames re-noised to the context level
            noised = ddim.add_noise(latents, context_noise, t_context.reshape(1))
            shown = torch.where(finished[None, None, :, None, None], noised, latents)
        start, upto = 0, frames
        if cache is not None:  # finished frames before `start` are cached; frames after `upto` wait at pure noise
            start, upto = len(cache), int((after > 0).sum())
            cache.store = int(finished[start:].long().cumprod(0).sum())  # finished frames not yet cached
        extra = conditioning(latents, finished) if callable(conditioning) else conditioning
        prediction = guided_prediction(model, shown[:, :, start:upto], t[start:upto].expand(batch, -1), guidance_scale,
                                       None if extra is None else extra[:, :, start:upto],
                                       **({} if cache is None else {"cache": cache}))
        latents = latents.clone()
        for j in level[moving].unique().tolist():
            group = ((level == j) & moving).nonzero().flatten()
            latents[:, :, group] = ddim.step(prediction[:, :, group - start], grid[j], latents[:, :, group]).prev_sample
        if on_step_end is not None:
            latents, stop = on_step_end(i, t, latents)
            if stop:
                break
    return latents
