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
- staggered sampling (`frame_lag` > 0, `denoise_staggered`): frame f runs `frame_lag * f` steps behind
  frame 0, so a directed (causal) model denoises every frame while the frames before it are cleaner.
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

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# (step index, timestep, latents) -> (latents, stop): may replace the latents and stop the loop
StepCallback = Callable[[int, torch.Tensor, torch.Tensor], tuple[torch.Tensor, bool]]


def share_noise_across_frames(own: torch.Tensor, shared: torch.Tensor, fraction: float) -> torch.Tensor:
    """Mixed noise (PYoCo, Ge et al. 2023): eps_f = sqrt(a) * eps_shared + sqrt(1 - a) * eps_f, still
    unit variance per element, correlated a between frames. `shared` has size 1 on the frame axis."""
    return fraction**0.5 * shared + (1 - fraction) ** 0.5 * own


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
                      conditioning: torch.Tensor | None = None, scale=lambda x: x) -> torch.Tensor:
    """The model's prediction for `latents` at `t`: the input scaled by `scale` (the sampler's), the
    conditioning channels concatenated after it, and with `guidance_scale > 1` the unconditional and
    conditional batches in one call, mixed by `classifier_free_guidance`. A per-frame `t` (B, F) is
    repeated for the two batches."""
    cfg = guidance_scale > 1.0
    model_input = scale(torch.cat([latents] * 2) if cfg else latents)
    if conditioning is not None:
        cond = torch.cat([conditioning] * 2) if cfg else conditioning
        model_input = torch.cat([model_input, cond.to(model_input.dtype)], dim=1)
    if t.dim() == 2 and cfg:
        t = torch.cat([t] * 2)
    prediction = model(model_input, t)
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


def staggered_levels(num_steps: int, num_frames: int, frame_lag: int) -> list[torch.Tensor]:
    """The grid index (0 = pure noise ... num_steps = clean) of every frame before each step of staggered
    sampling: frame f at step k is at min(max(k - frame_lag * f, 0), num_steps); num_steps +
    frame_lag * (F - 1) steps in all, then one more entry: every frame clean."""
    offsets = torch.arange(num_frames) * frame_lag
    return [(k - offsets).clamp(0, num_steps) for k in range(num_steps + frame_lag * (num_frames - 1) + 1)]


def denoise_staggered(
    model: Denoiser,
    scheduler,
    latents: torch.Tensor,
    *,
    frame_lag: int,
    guidance_scale: float = 1.0,
    conditioning: torch.Tensor | None = None,
    causal: bool = False,
    on_step_end: StepCallback | None = None,
    progress: Callable[[Iterable], Iterable] = lambda steps: steps,
) -> torch.Tensor:
    """Staggered ("diagonal") sampling of (B, C, F, h, w) latents on the timestep grid of `scheduler`
    (its timesteps already set): frame f runs `frame_lag * f` steps behind frame 0 (FIFO-Diffusion's
    diagonal denoising, the sampling of diffusion forcing). Every step calls the model once with a
    timestep per frame (B, F) and moves each frame that is under way one step along the grid with
    the deterministic DDIM update (`DDIMScheduler.step`, per frame; any prediction type); frames not
    yet started stay pure noise, finished ones stay clean and are shown to the model at t = 0. So a
    directed model denoises each frame next to the cleaner frames before it, instead of deciding
    every frame's content at once from their equally noisy states. N + frame_lag * (F - 1) model
    calls for N steps; frame_lag = 0 is synchronous DDIM. `causal`: the model's frame f depends on
    frames <= f only (directed temporal attention), so frames not yet started are left out of its
    input (same result, fewer frames computed while the later frames wait)."""
    ddim = DDIMScheduler.from_config(scheduler.config)
    ddim.set_timesteps(len(scheduler.timesteps), device=latents.device)
    grid, n = ddim.timesteps, len(ddim.timesteps)
    levels = staggered_levels(n, latents.shape[2], frame_lag)
    for i in progress(range(len(levels) - 1)):
        level, after = levels[i].to(latents.device), levels[i + 1].to(latents.device)
        t = torch.where(level < n, grid[level.clamp(max=n - 1)], torch.zeros_like(grid[0]))
        # with a causal model, frames that wait at pure noise cannot change the others: leave them out
        upto = int((after > 0).sum()) if causal else latents.shape[2]
        prediction = guided_prediction(model, latents[:, :, :upto], t[:upto].expand(len(latents), -1), guidance_scale,
                                       None if conditioning is None else conditioning[:, :, :upto])
        latents = latents.clone()
        moving = after > level
        for j in level[moving].unique().tolist():
            frames = ((level == j) & moving).nonzero().flatten()
            latents[:, :, frames] = ddim.step(prediction[:, :, frames], grid[j], latents[:, :, frames]).prev_sample
        if on_step_end is not None:
            latents, stop = on_step_end(i, t, latents)
            if stop:
                break
    return latents
