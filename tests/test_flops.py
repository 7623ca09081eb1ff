"""FLOP counting (`magicvideo.flops`, `magicvideo flops`): known answers and consistency."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention
from torch import nn

from magicvideo import MagicVideoUNet3D
from magicvideo.cli import main
from magicvideo.flops import count_flops, count_flops_by_kind, magicvideo_unet, vdm_unet
from magicvideo.models.temporal_attention import DirectedTemporalAttention

TINY = dict(
    block_out_channels=(32, 64),
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    layers_per_block=1,
    cross_attention_dim=24,
    attention_head_dim=8,
    norm_num_groups=8,
    temporal_attention_heads=4,
)


def hand_count(model: nn.Module, *args, **kwargs) -> int:
    """FLOPs by hand: 2 x MACs of every conv and linear, 4 * N * Lq * Lk * width per attention."""
    total = 0

    def conv(module, inputs, output):
        nonlocal total
        kh, kw = module.kernel_size
        total += 2 * output.numel() * module.in_channels // module.groups * kh * kw

    def linear(module, inputs, output):
        nonlocal total
        total += 2 * output.numel() * module.in_features

    def attention(module, args, kwargs, output):
        nonlocal total
        hidden = args[0] if args else kwargs["hidden_states"]
        context = kwargs.get("encoder_hidden_states")
        keys = hidden.shape[1] if context is None else context.shape[1]
        total += 4 * hidden.shape[0] * hidden.shape[1] * keys * module.to_q.out_features

    def temporal(module, inputs, output):
        nonlocal total
        x, frames = inputs[:2]
        positions = x.shape[0] // frames * x.shape[2] * x.shape[3]
        total += 4 * positions * frames**2 * x.shape[1]

    handles = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear))
        elif isinstance(module, Attention):
            handles.append(module.register_forward_hook(attention, with_kwargs=True))
        elif isinstance(module, DirectedTemporalAttention):
            handles.append(module.register_forward_hook(temporal))
    with torch.no_grad():
        model(*args, **kwargs)
    for handle in handles:
        handle.remove()
    return total


def test_conv2d_known_answer():
    conv = nn.Conv2d(3, 8, kernel_size=3, padding=1)
    expected = 2 * (2 * 8 * 10 * 10) * 3 * 3 * 3  # 2 x (output elements) x (MACs per output element)
    assert count_flops(conv, torch.randn(2, 3, 10, 10)) == expected
    with torch.device("meta"):
        assert count_flops(nn.Conv2d(3, 8, 3, padding=1), torch.empty(2, 3, 10, 10)) == expected


def test_cpu_attention_is_counted():
    # FlopCounterMode alone counts 0 for CPU's flash-attention kernel; count_flops maps it.
    q, k, v = torch.randn(2, 4, 10, 16), torch.randn(2, 4, 7, 16), torch.randn(2, 4, 7, 16)
    expected = 4 * 2 * 4 * 10 * 7 * 16
    assert count_flops(F.scaled_dot_product_attention, q, k, v) == expected
    assert count_flops_by_kind(F.scaled_dot_product_attention, q, k, v)["attention"] == expected
    assert count_flops(F.scaled_dot_product_attention, q.to("meta"), k.to("meta"), v.to("meta")) == expected


@pytest.mark.parametrize("mode", ["directed", "bidirectional", "none"])
def test_tiny_unet_matches_hand_formula(mode):
    torch.manual_seed(0)
    model = MagicVideoUNet3D(**TINY, num_frames=4, temporal_attention=mode).eval()
    sample, context = torch.randn(1, 4, 3, 16, 16), torch.randn(1, 5, 24)
    expected = hand_count(model, sample, 7, context, fps=6.0)
    assert count_flops(model, sample, 7, context, fps=6.0) == expected
    with torch.device("meta"):
        meta_model = MagicVideoUNet3D(**TINY, num_frames=4, temporal_attention=mode)
        assert count_flops(meta_model, sample.to("meta"), 7, context.to("meta"), fps=6.0) == expected


def _meta_flops(frames: int, temporal_attention: str) -> int:
    with torch.device("meta"):
        model = magicvideo_unet(num_frames=8, temporal_attention=temporal_attention)
        return count_flops(model, torch.empty(1, 4, frames, 32, 32), 10, torch.empty(1, 77, 768), fps=8.0)


def test_per_frame_part_is_linear_in_frames_and_temporal_part_quadratic():
    flops = {f: _meta_flops(f, "none") for f in (2, 4, 6)}
    assert flops[6] - flops[4] == flops[4] - flops[2] > 0  # per-frame work: exactly linear in frames
    directed = {f: _meta_flops(f, "directed") for f in (2, 4, 6)}
    # Attention over F frames costs 4 * F^2 * C per spatial position: second difference over
    # F = 2, 4, 6 is 4 * C * HW * (36 - 2 * 16 + 4) per temporal layer. SD 1.5 layout on 32x32 latents:
    # 5 transformers (2 down + 3 up) at 320ch 32x32, 640ch 16x16, 1280ch 8x8, and 1 at 1280ch 4x4 (mid).
    c_hw = 5 * (320 * 32**2 + 640 * 16**2 + 1280 * 8**2) + 1280 * 4**2
    assert directed[6] - 2 * directed[4] + directed[2] == 4 * c_hw * 8


def test_vdm_style_attends_only_at_low_resolution():
    tokens = []
    with torch.device("meta"):
        model = vdm_unet(256, num_frames=2)
        for module in model.modules():
            if isinstance(module, Attention):
                module.register_forward_hook(lambda m, a, kw, out: tokens.append(a[0].shape[1]), with_kwargs=True)
        count_flops(model, torch.empty(1, 3, 2, 256, 256), 10, torch.empty(1, 77, 768))
    assert tokens and max(tokens) == 32 * 32


def test_cli_json(capsys):
    assert main(["flops", "--json", "--frames", "4", "--steps", "10"]) == 0
    report = json.loads(capsys.readouterr().out)
    for key in ("magicvideo_step_flops", "vdm_step_flops", "modelscope_step_flops",
                "ratio_vdm_over_magicvideo", "ratio_modelscope_over_magicvideo",
                "magicvideo_clip_flops", "vdm_clip_flops", "modelscope_clip_flops", "resolution", "frames"):
        assert key in report
    assert (report["frames"], report["resolution"], report["latent_resolution"], report["steps"]) == (4, 256, 32, 10)
    ours = report["magicvideo_step_flops"]
    assert report["ratio_vdm_over_magicvideo"] == report["vdm_step_flops"] / ours
    assert report["ratio_modelscope_over_magicvideo"] == report["modelscope_step_flops"] / ours
    for name in ("magicvideo", "vdm", "modelscope"):
        assert report[f"{name}_clip_flops"] == 10 * report[f"{name}_step_flops"]
        assert sum(report[f"{name}_step_breakdown"].values()) == report[f"{name}_step_flops"]
    assert report["pixel_over_latent_area"] == 64


def test_cli_rejects_bad_resolution(capsys):
    assert main(["flops", "--resolution", "100"]) == 2
    assert "--resolution" in capsys.readouterr().err
