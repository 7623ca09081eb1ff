"""The text-to-video pipeline and the `generate` command, end to end on tiny random components."""

import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import assert_modes_follow_umask, make_tiny_pipeline, randomize_

from magicvideo import SCHEDULERS, MagicVideoPipeline
from magicvideo.cli import main
from magicvideo.video_io import read_video


def run(pipe, seed=0, **kwargs):
    kwargs = {"num_inference_steps": 3, **kwargs}
    return pipe("a red ball bounces", generator=torch.Generator().manual_seed(seed), **kwargs).frames


def test_frames_are_deterministic_for_a_seed_in_range_and_of_the_requested_size(tiny_pipeline):
    randomize_(tiny_pipeline.unet, seed=2, std=0.05)
    a, b, c = run(tiny_pipeline), run(tiny_pipeline), run(tiny_pipeline, seed=1)
    assert a.shape == (1, 8, 16, 16, 3)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.min() >= 0 and a.max() <= 1
    frames = run(tiny_pipeline, num_frames=5, height=24, width=32)
    assert frames.shape == (1, 5, 24, 32, 3)


def test_guidance_uses_the_negative_prompt(tiny_pipeline):
    randomize_(tiny_pipeline.unet, seed=2, std=0.05)
    plain = run(tiny_pipeline, guidance_scale=5.0)
    assert np.array_equal(plain, run(tiny_pipeline, guidance_scale=5.0, negative_prompt=""))
    assert not np.array_equal(plain, run(tiny_pipeline, guidance_scale=5.0, negative_prompt="blurry"))
    assert not np.array_equal(plain, run(tiny_pipeline, guidance_scale=1.0))


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_every_scheduler_can_be_swapped_in(tiny_pipeline, name):
    tiny_pipeline.set_scheduler(name)
    assert type(tiny_pipeline.scheduler) is SCHEDULERS[name]
    frames = run(tiny_pipeline, num_frames=2)
    assert frames.shape == (1, 2, 16, 16, 3) and np.isfinite(frames).all()


def test_output_types(tiny_pipeline):
    pt = run(tiny_pipeline, num_frames=2, output_type="pt")
    latents = run(tiny_pipeline, num_frames=2, output_type="latent")
    pil = run(tiny_pipeline, num_frames=2, output_type="pil")
    assert pt.shape == (1, 2, 3, 16, 16) and latents.shape == (1, 4, 2, 8, 8) and len(pil[0]) == 2
    frames, uint8 = (run(tiny_pipeline, num_frames=2, output_type=kind) for kind in ("np", "uint8"))
    assert uint8.dtype == np.uint8 and np.array_equal(uint8, (frames * 255).round().astype(np.uint8))
    assert np.array_equal(np.asarray(pil[0][1]), uint8[0, 1]) and np.array_equal(pt.permute(0, 1, 3, 4, 2).numpy(), frames)


def test_save_and_load_round_trip(tiny_pipeline, tmp_path):
    randomize_(tiny_pipeline.unet, seed=2, std=0.05)
    tiny_pipeline.save_pretrained(tmp_path)
    loaded = MagicVideoPipeline.from_pretrained(tmp_path)
    assert np.array_equal(run(tiny_pipeline), run(loaded))
    assert_modes_follow_umask(tmp_path)  # as readable as any file this user writes (safetensors 0.8 makes 0600)


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"num_frames": 0}, "num_frames"),
        ({"num_frames": 9, "context_frames": 8}, "context_frames"),  # a long clip needs room for new frames
        ({"height": 18}, "height"),
        ({"width": 0}, "width"),
        ({"num_inference_steps": 0}, "num_inference_steps"),
        ({"fps": 0}, "fps"),
        ({"guidance_scale": -1}, "guidance_scale"),
        ({"output_type": "mov"}, "output_type"),
    ],
)
def test_bad_input_names_the_argument(tiny_pipeline, kwargs, argument):
    with pytest.raises(ValueError, match=f"^{argument}: "):
        run(tiny_pipeline, **kwargs)


def test_unknown_scheduler_is_refused(tiny_pipeline):
    with pytest.raises(ValueError, match="^scheduler: unknown scheduler 'foo'"):
        tiny_pipeline.set_scheduler("foo")


def test_packaged_text_encoder_is_referenced_not_copied(tmp_path):
    """The MiniLM weights are not copied; the tokenizer is, with the context length trained with."""
    import json

    from magicvideo.text import load_packaged_text_encoder

    pipe = make_tiny_pipeline(cross_attention_dim=384)
    pipe.text_encoder, pipe.tokenizer = load_packaged_text_encoder()
    pipe.tokenizer.model_max_length = 16
    pipe.save_pretrained(tmp_path)
    assert not (tmp_path / "text_encoder").exists()
    loaded = MagicVideoPipeline.from_pretrained(tmp_path)
    assert loaded.tokenizer.model_max_length == 16
    assert torch.cat(loaded.encode_prompt(["a red ball"], "cpu", 1, True)).shape == (2, 16, 384)
    assert np.array_equal(run(pipe, num_frames=2), run(loaded, num_frames=2))
    # Folders saved before the tokenizer was kept (`tokenizer: null`) load the packaged one: 77 tokens.
    index = json.loads((tmp_path / "model_index.json").read_text())
    index["tokenizer"] = [None, None]
    (tmp_path / "model_index.json").write_text(json.dumps(index))
    shutil.rmtree(tmp_path / "tokenizer")
    old = MagicVideoPipeline.from_pretrained(tmp_path)
    assert torch.cat(old.encode_prompt(["a red ball"], "cpu", 1, True)).shape == (2, 77, 384)


def test_cli_writes_a_decodable_mp4_of_the_requested_frames(tiny_pipeline_dir, tmp_path, capsys):
    out = tmp_path / "clip.mp4"
    code = main(["generate", "a red ball", "--model", str(tiny_pipeline_dir), "--out", str(out), "--frames", "6",
                 "--steps", "2", "--fps", "12", "--seed", "3"])
    assert code == 0
    frames, fps = read_video(out)
    assert frames.shape == (6, 16, 16, 3) and fps == pytest.approx(12)
    assert "seed 3" in capsys.readouterr().out


def test_cli_batch_generation_writes_one_clip_per_line(tiny_pipeline_dir, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red ball\n\nthe digit 7 moves to the right\n")
    code = main(["generate", "--prompts-file", str(prompts), "--out-dir", str(tmp_path / "clips"), "--model",
                 str(tiny_pipeline_dir), "--steps", "1", "--frames", "3", "--format", "gif"])
    assert code == 0
    written = sorted(p.name for p in (tmp_path / "clips").iterdir())
    assert written == ["0000-a-red-ball.gif", "0001-the-digit-7-moves-to-the-right.gif"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--frames", "0"], "--frames: must be an integer >= 1"),
        (["--height", "18"], "--height: must be a positive multiple of 4"),
        (["--steps", "0"], "--steps: must be an integer >= 1"),
        (["--scheduler", "foo"], "--scheduler: unknown scheduler"),
        (["--out", "clip.avi"], "--out:"),
    ],
)
def test_cli_user_mistakes_are_one_clear_line(tiny_pipeline_dir, capsys, args, message):
    assert main(["generate", "a", "--model", str(tiny_pipeline_dir), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_cli_unreadable_model_folder(tmp_path):
    (tmp_path / "model_index.json").write_text("{ not json")
    for model in (tmp_path / "missing", tmp_path):
        result = subprocess.run([sys.executable, "-m", "magicvideo", "generate", "a", "--model", str(model),
                                 "--out", str(tmp_path / "a.mp4")], capture_output=True, text=True)
        assert result.returncode == 2, result.stderr
        assert "--model:" in result.stderr and "Traceback" not in result.stderr


def test_bundled_model_loads_offline_in_float32_and_reproduces_a_seed():
    from magicvideo.loading import BUNDLED_MODEL
    from magicvideo.pipelines.keyframes import load_pipeline

    pipe = load_pipeline(None, device="cpu")  # what `generate` uses without --model
    assert pipe.unet.dtype == torch.float32 and pipe.text_encoder is not None
    assert str(pipe.name_or_path) == str(BUNDLED_MODEL)
    prompt = "the digit 7 moves to the right"
    a, b = (pipe(prompt, num_inference_steps=2, generator=torch.Generator().manual_seed(0)).frames for _ in range(2))
    assert a.shape == (1, 16, 64, 64, 3) and np.array_equal(a, b)


def test_loading_leaves_the_libraries_progress_bars_as_they_were():
    """Loading hides diffusers' and transformers' loading bars for that load only: no process-wide
    setting is left changed, whichever it was."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    from magicvideo.pipelines.keyframes import load_pipeline

    libraries = (diffusers_logging, transformers_logging)
    try:
        for enabled in (True, False):
            for library in libraries:
                (library.enable_progress_bar if enabled else library.disable_progress_bar)()
            load_pipeline(None, device="cpu", progress_bar=False)
            assert [library.is_progress_bar_enabled() for library in libraries] == [enabled, enabled]
    finally:
        for library in libraries:
            library.enable_progress_bar()


def test_bundled_model_output_is_pinned():
    """A slice of the bundled model's latents for a fixed prompt and seed (taken before the
    cascade layout moved the U-Net into models/ and the loop into sampling.py)."""
    from magicvideo.pipelines.keyframes import load_pipeline

    pipe = load_pipeline(None, device="cpu", progress_bar=False)
    latents = pipe("the digit 7 moves to the right", num_inference_steps=10, output_type="latent",
                   generator=torch.Generator().manual_seed(3)).frames
    expected = torch.tensor([[0.905652, 1.589233, 3.879294, 1.552628],
                             [-0.770502, -1.725746, 1.245556, -0.515203],
                             [1.503663, 1.824567, 0.844427, 2.060742],
                             [-0.404647, -0.798185, 2.223566, 0.581458]])
    assert torch.allclose(latents[0, :, ::5, 3, 4], expected, atol=1e-4)
    assert latents.abs().sum().item() == pytest.approx(3787.875, rel=1e-5)


def test_step_callback_sees_every_step_and_can_interrupt(tiny_pipeline):
    randomize_(tiny_pipeline.unet, seed=2, std=0.05)
    seen = []

    def record(pipe, i, t, tensors):
        seen.append((i, int(t), tensors["latents"].clone()))
        return {}

    final = run(tiny_pipeline, num_inference_steps=4, output_type="latent", callback_on_step_end=record)
    assert [i for i, _, _ in seen] == [0, 1, 2, 3]
    assert [t for _, t, _ in seen] == [int(t) for t in tiny_pipeline.scheduler.timesteps]
    assert torch.equal(seen[-1][2], final)

    def stop_after_two(pipe, i, t, tensors):
        if i == 1:
            pipe._interrupt = True
        return {}

    stopped = run(tiny_pipeline, num_inference_steps=4, output_type="latent", callback_on_step_end=stop_after_two)
    assert torch.equal(stopped, seen[1][2])  # the latents after step 2 of 4
    assert torch.equal(run(tiny_pipeline, num_inference_steps=4, output_type="latent"), final)


def test_callback_can_replace_the_latents(tiny_pipeline):
    def zero(pipe, i, t, tensors):
        return {"latents": torch.zeros_like(tensors["latents"])}

    out = run(tiny_pipeline, num_inference_steps=2, output_type="latent", callback_on_step_end=zero)
    assert torch.equal(out, torch.zeros_like(out))
    with pytest.raises(ValueError, match="callback_on_step_end_tensor_inputs"):
        run(tiny_pipeline, callback_on_step_end=zero, callback_on_step_end_tensor_inputs=["noise"])


def test_prompt_embeds_and_videos_per_prompt(tiny_pipeline):
    randomize_(tiny_pipeline.unet, seed=2, std=0.05)
    prompt = "a red ball bounces"
    embeds, negative = tiny_pipeline.encode_prompt(prompt, "cpu", 1, True)
    a = run(tiny_pipeline, guidance_scale=5.0)
    b = tiny_pipeline(prompt_embeds=embeds, negative_prompt_embeds=negative, guidance_scale=5.0, num_inference_steps=3,
                      generator=torch.Generator().manual_seed(0)).frames
    assert np.array_equal(a, b)
    two = run(tiny_pipeline, num_videos_per_prompt=2, num_frames=3)
    assert two.shape[0] == 2 and not np.array_equal(two[0], two[1])
    with pytest.raises(ValueError, match="prompt"):
        tiny_pipeline(num_inference_steps=1)


@pytest.mark.parametrize("name, value", [("guidance_scale", float("nan")), ("guidance_scale", float("inf")),
                                         ("fps", float("nan")), ("fps", float("inf")), ("fps", 0)])
def test_non_finite_settings_are_refused(tiny_pipeline, name, value):
    from magicvideo.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError) as info:
        run(tiny_pipeline, **{name: value})
    assert info.value.argument == name


@pytest.mark.parametrize("argv, flag", [(["--guidance", "nan"], "--guidance"), (["--guidance", "inf"], "--guidance"),
                                        (["--fps", "nan"], "--fps"), (["--seed", str(2**70)], "--seed"),
                                        (["--seed", "-1"], "--seed"), (["--frame-lag", "-1"], "--frame-lag")])
def test_cli_refuses_non_finite_numbers_and_seeds_out_of_range(tiny_pipeline_dir, tmp_path, capsys, argv, flag):
    out = tmp_path / "a.mp4"
    assert main(["generate", "a", "--model", str(tiny_pipeline_dir), "--out", str(out), "--steps", "1", *argv]) == 2
    err = capsys.readouterr().err
    assert f"error: {flag}:" in err and "Traceback" not in err
    assert not out.exists()


def test_causal_sampling_in_the_pipeline(tmp_path, monkeypatch):
    """chunk_size < frames: frame 0 of a directed model comes out as with synchronous DDIM (it sees no
    other frame), later frames differ; the key/value cache gives the uncached result to float rounding;
    frames do not depend on the noise of later frames; the defaults are the pipeline's saved ones; bad
    values are refused."""
    from magicvideo import sampling
    from magicvideo.errors import InvalidArgumentError
    from magicvideo.pipelines import keyframes

    pipe = make_tiny_pipeline(num_frames=4)
    randomize_(pipe.unet, std=0.05)
    kwargs = dict(num_frames=4, num_inference_steps=3, guidance_scale=2.0, output_type="latent")
    sync = pipe("a", generator=torch.Generator().manual_seed(0), **kwargs).frames
    chunked = pipe("a", generator=torch.Generator().manual_seed(0), chunk_size=1, **kwargs).frames
    lagged = pipe("a", generator=torch.Generator().manual_seed(0), frame_lag=2, **kwargs).frames  # single frames
    assert torch.allclose(chunked[:, :, 0], sync[:, :, 0], atol=1e-5)
    assert torch.allclose(lagged[:, :, 0], sync[:, :, 0], atol=1e-5)
    assert not torch.allclose(chunked[:, :, 1:], sync[:, :, 1:], atol=1e-3)
    assert pipe.num_sampling_calls(4, 3, chunk_size=1) == 12 and pipe.num_sampling_calls(4, 3, frame_lag=2) == 9

    noise = torch.randn(1, 4, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    changed = noise.clone()
    changed[:, :, 3:] = torch.randn(1, 4, 1, 8, 8)
    first, second = (pipe("a", latents=x, chunk_size=2, **kwargs).frames for x in (noise, changed))
    assert torch.equal(first[:, :, :2], second[:, :, :2]) and not torch.allclose(first[:, :, 2:], second[:, :, 2:])

    uncached = sampling.denoise_causal
    monkeypatch.setattr(keyframes, "denoise_causal", lambda *a, cache=None, **k: uncached(*a, cache=None, **k))
    torch.testing.assert_close(pipe("a", latents=noise, chunk_size=2, **kwargs).frames, first, rtol=1e-4, atol=1e-5)
    monkeypatch.undo()

    pipe.register_to_config(chunk_size=1)
    pipe.save_pretrained(tmp_path / "p")
    loaded = MagicVideoPipeline.from_pretrained(tmp_path / "p")
    assert loaded.config.chunk_size == 1
    torch.testing.assert_close(loaded("a", generator=torch.Generator().manual_seed(0), **kwargs).frames, chunked)
    for name, bad in (("frame_lag", -1), ("frame_lag", 1.5), ("chunk_size", 0), ("chunk_size", True),
                      ("context_timestep", 1000)):
        with pytest.raises(InvalidArgumentError) as info:
            pipe("a", **{name: bad}, **kwargs)
        assert info.value.argument == name


def test_a_pipeline_folder_naming_a_removed_setting_fails_with_it_named(tmp_path):
    import json

    from magicvideo.errors import InvalidArgumentError

    make_tiny_pipeline(num_frames=2).save_pretrained(tmp_path / "p")
    index = tmp_path / "p" / "model_index.json"
    index.write_text(json.dumps({**json.loads(index.read_text()), "noise_sharing": 0.0}))
    with pytest.raises(InvalidArgumentError, match="noise_sharing.*removed"):
        MagicVideoPipeline.from_pretrained(tmp_path / "p")
