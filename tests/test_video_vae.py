"""The VideoVAE (models/video_vae.py), its decoding of scaled latents (vae.py), its training task and `magicvideo autoencode`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import make_tiny_pipeline, randomize_
from diffusers import AutoencoderKL
from einops import rearrange

from magicvideo.errors import InvalidArgumentError
from magicvideo.models.video_vae import VideoAutoencoderKL
from magicvideo.vae import decode_latents_video

WEIGHTS = Path(__file__).resolve().parents[1] / "src" / "magicvideo" / "weights"
BUNDLED_VAE = WEIGHTS / "digits" / "vae"  # the shipped VideoVAE
IMAGE_VAE = WEIGHTS / "digits-interpolation" / "vae"  # the image VAE it was trained from

# Our digits VAE's layout (4 levels, 1 layer per block) at tiny widths.
SMALL_OURS = dict(block_out_channels=[8, 16, 16, 16], down_block_types=["DownEncoderBlock2D"] * 4,
                  up_block_types=["UpDecoderBlock2D"] * 4, layers_per_block=1, latent_channels=4, norm_num_groups=4,
                  sample_size=32)
# Stable Diffusion's KL-f8 layout (4 levels, 2 layers per block, 128-256-512-512) at tiny widths.
SMALL_SD = dict(block_out_channels=[8, 16, 32, 32], down_block_types=["DownEncoderBlock2D"] * 4,
                up_block_types=["UpDecoderBlock2D"] * 4, layers_per_block=2, latent_channels=4, norm_num_groups=4,
                sample_size=32, scaling_factor=0.18215)


def image_vae(layout: dict, seed: int = 0) -> AutoencoderKL:
    torch.manual_seed(seed)
    return randomize_(AutoencoderKL(**layout), seed=seed, std=0.05).eval()


def image_decode(vae: AutoencoderKL, latents: torch.Tensor) -> torch.Tensor:
    frames = vae.decode(rearrange(latents, "b c f h w -> (b f) c h w")).sample
    return rearrange(frames, "(b f) c h w -> b c f h w", b=latents.shape[0])


def latents_for(vae, frames: int = 6, batch: int = 2, size: int = 4, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, vae.config.latent_channels, frames, size, size, generator=g)


@pytest.mark.parametrize("layout", [SMALL_OURS, SMALL_SD], ids=["ours", "sd"])
def test_fresh_video_vae_decodes_like_the_image_vae(layout):
    vae = image_vae(layout)
    video_vae = VideoAutoencoderKL.from_image_vae(vae, temporal_alignment=2).eval()
    z = latents_for(vae)
    with torch.no_grad():
        expected = image_decode(vae, z)
        assert (video_vae.decode_video(z) - expected).abs().max() <= 1e-5
        assert (video_vae.decode_video(z, chunk_size=2) - expected).abs().max() <= 1e-5
        # the plain decode of 4-D latents stays AutoencoderKL's
        frames = rearrange(z, "b c f h w -> (b f) c h w")
        assert torch.equal(video_vae.decode(frames).sample, vae.decode(frames).sample)
    # the encoder is the image VAE's
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(video_vae.encode(x).latent_dist.mean, vae.encode(x).latent_dist.mean)


def test_bundled_vae_converts_exactly():
    vae = AutoencoderKL.from_pretrained(IMAGE_VAE).eval()
    video_vae = VideoAutoencoderKL.from_image_vae(vae).eval()
    z = latents_for(vae, frames=5, batch=1, size=8)
    with torch.no_grad():
        assert (video_vae.decode_video(z) - image_decode(vae, z)).abs().max() <= 1e-5


def trained_like(layout=SMALL_OURS, seed: int = 3, **temporal) -> VideoAutoencoderKL:
    """A VideoVAE with every parameter (decoder and temporal layers) randomised."""
    video_vae = VideoAutoencoderKL.from_image_vae(image_vae(layout, seed), **temporal)
    return randomize_(video_vae, seed=seed, std=0.1).eval()


@pytest.mark.parametrize("stages", [["mid", "up0"], ["in", "up1", "up3"], ["mid", "up1", "up3"]])
def test_causal_every_parameter_randomised(stages):
    video_vae = trained_like(temporal_layers=stages, temporal_window=16, temporal_alignment=2)
    z = latents_for(video_vae, frames=7)
    with torch.no_grad():
        before = video_vae.decode_video(z)
        for k in (1, 3, 6):
            changed = z.clone()
            changed[:, :, k:] = torch.randn_like(changed[:, :, k:])
            after = video_vae.decode_video(changed)
            assert torch.equal(after[:, :, :k], before[:, :, :k]), k
            assert (after[:, :, k] - before[:, :, k]).abs().max() > 1e-3  # the layers are active
    # and not the identity: the temporal layers change what the image decoder alone gives
    with torch.no_grad():
        assert (before - video_vae.decode_video(z, temporal=False)).abs().max() > 1e-3


@pytest.mark.parametrize("window,chunk", [(3, 1), (3, 4), (16, 5), (2, 3), (3, 2)])
def test_chunked_equals_whole(window, chunk):
    video_vae = trained_like(temporal_layers=["mid", "up1", "up3"], temporal_window=window, temporal_alignment=2)
    z = latents_for(video_vae, frames=11)
    with torch.no_grad():
        whole = video_vae.decode_video(z)
        chunked = video_vae.decode_video(z, chunk_size=chunk)
    # the same computation in different batch shapes: equal up to float32 rounding, which varies
    # with the CPU's kernels (2.4e-5 seen on CI); 1e-4 is 78x below one 8-bit level (2/255)
    assert (whole - chunked).abs().max() <= 1e-4


def test_recency_bias_known_answer():
    """A fresh layer's attention bias is the recency term -slope_h * (p - q) inside the causal window
    (slopes 2, 1, 1/2, 1/4 for 4 heads) and -inf outside; a chunk's queries see the cached past."""
    from magicvideo.models.video_vae import WindowedTemporalAttention

    layer = WindowedTemporalAttention(8, num_heads=4, window=3)
    bias = layer.attention_bias(queries=2, past=2, device="cpu", dtype=torch.float32)  # query frames 2, 3; keys 0..3
    slopes = torch.tensor([2.0, 1.0, 0.5, 0.25])
    distance = torch.tensor([[2.0, 1.0, 0.0, -1.0], [3.0, 2.0, 1.0, 0.0]])
    allowed = (distance >= 0) & (distance < 3)
    expected = (-slopes[:, None, None] * distance).masked_fill(~allowed, float("-inf"))
    assert torch.allclose(bias, expected)


def test_move_is_bicubic_with_repeated_edges():
    """`move` (per-frame crop + separable 4-tap filter) equals grid_sample's bicubic mode with border
    padding; integer shifts translate exactly."""
    import torch.nn.functional as F

    from magicvideo.models.video_vae import move

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 9, 11, 5, generator=g)
    shift = torch.randn(2, 3, 2, generator=g) * 3
    b, f, h, w, c = x.shape
    dy, dx = shift.reshape(b * f, 2, 1, 1).unbind(1)
    grid_x = (2 * (torch.arange(w)[None, None] - dx) + 1) / w - 1
    grid_y = (2 * (torch.arange(h)[None, :, None] - dy) + 1) / h - 1
    grid = torch.stack(torch.broadcast_tensors(grid_x, grid_y), -1)
    expected = F.grid_sample(rearrange(x, "b f h w c -> (b f) c h w"), grid, mode="bicubic", padding_mode="border",
                             align_corners=False)
    assert (move(x, shift) - rearrange(expected, "(b f) c h w -> b f h w c", b=b)).abs().max() <= 1e-5
    assert torch.equal(move(x, torch.zeros_like(shift)), x)
    moved = move(x, torch.tensor([2.0, -1.0]).expand(b, f, 2))
    assert torch.equal(moved[:, :, 2:, :-1], x[:, :, :-2, 1:])


def test_aligned_attention_sees_a_moving_clip_as_a_still_one():
    """One aligned layer, every parameter randomised: a clip whose content moves by whole pixels, with
    its positions, gives (away from the edges) the same output as the still clip of its last frame: the
    earlier frames are moved onto the current one before they are attended to."""
    from magicvideo.models.video_vae import WindowedTemporalAttention

    layer = randomize_(WindowedTemporalAttention(8, num_heads=2, window=3), seed=5, std=0.3).eval()
    g = torch.Generator().manual_seed(0)
    canvas = torch.randn(1, 8, 20, 20, generator=g)
    steps = [(0, 0), (1, 2), (2, 3)]  # content position (dy, dx) in frames 0, 1, 2
    moving = torch.cat([torch.roll(canvas, s, dims=(2, 3)) for s in steps])[..., 3:17, 3:17]  # 3 frames, 14 x 14
    still = moving[2:].expand(3, -1, -1, -1)
    positions = torch.tensor([steps], dtype=torch.float32)
    with torch.no_grad():
        a = layer(moving, 3, positions=positions)[2]
        b = layer(still, 3, positions=torch.zeros_like(positions))[2]
        unaligned = layer(moving, 3, positions=torch.zeros_like(positions))[2]
    inner = (slice(None), slice(4, -1), slice(4, -1))  # the pixels whose earlier positions are inside the frame
    assert (a[inner] - b[inner]).abs().max() <= 1e-5
    assert (unaligned[inner] - b[inner]).abs().max() > 1e-2  # without the positions it does not hold


def test_gated_layer_open_and_uniform_is_the_aligned_running_mean():
    """Known answer: gate 1 everywhere (gate weights 0, bias 1) and uniform attention (q, k, the
    position bias and the recency slopes 0): frame p's output is the mean of frames p - window + 1 .. p, each moved onto p
    (here by whole pixels, compared away from the edges)."""
    from magicvideo.models.video_vae import WindowedTemporalAttention

    layer = WindowedTemporalAttention(4, num_heads=2, window=3).eval()
    for linear in (layer.to_q, layer.to_k):
        torch.nn.init.zeros_(linear.weight)
    torch.nn.init.zeros_(layer.recency_slope)
    torch.nn.init.ones_(layer.to_out.bias)
    g = torch.Generator().manual_seed(1)
    canvas = torch.randn(5, 4, 20, 20, generator=g)  # content differs from frame to frame
    steps = [(0, 0), (1, 0), (1, 2), (3, 2), (4, 4)]
    clip = torch.stack([torch.roll(canvas[i], s, dims=(1, 2)) for i, s in enumerate(steps)])
    with torch.no_grad():
        out = layer(clip, 5, positions=torch.tensor([steps], dtype=torch.float32))
    for p in range(5):
        earlier = range(max(0, p - 2), p + 1)
        moved = [torch.roll(clip[q], (steps[p][0] - steps[q][0], steps[p][1] - steps[q][1]), dims=(1, 2)) for q in earlier]
        expected = torch.stack(moved).mean(0)
        assert (out[p, :, 5:, 5:] - expected[:, 5:, 5:]).abs().max() <= 1e-5, p


def test_window_bounds_the_past():
    """A frame depends on at most layers * (window - 1) earlier frames."""
    video_vae = trained_like(temporal_window=2, temporal_alignment=2)  # 2 layers: frames t-2 .. t
    z = latents_for(video_vae, frames=6)
    changed = z.clone()
    changed[:, :, 0] += 1.0
    with torch.no_grad():
        a, b = video_vae.decode_video(z), video_vae.decode_video(changed)
    assert (a[:, :, 2] - b[:, :, 2]).abs().max() > 1e-4
    assert torch.equal(a[:, :, 3:], b[:, :, 3:])


def test_image_decoder_flag_ignores_the_temporal_layers():
    video_vae = trained_like()
    plain = AutoencoderKL.from_config({k: v for k, v in video_vae.config.items() if not k.startswith("temporal")})
    plain.load_state_dict({k: v for k, v in video_vae.state_dict().items() if not k.startswith("temporal_attentions.")})
    z = latents_for(video_vae)
    with torch.no_grad():
        assert (video_vae.decode_video(z, temporal=False, chunk_size=4) - image_decode(plain.eval(), z)).abs().max() <= 1e-6
        # the pipeline hook: scaled latents
        scaled = z * video_vae.config.scaling_factor
        assert torch.allclose(decode_latents_video(video_vae, scaled, decoder="image"), image_decode(plain, z), atol=1e-5)
        assert torch.allclose(decode_latents_video(video_vae, scaled, decoder="video", chunk_size=2),
                              video_vae.decode_video(z), atol=1e-5)
        # an image VAE decodes frame by frame with either setting
        assert torch.allclose(decode_latents_video(plain, scaled), image_decode(plain, z), atol=1e-5)
    with pytest.raises(InvalidArgumentError):
        decode_latents_video(video_vae, scaled, decoder="temporal")


def test_save_load_round_trip(tmp_path):
    video_vae = trained_like(temporal_layers=["mid", "up1"], temporal_attention_heads=2, temporal_window=5,
                             temporal_alignment=3)
    video_vae.save_pretrained(tmp_path / "vae")
    loaded = VideoAutoencoderKL.from_pretrained(tmp_path / "vae").eval()
    assert list(loaded.config.temporal_layers) == ["mid", "up1"]
    assert loaded.config.temporal_attention_heads == 2 and loaded.config.temporal_window == 5
    assert loaded.config.temporal_alignment == 3
    z = latents_for(video_vae)
    with torch.no_grad():
        assert torch.equal(loaded.decode_video(z), video_vae.decode_video(z))
    # a plain AutoencoderKL still loads the folder (and ignores the temporal layers)
    plain = AutoencoderKL.from_pretrained(tmp_path / "vae").eval()
    with torch.no_grad():
        assert torch.equal(image_decode(plain, z), video_vae.decode_video(z, temporal=False))


def test_pipeline_folder_holds_a_video_vae(tmp_path):
    from magicvideo import MagicVideoPipeline

    pipe = make_tiny_pipeline(num_frames=4)
    pipe.vae = VideoAutoencoderKL.from_image_vae(pipe.vae)
    pipe.register_modules(vae=pipe.vae)
    pipe.save_pretrained(tmp_path / "pipe")
    loaded = MagicVideoPipeline.from_pretrained(tmp_path / "pipe")
    assert isinstance(loaded.vae, VideoAutoencoderKL)


def test_bad_settings_are_named():
    vae = image_vae(SMALL_OURS)
    with pytest.raises(InvalidArgumentError, match="temporal_layers"):
        VideoAutoencoderKL.from_image_vae(vae, temporal_layers=["up9"])
    with pytest.raises(InvalidArgumentError, match="temporal_attention_heads"):
        VideoAutoencoderKL.from_image_vae(vae, temporal_attention_heads=3)
    with pytest.raises(InvalidArgumentError, match="temporal_window"):
        VideoAutoencoderKL.from_image_vae(vae, temporal_window=0)
    with pytest.raises(InvalidArgumentError, match="temporal_alignment"):
        VideoAutoencoderKL.from_image_vae(vae, temporal_alignment=0)
    with pytest.raises(InvalidArgumentError, match="not a VideoVAE setting"):
        VideoAutoencoderKL.from_image_vae(vae, temporal_heads=2)
    with pytest.raises(InvalidArgumentError, match="chunk_size"):
        VideoAutoencoderKL.from_image_vae(vae).decode_video(latents_for(vae), chunk_size=0)


def test_removed_settings_are_refused_naming_them(tmp_path):
    """The settings of the variants that were not shipped are gone: naming one fails with one line
    that names it, from Python and from a saved config; the shipped VideoVAE's config names none."""
    import json

    from magicvideo.models.video_vae import REMOVED_SETTINGS
    from magicvideo.vae import load_vae

    vae = image_vae(SMALL_OURS)
    for key, value in (("temporal_radius", 1), ("temporal_recency_bias", True), ("temporal_gated", True)):
        with pytest.raises(InvalidArgumentError, match="removed") as err:
            VideoAutoencoderKL.from_image_vae(vae, **{key: value})
        assert err.value.argument == key and "\n" not in str(err.value)
    VideoAutoencoderKL.from_image_vae(vae).save_pretrained(tmp_path / "vae")
    config = tmp_path / "vae" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "temporal_gated": True}))
    with pytest.raises(InvalidArgumentError, match="^temporal_gated: this VideoVAE setting was removed"):
        load_vae(tmp_path / "vae")
    assert not set(VideoAutoencoderKL.load_config(BUNDLED_VAE)) & set(REMOVED_SETTINGS)
    assert isinstance(load_vae(BUNDLED_VAE), VideoAutoencoderKL)


# -- training ---------------------------------------------------------------------------------
def video_vae_config(tmp: Path, **video_vae):
    import yaml

    from _train_utils import make_tiny_vae
    from magicvideo.training.synthetic import write_synthetic_dataset

    if not (tmp / "vae").exists():
        make_tiny_vae(tmp / "vae")
        make_tiny_pipeline(num_frames=4).save_pretrained(tmp / "pipe")
        write_synthetic_dataset(tmp / "data", 4, num_frames=10, size=16, seed=1)
    config = {
        "task": "video_vae",
        "video_vae": {"init": str(tmp / "vae"), "temporal_attention_heads": 2, "temporal_window": 3,
                      "temporal_alignment": 2, "generated_fraction": 0.5, "generated_pipeline": str(tmp / "pipe"), "sample_clips": 1,
                      **video_vae},
        "data": {"manifest": str(tmp / "data" / "captions.csv"), "num_frames": 4, "resolution": 16,
                 "min_stride": 1, "max_stride": 2},
        "train": {"batch_size": 2, "max_steps": 3, "learning_rate": 1e-2, "warmup_steps": 0, "seed": 3, "ema": False},
        "output": {"output_dir": str(tmp / "run"), "checkpoint_every": 1, "keep_checkpoints": 5},
    }
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def train(path: Path, resume: bool = False, **overrides) -> Path:
    from magicvideo.training import load_config
    from magicvideo.training import train as run

    return run(load_config(path, [f"{k}={v}" for k, v in overrides.items()]), resume=resume)


@pytest.mark.parametrize("train_decoder", [False, True])
def test_training_keeps_the_encoder(tmp_path, train_decoder):
    from safetensors.torch import load_file

    config = video_vae_config(tmp_path, train_decoder=train_decoder, warp_weight=1.0 if train_decoder else 0.0,
                              generated_target="image_decoder", temporal_layers=["mid", "up0"])
    final = train(config)
    before = load_file(tmp_path / "vae" / "diffusion_pytorch_model.safetensors")
    after = load_file(final / "diffusion_pytorch_model.safetensors")
    for name, value in before.items():
        if name.startswith(("encoder.", "quant_conv.")) or not train_decoder:
            assert torch.equal(after[name], value), name
    changed = [n for n in before if not torch.equal(after[n], before[n])]
    assert bool(changed) == train_decoder and all(n.startswith(("decoder.", "post_quant_conv.")) for n in changed)
    assert any(not torch.equal(v, torch.zeros_like(v)) for n, v in after.items() if n.endswith("to_out.weight"))
    assert (tmp_path / "run" / "samples" / "step-00000003" / "contact-sheet.png").is_file()
    config = VideoAutoencoderKL.from_pretrained(final).config
    assert (list(config.temporal_layers), config.temporal_window, config.temporal_alignment) == (["mid", "up0"], 3, 2)


def test_resume_continues_the_same_run(tmp_path):
    from safetensors.torch import load_file

    config = video_vae_config(tmp_path)
    whole = load_file(train(config, **{"output.output_dir": str(tmp_path / "a")}) / "diffusion_pytorch_model.safetensors")
    train(config, **{"output.output_dir": str(tmp_path / "b"), "train.max_steps": 2})
    resumed = load_file(train(config, resume=True, **{"output.output_dir": str(tmp_path / "b")})
                        / "diffusion_pytorch_model.safetensors")
    for name, value in whole.items():
        assert torch.allclose(resumed[name], value, atol=1e-6), name


# -- CLI --------------------------------------------------------------------------------------
def test_autoencode_cli(tmp_path, capsys):
    import numpy as np

    from magicvideo.cli import main
    from magicvideo.video_io import read_video, write_video

    clip = np.zeros((6, 64, 64, 3), dtype=np.float32)
    for f in range(6):
        clip[f, 20:40, 10 + 3 * f:26 + 3 * f] = 1.0
    write_video(tmp_path / "in.mp4", clip, 8)
    vae_dir = tmp_path / "model" / "vae"
    VideoAutoencoderKL.from_image_vae(AutoencoderKL.from_pretrained(IMAGE_VAE)).save_pretrained(vae_dir)
    for decoder, model in (("image", None), ("video", None), ("video", str(vae_dir)), ("image", str(vae_dir.parent))):
        out = tmp_path / f"out-{decoder}.mp4"
        args = ["autoencode", str(tmp_path / "in.mp4"), "--out", str(out), "--decoder", decoder]
        assert main(args + (["--model", model] if model else [])) == 0
        frames, fps = read_video(out)
        assert frames.shape == (6, 64, 64, 3) and fps == 8
    # errors: one line, exit code 2
    (tmp_path / "bad.mp4").write_text("not a video")
    for args, message in (
        ([str(tmp_path / "bad.mp4")], "cannot read a video"),
        ([str(tmp_path / "missing.mp4")], "no such file"),
        ([str(tmp_path / "in.mp4"), "--decoder", "video", "--model", str(IMAGE_VAE)], "image VAE"),
        ([str(tmp_path / "in.mp4"), "--model", str(tmp_path)], "holds no VAE"),
        ([str(tmp_path / "in.mp4"), "--model", str(BUNDLED_VAE.parent / "unet")], "not a VAE"),
    ):
        capsys.readouterr()
        assert main(["autoencode", *args, "--out", str(tmp_path / "x.mp4")]) == 2
        assert message in capsys.readouterr().err


def task_loss(tmp_path, **video_vae) -> float:
    """The VideoVAE task's loss on the first two clips of the synthetic data, fresh model."""
    from types import SimpleNamespace

    from torch.utils.data import default_collate

    from magicvideo.training import load_config
    from magicvideo.training.video_vae_task import VideoVAETask

    task = VideoVAETask(load_config(video_vae_config(tmp_path, **video_vae)), SimpleNamespace(device=torch.device("cpu")))
    items = iter(task.dataset(0, 1, 0))
    batch = default_collate([next(items) for _ in range(2)])
    with torch.no_grad():
        return task.loss(task.model, batch).item()


def test_warp_term_applies_to_the_chosen_clips(tmp_path):
    """`warp_clips: generated` adds nothing when no clip is generated-like (the loss equals the one
    without the term, exactly), `all` adds a positive term; on generated-like clips with the image
    decoder as target (reconstruction term zero for a fresh model) the loss is the warp term alone."""
    plain = task_loss(tmp_path, generated_fraction=0.0, difference_weight=0.0)
    assert task_loss(tmp_path, generated_fraction=0.0, difference_weight=0.0, warp_weight=1.0,
                     warp_clips="generated") == plain
    assert task_loss(tmp_path, generated_fraction=0.0, difference_weight=0.0, warp_weight=1.0, warp_clips="all") > plain
    generated = dict(generated_fraction=1.0, difference_weight=0.0, generated_target="image_decoder",
                     generated_min_timestep=200, generated_max_timestep=400)
    assert task_loss(tmp_path, **generated) <= 1e-6
    assert task_loss(tmp_path, **generated, warp_weight=1.0) > 1e-4
    with pytest.raises(ValueError, match="warp_clips"):
        task_loss(tmp_path, warp_clips="some")


def test_generated_target_image_decoder(tmp_path):
    """With `generated_target: image_decoder` a generated-like clip's target is the frozen initial
    decoder's decoding of its latents: a fresh VideoVAE (which decodes like it) has zero loss on
    them, while the real clip as target gives a positive one."""
    losses = {target: task_loss(tmp_path, generated_fraction=1.0, generated_target=target, difference_weight=0.0,
                                generated_min_timestep=200, generated_max_timestep=400)
              for target in ("image_decoder", "real")}
    assert losses["image_decoder"] <= 1e-6 < losses["real"]
    with pytest.raises(ValueError, match="generated_target"):
        task_loss(tmp_path, generated_target="other")
