"""The first-frame anchor: frame 0's latent as extra input channels (models/anchor.py)."""

import torch
from conftest import TINY_UNET, make_tiny_pipeline, randomize_

from magicvideo import MagicVideoUNet3D
from magicvideo.models.anchor import anchor_conditioning, is_anchor_unet, with_anchor


def test_anchor_channels_copy_frame_zero_with_a_mask_where_given():
    like = torch.zeros(3, 4, 5, 2, 2)
    anchor = torch.randn(3, 4, 1, 2, 2)
    out = anchor_conditioning(anchor, like, torch.tensor([True, False, True]))
    assert out.shape == (3, 5, 5, 2, 2)
    assert torch.equal(out[0, :4], anchor[0].expand(-1, 5, -1, -1)) and torch.equal(out[2, 4], torch.ones(5, 2, 2))
    assert torch.equal(out[1], torch.zeros(5, 5, 2, 2))
    assert torch.equal(anchor_conditioning(None, like), torch.zeros(3, 5, 5, 2, 2))


def test_a_widened_model_computes_what_it_computed_whatever_the_anchor():
    torch.manual_seed(0)
    unet = randomize_(MagicVideoUNet3D(**TINY_UNET, num_frames=4), seed=1, std=0.05).eval()
    anchored = with_anchor(unet).eval()
    assert is_anchor_unet(anchored) and not is_anchor_unet(unet) and with_anchor(anchored) is anchored
    g = torch.Generator().manual_seed(0)
    sample, context = torch.randn(1, 4, 4, 8, 8, generator=g), torch.randn(1, 3, 32, generator=g)
    extra = anchor_conditioning(torch.randn(1, 4, 1, 8, 8, generator=g), sample)
    with torch.no_grad():
        before = unet(sample, 500, context, fps=8).sample
        after = anchored(torch.cat([sample, extra], dim=1), 500, context, fps=8).sample
    assert (after - before).abs().max() < 1e-5


def test_causal_sampling_gives_the_anchor_once_frame_zero_is_finished(monkeypatch):
    """Chunk by chunk: the first chunk's calls see no anchor (zeros), every later call sees frame 0's
    final latent in every frame's anchor channels with the mask set."""
    pipe = make_tiny_pipeline(num_frames=4)
    pipe.unet = randomize_(with_anchor(pipe.unet), seed=2, std=0.05).eval()
    seen = []
    forward = pipe.unet.forward

    def spy(sample, *args, **kwargs):
        seen.append(sample[:, 4:].clone())
        return forward(sample, *args, **kwargs)

    monkeypatch.setattr(pipe.unet, "forward", spy)
    latents = pipe("a", num_frames=4, num_inference_steps=2, guidance_scale=2.0, chunk_size=1,
                   generator=torch.Generator().manual_seed(0), output_type="latent").frames
    assert len(seen) == 8
    assert all(torch.equal(x, torch.zeros_like(x)) for x in seen[:2])
    for x in seen[2:]:
        assert torch.equal(x[:, 4], torch.ones_like(x[:, 4]))
        assert torch.equal(x[:, :4], torch.cat([latents[:, :, :1]] * 2).expand(-1, -1, x.shape[2], -1, -1))
