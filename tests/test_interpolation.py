"""The frame-interpolation stage: model conversion, windows, pipeline, training task, CLI (tiny models)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY_UNET, TINY_VAE, randomize_

from magicvideo.cli import main
from magicvideo.errors import InvalidArgumentError
from magicvideo.models.interpolation import (from_keyframe_model, from_unet2d_model, is_interpolation_unet,
                                             output_length, plan_windows, window_layout)
from magicvideo.models.unet_3d import MagicVideoUNet3D
from magicvideo.pipelines.interpolation import MagicVideoInterpolationPipeline
from magicvideo.video_io import read_video, write_video


def tiny_keyframe_unet(num_frames: int = 7) -> MagicVideoUNet3D:
    torch.manual_seed(0)
    return randomize_(MagicVideoUNet3D(**TINY_UNET, num_frames=num_frames).eval(), seed=1, std=0.05)


def make_interpolation_pipeline(num_frames: int = 7, factor: int = 3) -> MagicVideoInterpolationPipeline:
    from _train_utils import tiny_text_encoder
    from diffusers import AutoencoderKL, DDIMScheduler

    text_encoder, tokenizer = tiny_text_encoder()
    unet = randomize_(from_keyframe_model(tiny_keyframe_unet(num_frames)), seed=2, std=0.05).eval()
    torch.manual_seed(0)
    vae = AutoencoderKL(**TINY_VAE).eval()
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False)
    pipe = MagicVideoInterpolationPipeline(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                           scheduler=scheduler, keyframe_stride=factor)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def pipe():
    return make_interpolation_pipeline()


def keyframe_latents(count: int, batch: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 4, count, 4, 4, generator=torch.Generator().manual_seed(seed))


# -- model ------------------------------------------------------------------------------------------


def test_from_keyframe_model_reproduces_the_keyframe_model_before_training():
    keyframe = tiny_keyframe_unet()
    model = from_keyframe_model(keyframe).eval()
    assert model.config.in_channels == 4 + 10 and is_interpolation_unet(model) and not is_interpolation_unet(keyframe)
    sample = torch.randn(2, 4, 7, 8, 8)
    conditioning = torch.randn(2, 10, 7, 8, 8)  # anything: the new input channels start at zero
    context, fps = torch.randn(2, 5, 32), torch.tensor([24.0, 8.0])
    with torch.no_grad():
        expected = keyframe(sample, 500, context, fps=fps).sample
        got = model(torch.cat([sample, conditioning], dim=1), 500, context, fps=fps).sample
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    shared = {k: v for k, v in keyframe.state_dict().items() if k != "conv_in.weight"}
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in shared.items())
    assert torch.equal(state["conv_in.weight"][:, :4], keyframe.state_dict()["conv_in.weight"])
    assert not state["conv_in.weight"][:, 4:].any()


def test_an_inflated_image_unet_converts_too():
    from diffusers import UNet2DConditionModel

    config = {k: v for k, v in TINY_UNET.items()}
    unet2d = UNet2DConditionModel(**config)
    model = from_unet2d_model(unet2d, num_frames=4)
    assert is_interpolation_unet(model) and model.config.num_frames == 4
    with pytest.raises(ValueError, match="already an interpolation model"):
        from_keyframe_model(model)


def test_window_layout_gives_every_frame_both_neighbours():
    keyframes = keyframe_latents(3)
    known, mask, cond = window_layout(keyframes, 3)
    assert known.shape[2] == 7 and mask.tolist() == [True, False, False, True, False, False, True]
    assert torch.equal(cond[:, :4, 4], keyframes[:, :, 1]) and torch.equal(cond[:, 4:8, 4], keyframes[:, :, 2])
    assert cond[0, 8, :, 0, 0].tolist() == pytest.approx([0, 1 / 3, 2 / 3, 0, 1 / 3, 2 / 3, 0])
    assert cond[0, 9, :, 0, 0].tolist() == [1, 0, 0, 1, 0, 0, 1]
    assert torch.equal(known[:, :, 3], keyframes[:, :, 1]) and not known[:, :, 1].any()


def test_windows_share_their_boundary_keyframe():
    assert [(w.first, w.last) for w in plan_windows(16, 3, 16)] == [(0, 5), (5, 10), (10, 15)]
    assert output_length(16, 3) == 46
    assert [(w.first, w.last) for w in plan_windows(4, 3, 7)] == [(0, 2), (2, 3)]
    assert [(w.first, w.last) for w in plan_windows(2, 4, 16)] == [(0, 1)]


# -- pipeline ---------------------------------------------------------------------------------------


def test_returned_keyframes_are_bit_identical(pipe):
    keyframes = keyframe_latents(5, batch=2)
    out = pipe(keyframe_latents=keyframes, num_inference_steps=3, output_type="latent",
               generator=torch.Generator().manual_seed(0)).frames
    assert out.shape == (2, 4, 13, 4, 4)
    assert torch.equal(out[:, :, ::3], keyframes)
    assert not torch.equal(out[:, :, 1], out[:, :, 0])


def test_two_windows_give_the_same_frame_at_their_shared_boundary(pipe):
    keyframes = keyframe_latents(4)  # 3 keyframes per 7-frame window: windows (0..2) and (2..3)
    pipe.scheduler.set_timesteps(3)
    context = pipe.encode_prompt([""], "cpu", 1, False)[0].repeat(2, 1, 1)
    windows_out, windows = pipe.denoise_windows(keyframes, 3, context, torch.full((2,), 24.0), 3, 1.0,
                                                torch.Generator().manual_seed(0))
    assert len(windows) == 2 and windows[0].last == windows[1].first == 2
    first_window_end, second_window_start = windows_out[0, :, 6], windows_out[1, :, 0]
    assert torch.equal(first_window_end, second_window_start)
    assert torch.equal(first_window_end, keyframes[0, :, 2])
    clip = pipe.stitch(windows_out, windows, 3, 1)
    assert clip.shape[2] == 10 and torch.equal(clip[:, :, 6], keyframes[:, :, 2])
    assert torch.equal(clip[:, :, :7], windows_out[:1]) and torch.equal(clip[:, :, 7:], windows_out[1:, :, 1:4])


def test_a_short_last_window_equals_the_same_frames_of_a_full_window(pipe):
    """Padding the last window keeps its real frames exact: directed attention is causal."""
    keyframes = keyframe_latents(3)
    full = pipe(keyframe_latents=keyframes, num_inference_steps=2, output_type="latent",
                generator=torch.Generator().manual_seed(0)).frames
    short = pipe(keyframe_latents=keyframes[:, :, :2], num_inference_steps=2, output_type="latent",
                 generator=torch.Generator().manual_seed(0)).frames
    torch.testing.assert_close(short, full[:, :, :4], rtol=1e-5, atol=1e-5)


def test_video_input_keeps_its_frames_and_guidance_runs(pipe):
    frames = (np.random.default_rng(0).random((3, 16, 16, 3)) * 255).astype(np.uint8)
    out = pipe(video=frames, num_inference_steps=2, guidance_scale=3.0, prompt="a digit", fps=8).frames
    assert out.shape == (1, 7, 16, 16, 3)
    assert np.array_equal(np.round(out[0, ::3] * 255).astype(np.uint8), frames)


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"keyframe_latents": keyframe_latents(1)}, "keyframe_latents"),
        ({"video": np.zeros((1, 16, 16, 3), np.uint8)}, "video"),
        ({"video": np.zeros((3, 18, 16, 3), np.uint8)}, "video"),
        ({"keyframe_latents": keyframe_latents(3), "factor": 1}, "factor"),
        ({"keyframe_latents": keyframe_latents(3), "factor": 2}, "factor"),
        ({"keyframe_latents": keyframe_latents(3), "num_inference_steps": 0}, "num_inference_steps"),
        ({"keyframe_latents": keyframe_latents(3), "fps": 0}, "fps"),
        ({}, "video"),
    ],
)
def test_bad_input_names_the_argument(pipe, kwargs, argument):
    with pytest.raises(InvalidArgumentError) as info:
        pipe(num_inference_steps=kwargs.pop("num_inference_steps", 1), **kwargs)
    assert info.value.argument == argument


def test_a_keyframe_unet_is_refused(pipe):
    with pytest.raises(InvalidArgumentError) as info:
        MagicVideoInterpolationPipeline(unet=tiny_keyframe_unet(), vae=pipe.vae, text_encoder=pipe.text_encoder,
                                        tokenizer=pipe.tokenizer, scheduler=pipe.scheduler)
    assert info.value.argument == "model"


def test_save_and_load_round_trip(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "interp")
    loaded = MagicVideoInterpolationPipeline.from_pretrained(tmp_path / "interp")
    assert loaded.keyframe_stride == 3 and is_interpolation_unet(loaded.unet)


# -- CLI --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pipe_dir(tmp_path_factory, pipe):
    path = tmp_path_factory.mktemp("interp") / "pipeline"
    pipe.save_pretrained(path)
    return path


def test_cli_interpolates_a_clip(pipe_dir, tmp_path, capsys):
    clip = tmp_path / "in.mp4"
    write_video(clip, np.zeros((4, 16, 16, 3), np.uint8), fps=8)
    out = tmp_path / "out.mp4"
    assert main(["interpolate", str(clip), "--out", str(out), "--model", str(pipe_dir), "--steps", "2"]) == 0
    frames, fps = read_video(out)
    assert frames.shape == (10, 16, 16, 3) and fps == pytest.approx(24)


@pytest.mark.parametrize(
    ("make", "args", "message"),
    [
        ("one-frame", [], "IN: "),
        ("garbage", [], "IN: cannot read"),
        ("missing", [], "IN: no such file"),
        ("ok", ["--factor", "1"], "--factor: must be an integer >= 2"),
        ("ok", ["--factor", "4"], "--factor: this model was trained to interpolate by 3"),
        ("ok", ["--steps", "0"], "--steps: must be an integer >= 1"),
        ("ok", ["--strength", "2"], "--strength: must be in (0, 1]"),
        ("ok", ["--model", "KEYFRAME"], "--model: "),
        ("ok", ["--model", "NOWHERE"], "--model: "),
    ],
)
def test_cli_user_mistakes_name_the_flag(pipe_dir, tiny_pipeline_dir, tmp_path, capsys, make, args, message):
    clip = tmp_path / "in.mp4"
    if make == "one-frame":
        write_video(clip, np.zeros((1, 16, 16, 3), np.uint8), fps=8)
    elif make == "garbage":
        clip.write_bytes(b"not a video")
    elif make == "ok":
        write_video(clip, np.zeros((3, 16, 16, 3), np.uint8), fps=8)
    model = ["--model", str(pipe_dir)] if "--model" not in args else []
    args = [str(tiny_pipeline_dir) if a == "KEYFRAME" else str(tmp_path / "none") if a == "NOWHERE" else a for a in args]
    code = main(["interpolate", str(clip), "--out", str(tmp_path / "o.mp4"), *model, *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err, err


# -- training ---------------------------------------------------------------------------------------


def test_training_task_runs_resumes_and_saves_an_interpolation_pipeline(tmp_path):
    from _train_utils import tiny_config

    from magicvideo.training import load_config, train

    manifest = tmp_path / "data" / "captions.csv"
    (tmp_path / "data").mkdir()
    rows = ["path,caption,fps"]
    for i in range(3):
        frames = (np.random.default_rng(i).random((8, 16, 16, 3)) * 255).astype(np.uint8)
        write_video(tmp_path / "data" / f"{i}.mp4", frames, fps=24)
        rows.append(f"{i}.mp4,clip {i},24")
    manifest.write_text("\n".join(rows) + "\n")
    path = tiny_config(tmp_path, manifest, data={"num_frames": 7, "min_stride": 1, "max_stride": 1},
                       model={"unet": {**__import__("_train_utils").TINY_UNET, "num_frames": 7}})
    text = path.read_text() + "task: interpolation\ninterpolation:\n  keyframe_stride: 3\n"
    path.write_text(text)
    config = load_config(path)
    final = train(config)
    pipe = MagicVideoInterpolationPipeline.from_pretrained(final)
    assert is_interpolation_unet(pipe.unet) and pipe.keyframe_stride == 3
    assert (tmp_path / "run" / "samples").is_dir()
    config = load_config(path, ["train.max_steps=6"])
    train(config, resume=True)
    assert "6," in (tmp_path / "run" / "metrics.csv").read_text()


def test_training_config_refuses_strided_clips(tmp_path):
    from magicvideo.training.config import ConfigError, config_from_dict

    with pytest.raises(ConfigError, match="interpolation.keyframe_stride"):
        config_from_dict({"task": "interpolation", "interpolation": {"keyframe_stride": 1}})


@pytest.mark.parametrize("scheduler", ["ddim", "dpm++"])
def test_strength_starts_from_the_latent_blend_and_keeps_the_keyframes(pipe, scheduler):
    pipe.set_scheduler(scheduler)
    try:
        keyframes = keyframe_latents(4)
        out = pipe(keyframe_latents=keyframes, num_inference_steps=4, strength=0.5, output_type="latent",
                   generator=torch.Generator().manual_seed(0)).frames
        assert out.shape[2] == 10 and torch.equal(out[:, :, ::3], keyframes) and torch.isfinite(out).all()
        with pytest.raises(InvalidArgumentError, match="strength"):
            pipe(keyframe_latents=keyframes, num_inference_steps=1, strength=1.5)
    finally:
        pipe.set_scheduler("ddim")


def make_residual_pipeline(zero_output: bool) -> MagicVideoInterpolationPipeline:
    base = make_interpolation_pipeline()
    unet = from_keyframe_model(tiny_keyframe_unet(), zero_output=zero_output).eval()
    if not zero_output:
        randomize_(unet, seed=3, std=0.05)
    scheduler = type(base.scheduler).from_config(base.scheduler.config, prediction_type="sample")
    pipe = MagicVideoInterpolationPipeline(unet=unet, vae=base.vae, text_encoder=base.text_encoder,
                                           tokenizer=base.tokenizer, scheduler=scheduler, keyframe_stride=3,
                                           residual=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("scheduler", ["ddim", "dpm++"])
def test_an_untrained_residual_model_returns_the_linear_blend_of_the_keyframe_latents(scheduler):
    pipe = make_residual_pipeline(zero_output=True)
    pipe.set_scheduler(scheduler)
    keyframes = keyframe_latents(4)
    out = pipe(keyframe_latents=keyframes, num_inference_steps=3, output_type="latent",
               generator=torch.Generator().manual_seed(0)).frames
    assert torch.equal(out[:, :, ::3], keyframes)
    for i in range(3):
        for j in (1, 2):
            blend = keyframes[:, :, i] * (1 - j / 3) + keyframes[:, :, i + 1] * (j / 3)
            torch.testing.assert_close(out[:, :, 3 * i + j], blend, rtol=0, atol=1e-6)


def test_residual_pipeline_keeps_keyframes_and_saves_its_kind(tmp_path):
    pipe = make_residual_pipeline(zero_output=False)
    keyframes = keyframe_latents(11)  # two windows
    out = pipe(keyframe_latents=keyframes, num_inference_steps=2, output_type="latent",
               generator=torch.Generator().manual_seed(0)).frames
    assert torch.equal(out[:, :, ::3], keyframes) and torch.isfinite(out).all()
    blend = keyframes[:, :, 0] * (2 / 3) + keyframes[:, :, 1] * (1 / 3)
    assert (out[:, :, 1] - blend).abs().max() > 1e-3  # the trained-looking model moves off the blend
    pipe.save_pretrained(tmp_path / "p")
    loaded = MagicVideoInterpolationPipeline.from_pretrained(tmp_path / "p")
    assert loaded.config.residual is True and loaded.scheduler.config.prediction_type == "sample"


def test_residual_training_starts_at_the_blend_and_learns_the_difference(tmp_path):
    """interpolation.residual: conv_out starts at zero, the x0 target is latents - blend (zero at keyframes)."""
    from _train_utils import tiny_config
    from accelerate import Accelerator

    from magicvideo.training import load_config
    from magicvideo.training.interpolation_task import InterpolationTask

    manifest = tmp_path / "data" / "captions.csv"
    (tmp_path / "data").mkdir()
    frames = (np.random.default_rng(0).random((8, 16, 16, 3)) * 255).astype(np.uint8)
    write_video(tmp_path / "data" / "0.mp4", frames, fps=24)
    manifest.write_text("path,caption,fps\n0.mp4,clip,24\n")
    path = tiny_config(tmp_path, manifest, data={"num_frames": 7, "min_stride": 1, "max_stride": 1},
                       model={"unet": {**__import__("_train_utils").TINY_UNET, "num_frames": 7}})
    path.write_text(path.read_text() + "task: interpolation\ninterpolation:\n  keyframe_stride: 3\n  residual: true\n")
    task = InterpolationTask(load_config(path), Accelerator(cpu=True))
    assert task.scheduler.config.prediction_type == "sample"
    assert not task.model.conv_out.weight.any() and not task.model.conv_out.bias.any()
    assert not task.model.conv_out.adaptor.shift.any()
    latents = torch.randn(2, 4, 7, 2, 2)
    conditioning, between = task.inputs(latents)
    from magicvideo.models.interpolation import linear_blend
    difference = latents - linear_blend(conditioning)
    assert torch.equal(difference[:, :, ~between], torch.zeros_like(difference[:, :, ~between]))
    assert difference[:, :, between].abs().min() > 0
    batch = {"latents": latents, "text_embeds": torch.zeros(2, 16, 32), "position": [0, 1], "fps": torch.full((2,), 24.0)}
    task.null_text = torch.zeros(16, 32)
    loss = task.loss(task.model, batch)  # the zero model predicts x0 = 0: the loss is the difference's mean square
    torch.testing.assert_close(loss, difference[:, :, between].pow(2).mean(), rtol=1e-5, atol=1e-6)
