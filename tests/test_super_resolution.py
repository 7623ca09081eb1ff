"""Cascade stage 3: the per-frame x4 super-resolution pipeline, the SD x4 upscaler alternative,
the training task and the `magicvideo upscale` command, with tiny random models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from magicvideo.errors import InvalidArgumentError
from magicvideo.models.super_resolution import SuperResolutionUNet
from magicvideo.pipelines.upscale import MagicVideoUpscalePipeline, SDUpscaleStage, load_upscale_pipeline

TINY_SR = dict(scale=4, pixel_shuffle=4, block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
               sample_size=32)


def tiny_sr_pipeline(seed: int = 0) -> MagicVideoUpscalePipeline:
    torch.manual_seed(seed)
    unet = SuperResolutionUNet(**TINY_SR).eval()
    with torch.no_grad():  # a random model whose output is not ~0 (zero-initialised out conv otherwise)
        for p in unet.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    scheduler = DDIMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction",
                              timestep_spacing="trailing", clip_sample=False, set_alpha_to_one=False)
    pipe = MagicVideoUpscalePipeline(unet=unet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def sr_pipe():
    return tiny_sr_pipeline()


def clip(frames=3, h=8, w=8, seed=0):
    return np.random.default_rng(seed).random((frames, h, w, 3), dtype=np.float32)


# -- the pixel-space SR pipeline --------------------------------------------------------------------

@pytest.mark.parametrize("h, w", [(8, 8), (8, 12), (16, 8)])
def test_output_is_exactly_scale_times_the_input(sr_pipe, h, w):
    out = sr_pipe(clip(2, h, w), num_inference_steps=2, generator=torch.Generator().manual_seed(0)).frames
    assert out.shape == (2, 4 * h, 4 * w, 3)
    assert out.dtype == np.float32 and out.min() >= 0 and out.max() <= 1


def test_input_kinds_and_output_types(sr_pipe):
    frames = clip(2)
    uint8 = (frames * 255).round().astype(np.uint8)
    kwargs = dict(num_inference_steps=2)
    ref = sr_pipe(uint8 / np.float32(255), generator=torch.Generator().manual_seed(1), **kwargs).frames
    from_uint8 = sr_pipe(uint8, generator=torch.Generator().manual_seed(1), **kwargs).frames
    from_tensor = sr_pipe(torch.from_numpy(uint8), generator=torch.Generator().manual_seed(1), **kwargs).frames
    np.testing.assert_allclose(from_uint8, ref, atol=1e-6)
    np.testing.assert_allclose(from_tensor, ref, atol=1e-6)
    gray = sr_pipe(uint8[..., 0], generator=torch.Generator().manual_seed(1), **kwargs).frames  # (F, H, W)
    assert gray.shape == (2, 32, 32, 3)
    from PIL import Image

    from_pil = sr_pipe([Image.fromarray(frame) for frame in uint8], generator=torch.Generator().manual_seed(1),
                       **kwargs).frames
    np.testing.assert_array_equal(from_pil, from_uint8)
    pt = sr_pipe(uint8, generator=torch.Generator().manual_seed(1), output_type="pt", **kwargs).frames
    assert isinstance(pt, torch.Tensor) and pt.shape == (2, 3, 32, 32)  # diffusers' layout, as every pipeline's
    np.testing.assert_array_equal(pt.permute(0, 2, 3, 1).numpy(), from_uint8)
    as_uint8 = sr_pipe(uint8, generator=torch.Generator().manual_seed(1), output_type="uint8", **kwargs).frames
    assert as_uint8.dtype == np.uint8 and as_uint8.shape == (2, 32, 32, 3)
    pil = sr_pipe(uint8, generator=torch.Generator().manual_seed(1), output_type="pil", **kwargs).frames
    assert len(pil) == 2 and pil[0].size == (32, 32)


def test_shared_noise_gives_identical_outputs_for_identical_frames(sr_pipe):
    frame = clip(1)[0]
    video = np.stack([frame, frame, clip(1, seed=1)[0], frame, frame])
    for batch_size in (1, 2, 4):  # frames in the same or in different network calls
        out = sr_pipe(video, num_inference_steps=3, noise_level=50, generator=torch.Generator().manual_seed(0),
                      batch_size=batch_size).frames
        np.testing.assert_array_equal(out[0], out[1])
        np.testing.assert_array_equal(out[0], out[3])
        np.testing.assert_array_equal(out[3], out[4])
        assert not np.array_equal(out[1], out[2])
    independent = sr_pipe(video, num_inference_steps=3, noise_level=50, generator=torch.Generator().manual_seed(0),
                          shared_noise=False).frames
    assert not np.array_equal(independent[0], independent[1])


def test_seeded_runs_are_deterministic(sr_pipe):
    a = sr_pipe(clip(2), num_inference_steps=2, generator=torch.Generator().manual_seed(5)).frames
    b = sr_pipe(clip(2), num_inference_steps=2, generator=torch.Generator().manual_seed(5)).frames
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kwargs, argument", [
    (dict(scale=2), "scale"),
    (dict(num_inference_steps=0), "num_inference_steps"),
    (dict(noise_level=-1), "noise_level"),
    (dict(noise_level=1000), "noise_level"),
    (dict(output_type="latent"), "output_type"),
    (dict(batch_size=0), "batch_size"),
])
def test_bad_arguments_name_the_argument(sr_pipe, kwargs, argument):
    with pytest.raises(InvalidArgumentError) as err:
        sr_pipe(clip(1), **{"num_inference_steps": 1, **kwargs})
    assert err.value.argument == argument


@pytest.mark.parametrize("video, words", [
    (np.zeros((0, 8, 8, 3), np.float32), "no frames"),
    ([], "no frames"),
    (np.zeros((2, 8, 8, 4), np.float32), "shape"),
    (np.zeros((2, 8), np.float32), "shape"),
    (np.zeros((2, 7, 8, 3), np.float32), "multiples of 2"),  # 7 * 4 = 28 is not a multiple of 8
    ("clip.mp4", "numpy array"),
])
def test_bad_clips_are_refused_with_a_clear_error(sr_pipe, video, words):
    with pytest.raises(InvalidArgumentError) as err:
        sr_pipe(video, num_inference_steps=1)
    assert err.value.argument == "video" and words in err.value.message


def test_save_and_load_and_wrong_folder_kinds(sr_pipe, tmp_path):
    sr_pipe.save_pretrained(tmp_path / "sr")
    loaded = load_upscale_pipeline(tmp_path / "sr")
    loaded.set_progress_bar_config(disable=True)
    a = sr_pipe(clip(1), num_inference_steps=2, generator=torch.Generator().manual_seed(0)).frames
    b = loaded(clip(1), num_inference_steps=2, generator=torch.Generator().manual_seed(0)).frames
    np.testing.assert_allclose(a, b, atol=1e-5)
    with pytest.raises(InvalidArgumentError, match="no such model folder") as err:
        load_upscale_pipeline(tmp_path / "missing")
    assert err.value.argument == "model"
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidArgumentError, match="no model_index.json"):
        load_upscale_pipeline(tmp_path / "empty")
    other = tmp_path / "other"
    other.mkdir()
    (other / "model_index.json").write_text(json.dumps({"_class_name": "MagicVideoPipeline"}))
    with pytest.raises(InvalidArgumentError, match="holds a MagicVideoPipeline, not a MagicVideoUpscalePipeline"):
        load_upscale_pipeline(other)


# -- the SD x4 upscaler alternative ------------------------------------------------------------------

def make_tiny_sd_upscaler(folder):
    """A randomly initialised StableDiffusionUpscalePipeline of the x4 upscaler's architecture
    (7 U-Net input channels, noise-level class embedding, VAE factor 4), saved as a folder."""
    from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, StableDiffusionUpscalePipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for i, ch in enumerate("abcdefghijklmnopqrstuvwxyz"):
        vocab[ch] = 2 + 2 * i
        vocab[ch + "</w>"] = 3 + 2 * i
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=16)
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=37,
                                                num_hidden_layers=1, num_attention_heads=4, max_position_embeddings=16,
                                                bos_token_id=0, eos_token_id=1, pad_token_id=1))
    unet = UNet2DConditionModel(sample_size=8, in_channels=7, out_channels=4, layers_per_block=1,
                                block_out_channels=(16, 32), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
                                attention_head_dim=8, norm_num_groups=8, num_class_embeds=351)
    vae = AutoencoderKL(block_out_channels=(8, 8, 8), down_block_types=("DownEncoderBlock2D",) * 3,
                        up_block_types=("UpDecoderBlock2D",) * 3, latent_channels=4, norm_num_groups=4,
                        layers_per_block=1, scaling_factor=0.08333)
    pipe = StableDiffusionUpscalePipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        low_res_scheduler=DDPMScheduler(beta_schedule="scaled_linear"),
        scheduler=DDIMScheduler(prediction_type="v_prediction", beta_schedule="scaled_linear", clip_sample=False),
        max_noise_level=350)
    pipe.save_pretrained(folder / "sd-x4")
    return folder / "sd-x4"


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    return make_tiny_sd_upscaler(tmp_path_factory.mktemp("sd"))


def test_sd_x4_upscaler_end_to_end_with_shared_noise(sd_folder):
    stage = SDUpscaleStage(sd_folder)
    stage.pipe.set_progress_bar_config(disable=True)
    assert stage.scale == 4
    frame = clip(1)[0]
    video = np.stack([frame, frame, clip(1, seed=3)[0]])
    out = stage(video, prompt="a digit", num_inference_steps=2, noise_level=20, seed=0, batch_size=2).frames
    assert out.shape == (3, 32, 32, 3) and out.min() >= 0 and out.max() <= 1
    np.testing.assert_allclose(out[0], out[1], atol=1e-6)  # identical frames, different network calls
    assert not np.allclose(out[1], out[2])
    independent = stage(video, num_inference_steps=2, seed=0, shared_noise=False).frames
    assert not np.allclose(independent[0], independent[1])
    with pytest.raises(InvalidArgumentError) as err:
        stage(video, num_inference_steps=1, scale=2)
    assert err.value.argument == "scale"
    with pytest.raises(InvalidArgumentError) as err:
        stage(video, num_inference_steps=1, noise_level=400)
    assert err.value.argument == "noise_level"
    with pytest.raises(InvalidArgumentError, match="multiples of 4") as err:
        stage(clip(1, 6, 8), num_inference_steps=1)
    assert err.value.argument == "video"


def test_sd_folder_is_refused_by_the_sr_loader(sd_folder):
    with pytest.raises(InvalidArgumentError, match="StableDiffusionUpscalePipeline"):
        load_upscale_pipeline(sd_folder)


# -- the high-resolution digits ----------------------------------------------------------------------

def test_hires_digits_downsample_to_the_moving_mnist_frames():
    import random

    from magicvideo.digits import data, hires

    rng = random.Random(0)
    for _ in range(5):
        spec = data.sample_digit_clip(rng, "test", span=10, canonical=True)
        native = data.render(spec, [0.0, 10.0])
        hr = hires.render_hr(spec.sprites, [0.0, 10.0])
        assert hr.shape == (2, 256, 256) and hr.min() >= 0 and hr.max() <= 1
        mse = float(((hires.downsample(hr) - native) ** 2).mean())
        assert 10 * np.log10(1 / mse) > 30  # the truth's 64 px version is the frame the keyframe model learns
    patch = hires.random_patch(np.random.default_rng(0), "train", 64)
    assert patch.shape == (64, 64) and patch.max() > 0.5


# -- training ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("prediction_type", ["sample", "v_prediction"])
def test_training_task_runs_resumes_and_saves_a_loadable_pipeline(tmp_path, prediction_type):
    from magicvideo.training import train
    from magicvideo.training.config import config_from_dict

    def config(steps):
        return config_from_dict({
            "task": "super_resolution",
            "sr": {"pixel_shuffle": 2, "block_out_channels": [8, 16], "norm_num_groups": 4, "patch_size": 32,
                   "sample_steps": 1, "head_channels": 4},
            "train": {"batch_size": 2, "max_steps": steps, "warmup_steps": 0, "ema_decay": 0.9,
                      "beta_schedule": "squaredcos_cap_v2", "prediction_type": prediction_type},
            "output": {"output_dir": str(tmp_path / "run"), "checkpoint_every": 2, "log_every": 1},
        })

    train(config(2))
    final = train(config(3), resume=True)
    rows = (tmp_path / "run" / "metrics.csv").read_text().strip().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3"]
    assert (tmp_path / "run" / "samples" / "step-00000003" / "contact-sheet.png").is_file()
    pipe = load_upscale_pipeline(final)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.scheduler.config.prediction_type == pipe.unet.config.prediction_type == prediction_type
    assert pipe.unet.config.head_channels == 4 and pipe.unet.head is not None  # the full-resolution head is saved
    assert pipe(clip(1, 8, 8), num_inference_steps=1).frames.shape == (1, 32, 32, 3)
    # a fine-tune starts from the saved unet (here with the other prediction type)
    other = "v_prediction" if prediction_type == "sample" else "sample"
    tuned = config(1)
    tuned.sr.init, tuned.train.prediction_type = str(final), other
    tuned.output.output_dir = str(tmp_path / "tuned")
    assert load_upscale_pipeline(train(tuned)).unet.config.prediction_type == other


def test_config_accepts_the_task_and_refuses_x0_for_other_tasks():
    from magicvideo.training.config import ConfigError, config_from_dict

    assert config_from_dict({"task": "super_resolution", "train": {"prediction_type": "sample"}}).sr.scale == 4
    with pytest.raises(ConfigError, match="prediction_type"):
        config_from_dict({"task": "diffusion", "train": {"prediction_type": "sample"}})
    with pytest.raises(ConfigError, match="sr.patch_size"):
        config_from_dict({"task": "super_resolution", "sr": {"patch_size": 0}})


# -- the command line --------------------------------------------------------------------------------

def test_cli_upscales_a_clip_and_names_the_flag_on_errors(sr_pipe, sd_folder, tmp_path, capsys):
    from magicvideo.cli import main
    from magicvideo.video_io import read_video, write_video

    sr_pipe.save_pretrained(tmp_path / "sr")
    source = write_video(tmp_path / "in.mp4", (clip(3, 16, 16) * 255).astype(np.uint8), fps=8)
    assert main(["upscale", str(source), "--out", str(tmp_path / "out.mp4"), "--model", str(tmp_path / "sr"),
                 "--steps", "1"]) == 0
    frames, fps = read_video(tmp_path / "out.mp4")
    assert frames.shape == (3, 64, 64, 3) and fps == 8
    assert main(["upscale", str(source), "--out", str(tmp_path / "sd.mp4"), "--model", str(sd_folder),
                 "--steps", "1"]) == 0
    assert read_video(tmp_path / "sd.mp4")[0].shape == (3, 64, 64, 3)
    capsys.readouterr()

    (tmp_path / "garbage.mp4").write_bytes(b"not a video")
    other = tmp_path / "other"
    other.mkdir()
    (other / "model_index.json").write_text(json.dumps({"_class_name": "MagicVideoPipeline"}))
    cases = [
        ([str(tmp_path / "missing.mp4")], "IN: no such file"),
        ([str(tmp_path / "garbage.mp4")], "IN: cannot read a clip"),
        ([str(source), "--scale", "2"], "--scale: this model upscales x4, not x2"),
        ([str(source), "--model", str(other)], "--model:"),
        ([str(source), "--model", str(tmp_path)], "--model:"),
        ([str(source), "--noise-level", "5000"], "--noise-level:"),
        ([str(source), "--steps", "0"], "--steps"),
        ([str(source), "--out", str(tmp_path / "x.avi")], "--out"),
    ]
    for extra, message in cases:
        args = ["upscale", *extra]
        if "--model" not in extra:
            args += ["--model", str(tmp_path / "sr")]
        if "--out" not in extra:
            args += ["--out", str(tmp_path / "bad.mp4")]
        assert main(args) == 2, extra
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (extra, err)
