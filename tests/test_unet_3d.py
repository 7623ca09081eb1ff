"""The 3D U-Net: inflation equals the image model, causality of directed attention, parts."""

import pytest
import torch
from conftest import TINY_UNET, randomize_
from diffusers import UNet2DConditionModel

from magicvideo import MagicVideoUNet3D
from magicvideo.models.adaptor import FrameAdaptedConv2d
from magicvideo.models.temporal_attention import TEMPORAL_ATTENTION_MODES

FRAMES = 6


def inputs(batch=2, frames=FRAMES, seed=0):
    g = torch.Generator().manual_seed(seed)
    sample = torch.randn(batch, 4, frames, 8, 8, generator=g)
    context = torch.randn(batch, 5, TINY_UNET["cross_attention_dim"], generator=g)
    return sample, torch.tensor([10, 700][:batch]), context


@pytest.fixture(scope="module")
def unet2d():
    torch.manual_seed(0)
    return randomize_(UNet2DConditionModel(**TINY_UNET), seed=1, std=0.05).eval()


@pytest.mark.parametrize("mode", TEMPORAL_ATTENTION_MODES)
def test_fresh_inflation_equals_image_model_per_frame(unet2d, mode):
    unet3d = MagicVideoUNet3D.from_unet2d(unet2d, num_frames=FRAMES, temporal_attention=mode).eval()
    sample, t, context = inputs()
    with torch.no_grad():
        video = unet3d(sample, t, context, fps=8).sample
        per_frame = torch.stack([unet2d(sample[:, :, i], t, context).sample for i in range(FRAMES)], dim=2)
    assert video.shape == sample.shape
    assert (video - per_frame).abs().max() <= 1e-4


def test_missing_keys_are_exactly_the_new_parameters(unet2d):
    unet3d = MagicVideoUNet3D(**TINY_UNET, num_frames=FRAMES)
    missing, unexpected = unet3d.load_state_dict(unet2d.state_dict(), strict=False)
    new = unet3d.new_parameter_names()
    assert unexpected == []
    assert sorted(missing) == sorted(new)
    assert set(unet3d.state_dict()) - set(new) == set(unet2d.state_dict())
    groups = [[n for n in new if key in n] for key in (".adaptor.", ".temporal_attention.", "fps_embedding.")]
    assert all(groups) and sum(map(len, groups)) == len(new)
    convs = [m for m in unet3d.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(isinstance(m, FrameAdaptedConv2d) for m in convs)


def test_inflated_weights_are_copied_exactly(unet2d):
    unet3d = MagicVideoUNet3D.from_unet2d(unet2d, num_frames=FRAMES)
    state3d = unet3d.state_dict()
    for name, tensor in unet2d.state_dict().items():
        assert torch.equal(state3d[name], tensor), name


def randomized(mode, seed=3):
    torch.manual_seed(0)
    return randomize_(MagicVideoUNet3D(**TINY_UNET, num_frames=FRAMES, temporal_attention=mode), seed=seed).eval()


def randomize_layers_(model, marker: str, std: float) -> None:
    """Random values for the parameters whose names contain `marker` (zero-initialised layers become active)."""
    for name, parameter in model.named_parameters():
        if marker in name:
            torch.nn.init.normal_(parameter, std=std, generator=torch.Generator().manual_seed(len(name)))


def change_from(sample, k):
    changed = sample.clone()
    changed[:, :, k:] = torch.randn_like(changed[:, :, k:])
    return changed


@pytest.mark.parametrize("k", [1, 3, 5])
def test_directed_attention_is_causal(k):
    unet3d = randomized("directed")
    sample, t, context = inputs()
    with torch.no_grad():
        before = unet3d(sample, t, context, fps=8).sample
        after = unet3d(change_from(sample, k), t, context, fps=8).sample
    assert torch.allclose(before[:, :, :k], after[:, :, :k], atol=1e-5, rtol=0)
    assert (before[:, :, k:] - after[:, :, k:]).abs().max() > 1e-2  # later frames do change


def test_bidirectional_attention_lets_later_frames_change_earlier_ones():
    unet3d = randomized("bidirectional")
    sample, t, context = inputs()
    with torch.no_grad():
        before = unet3d(sample, t, context, fps=8).sample
        after = unet3d(change_from(sample, 3), t, context, fps=8).sample
    assert (before[:, :, :3] - after[:, :, :3]).abs().max() > 1e-3


def test_no_temporal_attention_means_frames_are_independent():
    unet3d = randomized("none")
    assert not any("temporal_attention" in n for n in unet3d.state_dict())
    sample, t, context = inputs()
    changed = sample.clone()
    changed[:, :, [0, 1, 3, 4, 5]] = torch.randn_like(changed[:, :, [0, 1, 3, 4, 5]])
    with torch.no_grad():
        before, after = (unet3d(x, t, context, fps=8).sample for x in (sample, changed))
    assert torch.allclose(before[:, :, 2], after[:, :, 2], atol=1e-5, rtol=0)


def test_frame_adaptor_is_per_frame_affine():
    conv = MagicVideoUNet3D(**TINY_UNET, num_frames=FRAMES).conv_in
    with torch.no_grad():
        conv.adaptor.scale.copy_(torch.rand_like(conv.adaptor.scale) + 0.5)
        conv.adaptor.shift.copy_(torch.randn_like(conv.adaptor.shift))
        conv.bias.copy_(torch.randn_like(conv.bias))
    x = torch.randn(2 * FRAMES, 4, 8, 8)
    params = (conv.weight, conv.bias, conv.adaptor.scale, conv.adaptor.shift)
    plain = torch.nn.functional.conv2d(x, conv.weight, conv.bias, padding=1).reshape(2, FRAMES, -1, 8, 8)
    expected = (plain * conv.adaptor.scale[None, :, :, None, None]
                + conv.adaptor.shift[None, :, :, None, None]).reshape(2 * FRAMES, -1, 8, 8)
    fused = conv(x, FRAMES)  # the bias is folded into the adaptor's single pass
    assert torch.allclose(fused, expected, atol=1e-5)
    # ... and so are the gradients of every parameter (training goes through the same path)
    weights = torch.randn_like(expected)
    for a, b in zip(torch.autograd.grad((fused * weights).sum(), params),
                    torch.autograd.grad((expected * weights).sum(), params)):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-5)


def test_fps_embedding_starts_at_zero_and_conditions_once_trained():
    sample, t, context = inputs()
    fresh = MagicVideoUNet3D(**TINY_UNET, num_frames=FRAMES).eval()
    trained = randomized("directed")
    with torch.no_grad():
        assert torch.equal(fresh(sample, t, context, fps=4).sample, fresh(sample, t, context, fps=None).sample)
        a, b = (trained(sample, t, context, fps=f).sample for f in (4, 24))
    assert (a - b).abs().max() > 1e-3


def test_gradient_checkpointing_gives_the_same_gradients_and_really_recomputes():
    sample, t, context = inputs()
    grads, losses, calls = [], [], []
    for checkpointing in (False, True):
        unet3d = randomized("directed").train()
        if checkpointing:
            unet3d.enable_gradient_checkpointing()
        count = [0]
        unet3d.down_blocks[0].resnets[0].conv1.register_forward_hook(lambda *_: count.__setitem__(0, count[0] + 1))
        loss = unet3d(sample, t, context, fps=8).sample.square().mean()
        loss.backward()
        losses.append(loss.item())
        calls.append(count[0])
        grads.append(torch.cat([p.grad.flatten() for p in unet3d.parameters()]))
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    assert torch.allclose(grads[0], grads[1], atol=1e-5, rtol=1e-4)
    assert calls == [1, 2]  # checkpointed: run again in the backward pass


def test_one_model_serves_two_threads_with_different_frame_counts():
    from concurrent.futures import ThreadPoolExecutor

    unet3d = randomized("directed")
    long, t, context = inputs(frames=FRAMES)
    short = long[:, :, :3].clone()
    with torch.no_grad():
        alone = [unet3d(x, t, context, fps=8).sample for x in (long, short)]

        def call(x):
            return [unet3d(x, t, context, fps=8).sample for _ in range(4)]

        with ThreadPoolExecutor(2) as pool:
            together = list(pool.map(call, (long, short)))
    for expected, results in zip(alone, together):
        assert all(torch.equal(expected, r) for r in results)


def test_per_frame_timesteps_equal_per_clip_timesteps_when_equal_and_differ_otherwise():
    unet3d = randomized("directed")
    sample, t, context = inputs()
    with torch.no_grad():
        per_clip = unet3d(sample, t, context, fps=8).sample
        per_frame = unet3d(sample, t[:, None].expand(-1, FRAMES), context, fps=8).sample
        mixed_t = t[:, None].expand(-1, FRAMES).clone()
        mixed_t[:, -1] = 0
        mixed = unet3d(sample, mixed_t, context, fps=8).sample
    assert torch.allclose(per_clip, per_frame, atol=1e-5)
    # directed attention: changing the last frame's timestep changes only the last frame
    assert torch.allclose(mixed[:, :, :-1], per_clip[:, :, :-1], atol=1e-5)
    assert (mixed[:, :, -1] - per_clip[:, :, -1]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="timestep"):
        unet3d(sample, torch.zeros(2, FRAMES + 1), context)


def test_class_labels_and_attention_mask_are_passed_to_the_image_model():
    torch.manual_seed(0)
    unet2d = randomize_(UNet2DConditionModel(**TINY_UNET, class_embed_type="timestep"), seed=1, std=0.05).eval()
    unet3d = MagicVideoUNet3D.from_unet2d(unet2d, num_frames=FRAMES).eval()
    sample, t, context = inputs()
    labels = torch.tensor([250, 20])
    mask = torch.ones(2, context.shape[1])
    mask[:, -2:] = 0
    with torch.no_grad():
        video = unet3d(sample, t, context, class_labels=labels, encoder_attention_mask=mask).sample
        per_frame = torch.stack([unet2d(sample[:, :, i], t, context, class_labels=labels, encoder_attention_mask=mask).sample
                                 for i in range(FRAMES)], dim=2)
        unmasked = unet3d(sample, t, context, class_labels=labels).sample
    assert (video - per_frame).abs().max() <= 1e-4
    assert (video - unmasked).abs().max() > 1e-4
    with pytest.raises(ValueError, match="class_labels"):
        unet3d(sample, t, context)


def test_down_and_mid_block_residuals_are_added():
    unet3d = randomized("directed")
    sample, t, context = inputs()
    with torch.no_grad():
        base = unet3d(sample, t, context).sample
        # the skips of TINY_UNET: conv_in, resnet, downsampler (32 channels), resnet (64)
        zeros = [torch.zeros(2 * FRAMES, c, r, r) for c, r in ((32, 8), (32, 8), (32, 4), (64, 4))]
        same = unet3d(sample, t, context, down_block_additional_residuals=zeros,
                      mid_block_additional_residual=torch.zeros(2 * FRAMES, 64, 4, 4)).sample
        moved = unet3d(sample, t, context, mid_block_additional_residual=torch.ones(2, 64, FRAMES, 4, 4)).sample
    assert torch.equal(base, same)
    assert (base - moved).abs().max() > 1e-3


def test_inflation_replaces_subclasses_of_conv2d_too():
    class MyConv(torch.nn.Conv2d):
        pass

    from magicvideo.models.adaptor import add_frame_adaptors

    model = torch.nn.Sequential(MyConv(3, 4, 3), torch.nn.Conv2d(4, 4, 1))
    weight = model[0].weight
    add_frame_adaptors(model, num_frames=2)
    assert all(isinstance(m, FrameAdaptedConv2d) for m in model)
    assert model[0].weight is weight


def test_save_and_load_round_trip(tmp_path):
    unet3d = randomized("bidirectional")
    unet3d.save_pretrained(tmp_path)
    loaded = MagicVideoUNet3D.from_pretrained(tmp_path).eval()
    assert loaded.config.temporal_attention == "bidirectional"
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    sample, t, context = inputs()
    with torch.no_grad():
        assert torch.equal(unet3d(sample, t, context, fps=8).sample, loaded(sample, t, context, fps=8).sample)


def test_bad_configuration_and_input():
    with pytest.raises(ValueError, match="temporal_attention"):
        MagicVideoUNet3D(**TINY_UNET, temporal_attention="sideways")
    unet3d = MagicVideoUNet3D(**TINY_UNET, num_frames=4)
    sample, t, context = inputs(frames=5)
    with pytest.raises(ValueError, match="adaptors for 4 frames"):
        unet3d(sample, t, context)


def test_inflation_rejects_unsupported_image_models():
    unet2d = UNet2DConditionModel(**TINY_UNET, addition_embed_type="text")
    with pytest.raises(ValueError, match="addition_embed_type"):
        MagicVideoUNet3D.from_unet2d(unet2d)


def test_inflation_of_a_u_net_whose_middle_block_does_not_attend():
    torch.manual_seed(0)
    unet2d = randomize_(UNet2DConditionModel(**TINY_UNET, mid_block_type="UNetMidBlock2D"), seed=4, std=0.05).eval()
    unet3d = MagicVideoUNet3D.from_unet2d(unet2d, num_frames=FRAMES).eval()
    sample, t, context = inputs()
    with torch.no_grad():
        video = unet3d(sample, t, context).sample
        per_frame = torch.stack([unet2d(sample[:, :, i], t, context).sample for i in range(FRAMES)], dim=2)
    assert (video - per_frame).abs().max() <= 1e-4


def test_relative_frame_positions_depend_on_frame_distance_only_and_stay_causal(tmp_path):
    """temporal_position_encoding="relative" (beyond the paper): rotary q / k, so a logit
    depends on the frame distance only and no frame index enters the values; the mask is unchanged."""
    from magicvideo.models.temporal_attention import DirectedTemporalAttention, rotate_by_frame

    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(3, 8, generator=g), torch.randn(3, 8, generator=g)
    frames = torch.tensor([0, 2, 5])
    logits = rotate_by_frame(q, frames) @ rotate_by_frame(k, frames).T
    assert torch.allclose(logits, rotate_by_frame(q, frames + 7) @ rotate_by_frame(k, frames + 7).T, atol=1e-5)
    assert not torch.allclose(logits, q @ k.T, atol=1e-3)

    still = torch.randn(1, 16, 3, 3, generator=g).repeat(5, 1, 1, 1)  # one clip of 5 identical frames
    outputs = {}
    for encoding in ("absolute", "relative"):
        layer = randomize_(DirectedTemporalAttention(16, 4, "directed", frame_position=encoding), seed=4, std=0.3)
        with torch.no_grad():
            outputs[encoding] = layer(still, 5)
    # identical frames: relative attention averages identical values, whatever the weights
    assert torch.allclose(outputs["relative"], outputs["relative"][:1].expand(5, -1, -1, -1), atol=1e-5)
    assert (outputs["absolute"] - outputs["absolute"][:1]).abs().max() > 1e-3

    torch.manual_seed(0)
    unet = randomize_(MagicVideoUNet3D(**TINY_UNET, num_frames=FRAMES, temporal_position_encoding="relative"), seed=2).eval()
    sample, t, context = inputs()
    with torch.no_grad():
        before, after = unet(sample, t, context).sample, unet(change_from(sample, 3), t, context).sample
    assert torch.allclose(before[:, :, :3], after[:, :, :3], atol=1e-5, rtol=0)
    assert (before[:, :, 3:] - after[:, :, 3:]).abs().max() > 1e-2
    unet.save_pretrained(tmp_path / "u")
    loaded = MagicVideoUNet3D.from_pretrained(tmp_path / "u").eval()
    assert loaded.config.temporal_position_encoding == "relative"
    with torch.no_grad():
        assert torch.equal(loaded(sample, t, context).sample, before)
    with pytest.raises(ValueError, match="temporal_position_encoding"):
        MagicVideoUNet3D(**TINY_UNET, num_frames=FRAMES, temporal_position_encoding="learned")


def test_removed_configuration_keys_fail_with_the_key_named(tmp_path):
    randomized("directed").save_pretrained(tmp_path)
    import json

    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "space_time_attention": False}))
    with pytest.raises(ValueError, match="space_time_attention: removed"):
        MagicVideoUNet3D.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="directed_post_softmax"):
        MagicVideoUNet3D.from_config({**config, "temporal_attention": "directed_post_softmax"})


@pytest.mark.parametrize("encoding", ["absolute", "relative"])
def test_cached_chunks_equal_one_call_on_the_whole_clip(encoding):
    """Causal sampling's key/value cache: the clip computed chunk by chunk (each chunk beside the cached
    keys and values of the frames before it, with per-frame timesteps and its frame offset in the
    adaptors and positions) equals one call on the whole clip, to float rounding."""
    from magicvideo.models.temporal_attention import TemporalCache

    torch.manual_seed(0)
    unet3d = randomize_(MagicVideoUNet3D(**TINY_UNET, num_frames=FRAMES, temporal_position_encoding=encoding),
                        seed=3).eval()
    sample, _, context = inputs()
    t = torch.tensor([[0, 0, 500, 500, 900, 900], [0, 0, 30, 30, 999, 999]])
    with torch.no_grad():
        whole = unet3d(sample, t, context, fps=8).sample
        cache, chunks = TemporalCache(), []
        for start, stop, store in ((0, 3, 2), (2, 5, 1), (3, 6, 0)):  # each call stores its finished frames
            cache.store = store
            assert len(cache) == start
            chunks.append(unet3d(sample[:, :, start:stop], t[:, start:stop], context, fps=8, cache=cache).sample)
        assert len(cache) == 3
    assert (chunks[0] - whole[:, :, :3]).abs().max() < 1e-5
    assert (chunks[1] - whole[:, :, 2:5]).abs().max() < 1e-5
    assert (chunks[2] - whole[:, :, 3:]).abs().max() < 1e-5
    with pytest.raises(ValueError, match="frames 3...6"):
        unet3d(sample[:, :, :4], t[:, :4], context, cache=cache)
    with pytest.raises(ValueError, match="bidirectional"):
        randomized("bidirectional")(sample[:, :, :2], t[:, :2], context, cache=TemporalCache())
