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


def test_staggered_levels_give_every_frame_each_step_once_in_order():
    from magicvideo.sampling import staggered_levels

    levels = torch.stack(staggered_levels(num_steps=4, num_frames=3, frame_lag=2))
    assert len(levels) == 4 + 2 * 2 + 1  # N + lag * (F - 1) steps, then all clean
    assert torch.equal(levels[0], torch.zeros(3, dtype=torch.long)) and torch.equal(levels[-1], torch.full((3,), 4))
    moves = levels[1:] - levels[:-1]
    assert moves.min() >= 0 and moves.max() <= 1 and torch.equal(moves.sum(0), torch.full((3,), 4))
    # frame f starts moving 2 * f steps after frame 0, and is never ahead of the frame before it
    assert [int(moves[:, f].nonzero()[0]) for f in range(3)] == [0, 2, 4]
    assert (levels[:, 1:] <= levels[:, :-1]).all()


def test_staggered_sampling_without_lag_is_ddim():
    from magicvideo.sampling import denoise_staggered

    g = torch.Generator().manual_seed(0)
    weight = torch.randn(4, 4, generator=g) * 0.3

    def model(x, t):  # frames mixed, so the frames' timesteps matter; a per-frame timestep (B, F)
        assert t.shape == (x.shape[0], x.shape[2])
        return torch.einsum("oc,bcfhw->bofhw", weight, x.cumsum(2)) * (t[:, None, :, None, None] / 1000)

    latents = torch.randn(1, 4, 3, 2, 2, generator=g)
    s = scheduler("ddim", steps=6)
    sync = denoise(lambda x, t: model(x, t.reshape(1, 1).expand(x.shape[0], x.shape[2])), s, latents)
    assert torch.allclose(denoise_staggered(model, s, latents, frame_lag=0), sync, atol=1e-6)


def test_staggered_sampling_of_a_causal_model_keeps_frame_zero_and_causality():
    """With a causal model frame 0 never sees another frame, so it comes out as synchronous DDIM's;
    frame f's result does not depend on the initial noise of later frames."""
    from magicvideo.sampling import denoise_staggered

    g = torch.Generator().manual_seed(1)
    weight = torch.randn(4, 4, generator=g) * 0.3

    def model(x, t):  # causal: frame f sees frames <= f (a running sum), with its own timestep
        return torch.einsum("oc,bcfhw->bofhw", weight, x.cumsum(2)) * (1 + t[:, None, :, None, None] / 1000)

    latents = torch.randn(1, 4, 5, 2, 2, generator=g)
    s = scheduler("ddim", steps=4)
    sync = denoise(lambda x, t: model(x, t.reshape(1, 1).expand(x.shape[0], x.shape[2])), s, latents)
    out = denoise_staggered(model, s, latents, frame_lag=2)
    assert torch.allclose(out[:, :, 0], sync[:, :, 0], atol=1e-6)
    assert not torch.allclose(out[:, :, 1:], sync[:, :, 1:], atol=1e-3)
    changed = latents.clone()
    changed[:, :, 3:] = torch.randn(1, 4, 2, 2, 2, generator=g)
    again = denoise_staggered(model, s, changed, frame_lag=2)
    assert torch.equal(again[:, :, :3], out[:, :, :3]) and not torch.allclose(again[:, :, 3:], out[:, :, 3:])


def test_staggered_sampling_leaves_waiting_frames_out_of_a_causal_model():
    """causal=True: the model sees only the frames under way or done, and the result is the same."""
    from magicvideo.sampling import denoise_staggered

    g = torch.Generator().manual_seed(2)
    weight = torch.randn(4, 4, generator=g) * 0.3
    seen = []

    def model(x, t):
        seen.append(x.shape[2])
        return torch.einsum("oc,bcfhw->bofhw", weight, x.cumsum(2)) * (1 + t[:, None, :, None, None] / 1000)

    latents = torch.randn(1, 4, 5, 2, 2, generator=g)
    s = scheduler("ddim", steps=4)
    full = denoise_staggered(model, s, latents, frame_lag=2, guidance_scale=2.0)
    assert seen == [5] * 12
    seen.clear()
    skipped = denoise_staggered(model, s, latents, frame_lag=2, guidance_scale=2.0, causal=True)
    assert seen == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 5, 5]
    torch.testing.assert_close(skipped, full, rtol=1e-5, atol=1e-6)


def test_staggered_sampling_moves_only_the_frames_under_way():
    """Frames wait at their initial noise until their turn, and finished frames stay as they are."""
    from magicvideo.sampling import denoise_staggered, staggered_levels

    latents = torch.randn(1, 4, 4, 2, 2, generator=torch.Generator().manual_seed(3))
    levels = staggered_levels(3, 4, 1)
    after = []
    denoise_staggered(lambda x, t: 0.1 * x, scheduler("ddim", steps=3), latents, frame_lag=1,
                      on_step_end=lambda i, t, x: (after.append(x.clone()), (x, False))[1])
    for i, x in enumerate(after):
        waiting, done = levels[i + 1] == 0, (levels[i + 1] == 3) & (levels[i] == 3)
        assert torch.equal(x[:, :, waiting], latents[:, :, waiting])
        assert torch.equal(x[:, :, done], after[i - 1][:, :, done])
        assert not torch.equal(x[:, :, levels[i + 1] > levels[i]], (after[i - 1] if i else latents)[:, :, levels[i + 1] > levels[i]])
