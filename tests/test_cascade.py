"""The whole cascade on tiny random stage models: reproducible, swappable stages, folder round trip."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from conftest import make_tiny_pipeline, randomize_
from test_interpolation import make_interpolation_pipeline
from test_super_resolution import tiny_sr_pipeline

from magicvideo.errors import InvalidArgumentError
from magicvideo.models.video_vae import VideoAutoencoderKL
from magicvideo.pipelines.cascade import MagicVideoCascadePipeline

PROMPT = "a red ball bounces"


def tiny_cascade(interpolation=True, upscale=True, video_vae=True) -> MagicVideoCascadePipeline:
    keyframes = make_tiny_pipeline(num_frames=4)
    randomize_(keyframes.unet, seed=2, std=0.05)
    if video_vae:
        vae = VideoAutoencoderKL.from_image_vae(keyframes.vae)
        randomize_(vae.temporal_attentions, seed=3, std=0.1)
        keyframes.register_modules(vae=vae.eval())
    keyframes.set_progress_bar_config(disable=True)
    return MagicVideoCascadePipeline(keyframes, make_interpolation_pipeline(num_frames=7, factor=3) if interpolation
                                     else None, tiny_sr_pipeline() if upscale else None)


@pytest.fixture(scope="module")
def cascade():
    return tiny_cascade()


def run(cascade, **kwargs):
    return cascade(PROMPT, num_inference_steps=2, **kwargs)


def test_every_stage_runs_and_one_seed_gives_the_same_video(cascade):
    a, b, c = run(cascade, upscale=True), run(cascade, upscale=True), run(cascade, upscale=True, seed=1)
    assert a.frames.shape == (10, 64, 64, 3)  # 4 keyframes -> 10 frames (x3), 16 px -> 64 px (x4)
    assert a.fps == 24 and a.stages == ["keyframes", "interpolation", "decode (VideoVAE)", "upscale"]
    assert np.array_equal(a.frames, b.frames) and not np.array_equal(a.frames, c.frames)
    assert a.settings["seed"] == 0 and a.settings["upscale"] is True


def test_stages_are_optional_and_keyframes_only_is_the_keyframe_pipeline(cascade):
    alone = cascade.keyframes(PROMPT, num_inference_steps=2, generator=torch.Generator().manual_seed(5),
                              decoder="image").frames[0]
    out = run(cascade, seed=5, interpolate=False, decoder="image")
    assert out.stages == ["keyframes", "decode (image decoder)"] and out.fps == 8
    assert np.array_equal(out.frames, alone)
    video = run(cascade, seed=5, interpolate=False, decoder="video")
    assert video.frames.shape == out.frames.shape and not np.array_equal(video.frames, out.frames)


def test_stages_the_cascade_lacks_are_refused():
    keyframes_only = tiny_cascade(interpolation=False, upscale=False, video_vae=False)
    for kwargs, argument in (({"upscale": True}, "upscale"), ({"interpolate": True}, "interpolate"),
                             ({"decoder": "fancy"}, "decoder"), ({"seed": -1}, "seed")):
        with pytest.raises(InvalidArgumentError) as info:
            run(keyframes_only, **kwargs)
        assert info.value.argument == argument
    assert run(keyframes_only).stages == ["keyframes", "decode (image decoder)"]


def test_fps_warnings_name_the_stage_whose_trained_rates_are_left():
    cascade = tiny_cascade(upscale=False, video_vae=False)
    cascade.keyframes.register_to_config(fps_range=[8.0, 24.0])
    cascade.interpolation.register_to_config(fps_range=[24.0, 36.0])  # output rates: keyframes at 8-12 fps
    assert cascade.fps_warning(8.0) is None and cascade.fps_warning(12.0) is None
    assert "outside" in cascade.fps_warning(4.0) and "interpolation" not in cascade.fps_warning(4.0)
    warning = cascade.fps_warning(24.0)  # keyframes fine, interpolation to 72 fps is not
    assert warning.startswith("interpolation x3:") and "72" in warning
    assert cascade.fps_warning(24.0, interpolate=False) is None


def test_save_and_load_one_folder_with_every_stage(cascade, tmp_path):
    cascade.save_pretrained(tmp_path / "cascade")
    assert sorted(p.name for p in (tmp_path / "cascade").iterdir()) == [
        "interpolation", "keyframes", "model_index.json", "upscale"]
    loaded = MagicVideoCascadePipeline.from_pretrained(tmp_path / "cascade", device="cpu", progress_bar=False)
    assert isinstance(loaded.keyframes.vae, VideoAutoencoderKL)
    a, b = run(cascade, upscale=True), run(loaded, upscale=True)
    assert np.allclose(a.frames, b.frames, atol=1e-6)
    # only the stages asked for
    keyframes = MagicVideoCascadePipeline.from_pretrained(tmp_path / "cascade", device="cpu", stages=["keyframes"])
    assert keyframes.interpolation is None and keyframes.upscaler is None
    assert np.array_equal(run(keyframes).frames, run(loaded, interpolate=False).frames)
    for stages in (["interpolation"], ["keyframes", "decode"]):
        with pytest.raises(InvalidArgumentError) as info:
            MagicVideoCascadePipeline.from_pretrained(tmp_path / "cascade", stages=stages)
        assert info.value.argument == "stages"
    # a keyframe pipeline folder is a cascade of one stage
    cascade.keyframes.save_pretrained(tmp_path / "keyframes")
    single = MagicVideoCascadePipeline.from_pretrained(tmp_path / "keyframes", device="cpu")
    assert single.interpolation is None and single.upscaler is None


def test_requests_in_parallel_threads_equal_requests_alone(cascade):
    settings = [dict(seed=1), dict(seed=2, interpolate=False), dict(seed=3, guidance_scale=1.0)]
    alone = [run(cascade, **s).frames for s in settings]
    with ThreadPoolExecutor(3) as pool:
        together = list(pool.map(lambda s: run(cascade, **s).frames, settings * 2))
    for i, frames in enumerate(together):
        assert np.array_equal(frames, alone[i % 3])


def test_progress_callback_reports_every_stage(cascade):
    seen = []
    run(cascade, upscale=True, callback=lambda stage, step, total: seen.append((stage, step, total)))
    assert [s for s in seen if s[0] == "keyframes"] == [("keyframes", 1, 2), ("keyframes", 2, 2)]
    # the interpolation stage runs its own default step count unless given one
    assert [s for s in seen if s[0] == "interpolation"] == [("interpolation", i, 10) for i in range(1, 11)]
    assert seen[-1] == ("upscale", 1, 1)
    seen.clear()
    run(cascade, interpolation_steps=3, callback=lambda stage, step, total: seen.append((stage, step, total)))
    assert [s for s in seen if s[0] == "interpolation"] == [("interpolation", i, 3) for i in range(1, 4)]
