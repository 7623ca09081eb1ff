"""The shared sampling loop: guidance, conditioning channels, known frames held exactly."""

import pytest
import torch
from diffusers import DDIMScheduler

from magicvideo.sampling import SCHEDULERS, KnownFrames, classifier_free_guidance, denoise


def scheduler(name="ddim", steps=5):
    s = SCHEDULERS[name].from_config(DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085,
                                                   beta_end=0.012, clip_sample=False).config)
    s.set_timesteps(steps)
    return s


def test_guidance_formula_and_batching():
    calls = []

    def model(x, t):
        calls.append(x.shape[0])
        return torch.cat([torch.zeros_like(x[:1]), torch.ones_like(x[1:])])  # uncond 0, cond 1

    latents = torch.zeros(1, 4, 3, 2, 2)
    denoise(model, scheduler(steps=2), latents, guidance_scale=3.0)
    assert calls == [2, 2]
    u, c = torch.zeros(2), torch.ones(2)
    assert torch.equal(classifier_free_guidance(u, c, 3.0), torch.full((2,), 3.0))


def test_conditioning_channels_are_concatenated_after_scaling():
    seen = []

    def model(x, t):
        seen.append(x.clone())
        return torch.zeros_like(x[:, :4])

    cond = torch.full((1, 2, 3, 2, 2), 7.0)
    denoise(model, scheduler("euler", 2), torch.randn(1, 4, 3, 2, 2), conditioning=cond, guidance_scale=2.0)
    assert all(x.shape == (2, 6, 3, 2, 2) and torch.equal(x[:, 4:], torch.cat([cond] * 2)) for x in seen)


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_known_frames_are_held_bit_identical(name):
    g = torch.Generator().manual_seed(0)
    known = torch.randn(1, 4, 5, 2, 2, generator=g)
    mask = torch.zeros(1, 1, 5, 1, 1, dtype=torch.bool)
    mask[:, :, [0, 4]] = True
    seen = []

    def model(x, t):
        seen.append(x[:, :, [0, 4]].clone())
        return torch.randn(x.shape, generator=g)

    s = scheduler(name)
    out = denoise(model, s, torch.randn(1, 4, 5, 2, 2, generator=g) * s.init_noise_sigma,
                  known=KnownFrames(known, mask), generator=torch.Generator().manual_seed(1))
    assert torch.equal(out[:, :, [0, 4]], known[:, :, [0, 4]])
    assert not torch.equal(out[:, :, 1:4], known[:, :, 1:4])
    # the model saw the known frames noised, the noise shrinking as sampling goes on
    errors = [(x / s.init_noise_sigma - known[:, :, [0, 4]]).abs().mean().item() for x in seen]
    assert errors[-1] < errors[0]


def test_step_callback_can_stop():
    steps = []

    def on_step_end(i, t, latents):
        steps.append(i)
        return latents, i == 1

    denoise(lambda x, t: torch.zeros_like(x), scheduler(steps=5), torch.randn(1, 4, 2, 2, 2), on_step_end=on_step_end)
    assert steps == [0, 1]
