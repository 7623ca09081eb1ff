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
- a step callback that sees (and may replace) the latents after every step and may stop the loop.
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
    cfg = guidance_scale > 1.0
    extra = step_kwargs(scheduler, generator)
    known_noise = None
    if known is not None:
        known_noise = randn_tensor(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
    for i, t in enumerate(progress(scheduler.timesteps)):
        if known is not None:
            latents = known.hold(latents, known.noised(scheduler, known_noise, t))
        model_input = torch.cat([latents] * 2) if cfg else latents
        model_input = scheduler.scale_model_input(model_input, t)
        if conditioning is not None:
            cond = torch.cat([conditioning] * 2) if cfg else conditioning
            model_input = torch.cat([model_input, cond.to(model_input.dtype)], dim=1)
        prediction = model(model_input, t)
        if cfg:
            prediction = classifier_free_guidance(*prediction.chunk(2), guidance_scale)
        latents = scheduler.step(prediction, t, latents, **extra).prev_sample
        if on_step_end is not None:
            latents, stop = on_step_end(i, t, latents)
            if stop:
                break
    if known is not None:
        latents = known.hold(latents, known.latents)
    return latents
