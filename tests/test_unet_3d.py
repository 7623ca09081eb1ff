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


@pytest.mark.parametrize("mode", ["bidirectional", "directed_post_softmax"])
def test_other_modes_let_later_frames_change_earlier_ones(mode):
    # bidirectional by design; the paper's literal softmax-then-mask because the softmax
    # normaliser of frame p sums over the keys of later frames too.
    unet3d = randomized(mode)
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


def test_directed_post_softmax_is_the_papers_literal_formula():
    from magicvideo.models.temporal_attention import temporal_attention

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, 2, 5, 4, generator=g) for _ in range(3))
    out = temporal_attention(q, k, v, "directed_post_softmax")
    for n in range(3):
        for h in range(2):
            scores = (q[n, h] @ k[n, h].T / 2.0).exp()  # d = 4: 1 / sqrt(d) = 1/2
            attn = scores / scores.sum(-1, keepdim=True)  # softmax over *all* frames
            expected = (attn * torch.ones(5, 5).tril()) @ v[n, h]  # then masked, not renormalised
            assert torch.allclose(out[n, h], expected, atol=1e-6)


def test_directed_space_time_attention_frame_by_frame_equals_one_masked_call():
    """The directed space-time path attends frame by frame (each frame's queries against the keys of
    frames <= it); output and gradients equal one attention call with the block-causal (L, L) mask."""
    from magicvideo.models.temporal_attention import temporal_attention

    g = torch.Generator().manual_seed(0)
    frames, per_frame = 5, 6
    q, k, v = (torch.randn(2, 3, frames * per_frame, 4, generator=g, requires_grad=True) for _ in range(3))
    frame = torch.arange(frames * per_frame) // per_frame
    reference = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=frame[None] <= frame[:, None])
    out = temporal_attention(q, k, v, "directed", tokens_per_frame=per_frame)
    assert torch.allclose(out, reference, atol=1e-6)
    grads = torch.autograd.grad(out.square().sum(), (q, k, v))
    expected = torch.autograd.grad(reference.square().sum(), (q, k, v))
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(grads, expected))


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
    unet3d = randomized("directed_post_softmax")
    unet3d.save_pretrained(tmp_path)
    loaded = MagicVideoUNet3D.from_pretrained(tmp_path).eval()
    assert loaded.config.temporal_attention == "directed_post_softmax"
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    sample, t, context = inputs()
    with torch.no_grad():
        assert torch.equal(unet3d(sample, t, context, fps=8).sample, loaded(sample, t, context, fps=8).sample)


def test_bad_configuration_and_input():
    with pytest.raises(ValueError, match="temporal_attention"):
        MagicVideoUNet3D(**TINY_UNET, temporal_attention="sideways")
    unet3d = MagicVideoUNet3D(**TINY_UNET, num_frames=4)
    sample, t, context = inputs(frames=5)
    with pytest.raises(ValueError, match="5 frames"):
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


def test_first_frame_spatial_attention_keeps_frame_zero_stays_causal_and_adds_no_weights(tmp_path):
    """spatial_attention="first_frame": frame 0's output is its per-frame output (it sees its own tokens
    twice), every frame f depends on frames 0 and <= f only, the weights are the same ones."""
    unet = randomize_(MagicVideoUNet3D(**TINY_UNET, num_frames=FRAMES).eval(), seed=1, std=0.1)
    sample, t, context = inputs()
    names = [name for name, _ in unet.named_parameters()]
    with torch.no_grad():
        per_frame = unet(sample, t, context).sample
        unet.set_spatial_attention("first_frame")
        anchored = unet(sample, t, context).sample
        changed = sample.clone()
        changed[:, :, 3:] += 1.0
        later = unet(changed, t, context).sample
        first = sample.clone()
        first[:, :, 0] += 1.0
        moved_first = unet(first, t, context).sample
    assert [name for name, _ in unet.named_parameters()] == names
    assert (anchored[:, :, 0] - per_frame[:, :, 0]).abs().max() <= 1e-5
    assert (anchored[:, :, 1:] - per_frame[:, :, 1:]).abs().max() > 1e-2
    assert torch.equal(later[:, :, :3], anchored[:, :, :3])
    # frame 0 reaches frame 5 through the spatial attention even with no temporal attention
    none = randomize_(MagicVideoUNet3D(**TINY_UNET, num_frames=FRAMES, temporal_attention="none",
                                       spatial_attention="first_frame").eval(), seed=1, std=0.1)
    with torch.no_grad():
        a, b = none(sample, t, context).sample, none(first, t, context).sample
    assert (a[:, :, 5] - b[:, :, 5]).abs().max() > 1e-3
    assert (moved_first[:, :, 5] - anchored[:, :, 5]).abs().max() > 1e-3
    unet.save_pretrained(tmp_path / "u")
    loaded = MagicVideoUNet3D.from_pretrained(tmp_path / "u").eval()
    assert loaded.config.spatial_attention == "first_frame"
    with torch.no_grad():
        assert torch.equal(loaded(sample, t, context).sample, anchored)
    with pytest.raises(ValueError, match="spatial_attention"):
        unet.set_spatial_attention("all_frames")


def test_space_time_temporal_attention_is_causal_reaches_other_positions_and_switches_without_new_weights(tmp_path):
    """temporal_attention_scope="space_time": a token attends to every spatial token of its own and
    earlier frames. On a 1x1 feature map it is exactly the per-position attention; it stays directed;
    unlike the per-position attention it lets a change at one spatial position of frame 0 reach other
    positions of later frames through the temporal branch alone; switching keeps the weights."""
    from magicvideo.models.temporal_attention import DirectedTemporalAttention

    layer = randomize_(DirectedTemporalAttention(16, 4, "directed", "position"), seed=2, std=0.3)
    x = torch.randn(2 * FRAMES, 16, 1, 1, generator=torch.Generator().manual_seed(0))
    per_position = layer(x, FRAMES)
    layer.scope = "space_time"
    assert torch.allclose(layer(x, FRAMES), per_position, atol=1e-6)
    x = torch.randn(2 * FRAMES, 16, 3, 3, generator=torch.Generator().manual_seed(1))
    moved = x.clone().view(2, FRAMES, 16, 3, 3)
    moved[:, 0, :, 2, 2] += torch.randn(2, 16, generator=torch.Generator().manual_seed(2))
    moved = moved.reshape_as(x)
    for scope, reaches in (("position", False), ("space_time", True)):
        layer.scope = scope
        with torch.no_grad():
            change = (layer(moved, FRAMES) - layer(x, FRAMES)).view(2, FRAMES, 16, 9).abs().amax(dim=(0, 2))
        assert bool((change[1:, :8] > 1e-3).all()) is reaches  # frames 1.. at the other 8 positions

    unet = randomize_(MagicVideoUNet3D(**TINY_UNET, num_frames=FRAMES).eval(), seed=1, std=0.1)
    sample, t, context = inputs()
    names = [name for name, _ in unet.named_parameters()]
    with torch.no_grad():
        before = unet(sample, t, context).sample
        unet.set_temporal_attention(scope="space_time")
        space_time = unet(sample, t, context).sample
        changed = sample.clone()
        changed[:, :, 3:] += torch.randn_like(changed[:, :, 3:])
        later = unet(changed, t, context).sample
    assert [name for name, _ in unet.named_parameters()] == names
    assert (space_time - before).abs().max() > 1e-3
    assert torch.equal(later[:, :, :3], space_time[:, :, :3])
    unet.save_pretrained(tmp_path / "u")
    loaded = MagicVideoUNet3D.from_pretrained(tmp_path / "u").eval()
    assert (loaded.config.temporal_attention, loaded.config.temporal_attention_scope) == ("directed", "space_time")
    with torch.no_grad():
        assert torch.equal(loaded(sample, t, context).sample, space_time)


def test_switching_the_temporal_attention_mask_equals_building_with_it():
    """set_temporal_attention("bidirectional") on a directed model gives the output of the model built
    bidirectional with the same weights; "none" cannot be switched to (it would drop weights)."""
    directed = randomize_(MagicVideoUNet3D(**TINY_UNET, num_frames=FRAMES).eval(), seed=1, std=0.1)
    built = MagicVideoUNet3D(**TINY_UNET, num_frames=FRAMES, temporal_attention="bidirectional").eval()
    built.load_state_dict(directed.state_dict())
    sample, t, context = inputs()
    directed.set_temporal_attention("bidirectional")
    with torch.no_grad():
        assert torch.equal(directed(sample, t, context).sample, built(sample, t, context).sample)
    assert directed.config.temporal_attention == "bidirectional"
    with pytest.raises(ValueError, match="temporal_attention"):
        directed.set_temporal_attention("none")
    with pytest.raises(ValueError, match="temporal_attention_scope"):
        directed.set_temporal_attention(scope="global")
    with pytest.raises(ValueError, match="no temporal attention"):
        MagicVideoUNet3D(**TINY_UNET, num_frames=FRAMES, temporal_attention="none").set_temporal_attention("directed")


def test_added_space_time_branch_starts_exact_stays_causal_and_round_trips(tmp_path):
    """with_new_layers(space_time_attention=(False, True)): a copy with zero-initialised space-time branches at the
    second level (and the mid block) computes exactly what the model computed; once trained (here
    randomised) it changes the output, stays directed, and saves / loads with its flags."""
    unet = randomize_(MagicVideoUNet3D(**TINY_UNET, num_frames=FRAMES).eval(), seed=1, std=0.1)
    levels = len(TINY_UNET["down_block_types"])
    flags = (False,) * (levels - 1) + (True,)
    extended = unet.with_new_layers(space_time_attention=flags).eval()
    added = [name for name in extended.state_dict() if ".space_time_attention." in name]
    assert added and set(extended.state_dict()) - set(unet.state_dict()) == set(added)
    assert set(added) <= set(extended.new_parameter_names())
    assert any(name.startswith("mid_block.") for name in added)
    assert not any(name.startswith(("down_blocks.0.", "up_blocks.%d." % (levels - 1))) for name in added)
    sample, t, context = inputs()
    with torch.no_grad():
        assert torch.equal(extended(sample, t, context).sample, unet(sample, t, context).sample)
    randomize_layers_(extended, ".space_time_attention.", std=0.3)
    changed = sample.clone()
    changed[:, :, 3:] += torch.randn_like(changed[:, :, 3:])
    with torch.no_grad():
        out, later = extended(sample, t, context).sample, extended(changed, t, context).sample
    assert (out - unet(sample, t, context).sample).abs().max() > 1e-3
    assert torch.equal(later[:, :, :3], out[:, :, :3])
    extended.save_pretrained(tmp_path / "u")
    loaded = MagicVideoUNet3D.from_pretrained(tmp_path / "u").eval()
    assert tuple(loaded.config.space_time_attention) == flags
    with torch.no_grad():
        assert torch.equal(loaded(sample, t, context).sample, out)
    extended.set_temporal_attention("bidirectional", scope="space_time")
    extended.set_temporal_attention(scope="position")  # a scope switch leaves the branches' scope alone
    from magicvideo.models.unet_3d_blocks import SpatioTemporalTransformer

    branches = [m.space_time_attention for m in extended.modules()
                if isinstance(m, SpatioTemporalTransformer) and m.space_time_attention is not None]
    assert branches and all((b.mode, b.scope) == ("bidirectional", "space_time") for b in branches)
    with pytest.raises(ValueError, match="one flag per down block"):
        MagicVideoUNet3D(**TINY_UNET, num_frames=FRAMES, space_time_attention=(True,))


def test_spatial_position_encoding_tells_space_time_tokens_apart_and_switches_without_new_weights(tmp_path):
    """spatial_position_encoding: each space-time token also carries a sinusoidal (row, column) code.
    Without it, space-time attention of a map whose positions all hold the same token gives the same
    output everywhere; with it, the positions differ. It leaves the per-position scope exactly as it
    is, a zero-initialised branch still starts exact, and it saves / loads with the model."""
    from magicvideo.models.temporal_attention import DirectedTemporalAttention, spatial_position_encoding

    codes = spatial_position_encoding(3, 4, 16)
    assert codes.shape == (12, 16) and len({tuple(row.tolist()) for row in codes}) == 12
    assert torch.equal(codes[4 * 1 + 2, 8:], codes[2, 8:])  # same column: same column half
    layer = randomize_(DirectedTemporalAttention(16, 4, "directed", "space_time"), seed=3, std=0.3)
    x = torch.randn(2 * FRAMES, 16, 1, 1, generator=torch.Generator().manual_seed(0)).expand(-1, -1, 3, 3)
    with torch.no_grad():
        flat = layer(x, FRAMES)
        layer.spatial_position = True
        placed = layer(x, FRAMES)
    assert torch.allclose(flat, flat[..., :1, :1].expand_as(flat), atol=1e-6)
    assert (placed - placed[..., :1, :1]).abs().amax() > 1e-3
    layer.scope = "position"
    per_position = DirectedTemporalAttention(16, 4, "directed", "position")
    per_position.load_state_dict(layer.state_dict())
    assert torch.equal(layer(x, FRAMES), per_position(x, FRAMES))

    unet = randomize_(MagicVideoUNet3D(**TINY_UNET, num_frames=FRAMES).eval(), seed=1, std=0.1)
    sample, t, context = inputs()
    extended = unet.with_new_layers(space_time_attention=True).eval()
    extended.set_temporal_attention(spatial_position=True)
    with torch.no_grad():
        assert torch.equal(extended(sample, t, context).sample, unet(sample, t, context).sample)
    randomize_layers_(extended, ".space_time_attention.", std=0.3)
    with torch.no_grad():
        out = extended(sample, t, context).sample
    extended.save_pretrained(tmp_path / "u")
    loaded = MagicVideoUNet3D.from_pretrained(tmp_path / "u").eval()
    assert loaded.config.spatial_position_encoding is True
    with torch.no_grad():
        assert torch.equal(loaded(sample, t, context).sample, out)
        loaded.set_temporal_attention(spatial_position=False)
        assert (loaded(sample, t, context).sample - out).abs().max() > 1e-4
    with pytest.raises(ValueError, match="multiple of 4"):
        DirectedTemporalAttention(18, 2, "directed", "space_time", spatial_position=True)


def test_causal_temporal_convolution_starts_exact_stays_causal_reaches_other_positions_and_round_trips(tmp_path):
    """temporal_convolution (beyond the paper, issue #13): a zero-initialised causal 3 x 3 x 3 convolution
    beside every res-block of the flagged levels. Fresh, the model computes exactly what the model without
    it computes; trained (here randomised), output frame p depends only on frames p - 2 ... p, at other
    positions too (a moving subject is elsewhere in the frames before)."""
    from magicvideo.models.temporal_convolution import CausalTemporalConvolution

    plain = randomize_(MagicVideoUNet3D(**TINY_UNET, num_frames=FRAMES).eval(), seed=1, std=0.1)
    unet = plain.with_new_layers(temporal_convolution=True).eval()
    missing = set(unet.state_dict()) - set(plain.state_dict())
    assert missing and all(".temporal_convolution." in name for name in missing)
    assert missing <= set(unet.new_parameter_names())
    assert any(name.startswith("mid_block.resnets.") for name in missing)
    sample, t, context = inputs()
    with torch.no_grad():
        assert torch.equal(unet(sample, t, context).sample, plain(sample, t, context).sample)
    randomize_layers_(unet, ".temporal_convolution.", std=0.1)
    with torch.no_grad():
        out, later = unet(sample, t, context).sample, unet(change_from(sample, 3), t, context).sample
    assert (out - plain(sample, t, context).sample).abs().max() > 1e-3
    assert torch.allclose(out[:, :, :3], later[:, :, :3], atol=1e-6, rtol=0)
    assert (out[:, :, 3:] - later[:, :, 3:]).abs().max() > 1e-2

    layer = randomize_(CausalTemporalConvolution(8, norm_groups=4), seed=2, std=0.3)
    x = torch.randn(5, 8, 5, 5)  # one clip of 5 frames
    poked = x.clone()
    poked[1, :, 0, 0] += 1.0  # frame 1, a corner
    with torch.no_grad():
        change = (layer(poked, 5) - layer(x, 5)).abs().amax(dim=1)  # (frames, H, W)
    assert change[0].max() == 0 == change[4].max()  # the frame before, and frames beyond the 3-frame kernel
    assert change[1:4].min() > 0  # frames 1-3 everywhere: the per-frame norm, then the 3 x 3 kernel

    flags = (False,) * (len(TINY_UNET["down_block_types"]) - 1) + (True,)
    unet.save_pretrained(tmp_path / "u")
    loaded = MagicVideoUNet3D.from_pretrained(tmp_path / "u").eval()
    assert loaded.config.temporal_convolution is True
    with torch.no_grad():
        assert torch.equal(loaded(sample, t, context).sample, out)
    partial = MagicVideoUNet3D(**TINY_UNET, num_frames=FRAMES, temporal_convolution=flags)
    assert not any(name.startswith("down_blocks.0.") and ".temporal_convolution." in name for name in partial.state_dict())
    with pytest.raises(ValueError, match="one flag per down block"):
        MagicVideoUNet3D(**TINY_UNET, num_frames=FRAMES, temporal_convolution=(True,))
    with pytest.raises(ValueError, match="add no layers"):
        plain.with_new_layers(temporal_attention="bidirectional")


def test_relative_frame_positions_depend_on_frame_distance_only_and_stay_causal(tmp_path):
    """temporal_position_encoding="relative" (beyond the paper, issue #13): rotary q / k, so a logit
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
    space_time = randomize_(DirectedTemporalAttention(16, 4, "directed", "space_time", True, "relative"), seed=5, std=0.3)
    clip = torch.randn(5, 16, 3, 3, generator=g)
    changed = torch.cat([clip[:3], torch.randn(2, 16, 3, 3, generator=g)])
    with torch.no_grad():
        assert torch.allclose(space_time(clip, 5)[:3], space_time(changed, 5)[:3], atol=1e-6)

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
