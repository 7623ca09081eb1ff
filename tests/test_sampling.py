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


def test_frame_schedule_gives_every_frame_each_step_once_chunk_by_chunk():
    from magicvideo.sampling import frame_schedule

    staggered = torch.stack(frame_schedule(num_steps=4, num_frames=3, chunk_size=1, lag=2))
    assert len(staggered) == 4 + 2 * 2 + 1  # N + lag * (chunks - 1) steps, then all clean
    chunked = torch.stack(frame_schedule(num_steps=4, num_frames=5, chunk_size=2))  # lag N: one chunk after another
    assert len(chunked) == 4 * 3 + 1
    for levels, starts in ((staggered, [0, 2, 4]), (chunked, [0, 0, 4, 4, 8])):
        assert torch.equal(levels[0], torch.zeros(levels.shape[1], dtype=torch.long))
        assert torch.equal(levels[-1], torch.full((levels.shape[1],), 4))
        moves = levels[1:] - levels[:-1]
        assert moves.min() >= 0 and moves.max() <= 1 and torch.equal(moves.sum(0), torch.full((levels.shape[1],), 4))
        assert [int(moves[:, f].nonzero()[0]) for f in range(levels.shape[1])] == starts
        assert (levels[:, 1:] <= levels[:, :-1]).all()  # never ahead of the frame before it
    # chunk of every frame (or lag 0): the synchronous sampler
    assert all(torch.equal(x, torch.full((3,), k)) for k, x in enumerate(frame_schedule(4, 3, chunk_size=3)))
    assert len(frame_schedule(4, 3, chunk_size=1, lag=0)) == 5


def causal_toy(weight):
    """A causal denoiser: frame f sees frames <= f (a running sum), with its own timestep (B, F)."""

    def model(x, t):
        assert t.shape == (x.shape[0], x.shape[2])
        return torch.einsum("oc,bcfhw->bofhw", weight, x.cumsum(2)) * (1 + t[:, None, :, None, None] / 1000)

    return model


def test_causal_sampling_with_one_chunk_is_ddim():
    from magicvideo.sampling import denoise_causal

    g = torch.Generator().manual_seed(0)
    model = causal_toy(torch.randn(4, 4, generator=g) * 0.3)
    latents = torch.randn(1, 4, 3, 2, 2, generator=g)
    s = scheduler("ddim", steps=6)
    sync = denoise(lambda x, t: model(x, t.reshape(1, 1).expand(x.shape[0], x.shape[2])), s, latents)
    assert torch.allclose(denoise_causal(model, s, latents, chunk_size=3), sync, atol=1e-6)
    assert torch.allclose(denoise_causal(model, s, latents, chunk_size=1, lag=0), sync, atol=1e-6)


@pytest.mark.parametrize("chunk_size, lag", [(1, 2), (2, None), (1, None)])
def test_causal_sampling_keeps_frame_zero_and_does_not_depend_on_later_noise(chunk_size, lag):
    """With a causal model frame 0 never sees another frame, so it comes out as synchronous DDIM's;
    frame f's result does not depend on the initial noise of later frames (bit for bit)."""
    from magicvideo.sampling import denoise_causal

    g = torch.Generator().manual_seed(1)
    model = causal_toy(torch.randn(4, 4, generator=g) * 0.3)
    latents = torch.randn(1, 4, 5, 2, 2, generator=g)
    s = scheduler("ddim", steps=4)
    sync = denoise(lambda x, t: model(x, t.reshape(1, 1).expand(x.shape[0], x.shape[2])), s, latents)
    out = denoise_causal(model, s, latents, chunk_size=chunk_size, lag=lag)
    assert torch.allclose(out[:, :, 0], sync[:, :, 0], atol=1e-6)
    assert not torch.allclose(out[:, :, 2:], sync[:, :, 2:], atol=1e-3)
    changed = latents.clone()
    changed[:, :, 4:] = torch.randn(1, 4, 1, 2, 2, generator=g)
    again = denoise_causal(model, s, changed, chunk_size=chunk_size, lag=lag)
    assert torch.equal(again[:, :, :4], out[:, :, :4]) and not torch.allclose(again[:, :, 4:], out[:, :, 4:])


def test_causal_sampling_moves_only_the_frames_under_way_and_keeps_the_context():
    """Frames wait at their initial noise until their turn, finished frames stay as they are, and given
    context frames are held exactly (shown to the model at the context timestep)."""
    from magicvideo.sampling import denoise_causal, frame_schedule

    latents = torch.randn(1, 4, 5, 2, 2, generator=torch.Generator().manual_seed(3))
    context = torch.randn(1, 4, 1, 2, 2, generator=torch.Generator().manual_seed(4))
    levels = [torch.cat([torch.tensor([3]), x]) for x in frame_schedule(3, 4, chunk_size=2, lag=1)]
    after, timesteps = [], []

    def model(x, t):
        timesteps.append(t[0, 0].item())
        return 0.1 * x

    out = denoise_causal(model, scheduler("ddim", steps=3), latents, chunk_size=2, lag=1, context=context,
                         context_timestep=20, generator=torch.Generator().manual_seed(0),
                         on_step_end=lambda i, t, x: (after.append(x.clone()), (x, False))[1])
    assert torch.equal(out[:, :, :1], context) and set(timesteps) == {20}
    start = latents.clone()
    start[:, :, :1] = context
    for i, x in enumerate(after):
        waiting, done = levels[i + 1] == 0, (levels[i + 1] == 3) & (levels[i] == 3)
        assert torch.equal(x[:, :, waiting], start[:, :, waiting])
        assert torch.equal(x[:, :, done], (after[i - 1] if i else start)[:, :, done])
