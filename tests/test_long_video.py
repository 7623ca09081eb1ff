"""Clips of any length (causal extension window after window), image-to-video, `extend`, and the frame
sink that writes a long clip as it is made: on tiny random models of the real architectures."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_tiny_pipeline, randomize_
from PIL import Image
from test_cascade import tiny_cascade

from magicvideo.cli import main
from magicvideo.errors import InvalidArgumentError
from magicvideo.pipelines.keyframes import fit_image
from magicvideo.vae import decode_latents_video, encode_video
from magicvideo.video_io import VideoWriter, read_video, write_video

KW = dict(num_inference_steps=3, guidance_scale=2.0, output_type="latent")


@pytest.fixture(scope="module")
def pipe():
    pipe = make_tiny_pipeline(num_frames=4)  # a window of 4 frames: 16 frames take 7 windows of context 2
    randomize_(pipe.unet, seed=2, std=0.05)
    assert pipe.context_frames_of() == 1  # unless saved, a quarter of the window
    pipe.register_to_config(context_frames=2)  # the pipeline's saved setting is its default
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def cascade():
    return tiny_cascade()


def latents(pipe, seed=0, **kwargs):
    return pipe("a red ball", generator=torch.Generator().manual_seed(seed), **{**KW, **kwargs}).frames


@pytest.mark.parametrize("sampling", [{}, {"chunk_size": 2}, {"frame_lag": 1}, {"context_frames": 3}])
def test_the_first_frames_of_a_long_clip_are_the_short_clip_bit_for_bit(pipe, sampling):
    """16 keyframes of a 4-frame model: the first window is the 4-frame clip of the seed, exactly; a clip is
    the start of every longer one (each window's noise is drawn when it starts, frame by frame): bit for bit
    where it ends with a whole window, to float rounding where its last window makes fewer frames."""
    short = latents(pipe, num_frames=4, **{k: v for k, v in sampling.items() if k != "context_frames"})
    long = latents(pipe, num_frames=16, **sampling)
    assert long.shape == (1, 4, 16, 8, 8) and torch.equal(long[:, :, :4], short)
    whole_windows = pipe.window_plan(16, sampling.get("context_frames"))[2][1]  # the end of the third window
    assert torch.equal(latents(pipe, num_frames=whole_windows, **sampling), long[:, :, :whole_windows])
    torch.testing.assert_close(latents(pipe, num_frames=whole_windows + 1, **sampling), long[:, :, :whole_windows + 1],
                               rtol=1e-4, atol=1e-5)


def test_each_window_continues_the_last_finished_frames_and_ignores_later_noise(pipe):
    """Window j is the pipeline's clip of one window whose first k frames are the k frames finished before
    it (context_latents, at positions 0 ... k - 1); frames never depend on the noise of later frames; the
    U-Net never takes more than its window of frames (cached ones included); the callback counts every call."""
    noise = torch.randn(1, 4, 12, 8, 8, generator=torch.Generator().manual_seed(3))
    clip = pipe("a", latents=noise, num_frames=12, **KW).frames  # windows: 0-3 | 4-5 | 6-7 | 8-9 | 10-11
    assert pipe.window_plan(12) == [(0, 4), (4, 6), (6, 8), (8, 10), (10, 12)]
    for start in (4, 6, 8, 10):
        window_noise = torch.cat([torch.zeros(1, 4, 2, 8, 8), noise[:, :, start:start + 2]], dim=2)
        alone = pipe("a", latents=window_noise, num_frames=4, context_latents=clip[:, :, start - 2:start], **KW).frames
        assert torch.equal(alone[:, :, 2:], clip[:, :, start:start + 2])
    changed = noise.clone()
    changed[:, :, 9:] = torch.randn(1, 4, 3, 8, 8)
    other = pipe("a", latents=changed, num_frames=12, **KW).frames
    assert torch.equal(other[:, :, :9], clip[:, :, :9]) and not torch.allclose(other[:, :, 9:], clip[:, :, 9:])

    seen, steps = [], []
    forward = pipe.unet.forward

    def spy(x, t, context, fps=None, cache=None, **kwargs):
        seen.append(x.shape[2] + (0 if cache is None else len(cache)))
        return forward(x, t, context, fps=fps, cache=cache, **kwargs)

    pipe.unet.forward = spy
    try:
        pipe("a", latents=noise, num_frames=12, callback_on_step_end=lambda p, i, t, d: steps.append(i) or {}, **KW)
    finally:
        del pipe.unet.forward
    assert max(seen) == 4 and steps == list(range(pipe.num_sampling_calls(12, 3))) and len(steps) == len(seen)
    windows = list(pipe.latent_windows("a", latents=noise, num_frames=12, num_inference_steps=3, guidance_scale=2.0))
    assert [w.shape[2] for w in windows] == [4, 2, 2, 2, 2] and torch.equal(torch.cat(windows, dim=2), clip)


def test_long_clip_arguments_are_checked(pipe):
    for kwargs, argument in (({"num_frames": 9, "context_frames": 4}, "context_frames"),
                             ({"num_frames": 9, "context_frames": 0}, "context_frames"),
                             ({"num_frames": 0}, "num_frames"),
                             ({"num_frames": 9, "latents": torch.zeros(1, 4, 8, 8, 8)}, "latents"),
                             ({"image": np.zeros((4, 4, 2))}, "image"),
                             ({"image": Image.new("RGB", (16, 16)), "context_latents": torch.zeros(1, 4, 1, 8, 8)}, "image"),
                             ({"image": Image.new("RGB", (16, 16)), "num_frames": 1}, "num_frames")):
        with pytest.raises(InvalidArgumentError) as info:
            latents(pipe, **kwargs)
        assert info.value.argument == argument
    assert pipe.num_sampling_calls(16, 3) == 3 * 7 and pipe.num_sampling_calls(16, 3, context_frames=3) == 3 * 13


def test_image_to_video_holds_the_encoded_image_as_frame_zero(pipe):
    """The image, fitted to the frame size (RGB, scaled to cover, centre-cropped), is encoded by the VAE
    and held exactly as the first latent frame; the same as giving its latents as context_latents."""
    rng = np.random.default_rng(0)
    image = Image.fromarray((rng.random((24, 40, 4)) * 255).astype(np.uint8), "RGBA")
    fitted, changes = fit_image(image, 16, 16)
    assert fitted.mode == "RGB" and fitted.size == (16, 16)
    assert changes == ["converted from RGBA to RGB", "resized from 40x24 to 16x16 (scaled to cover, centre-cropped)"]
    assert fit_image(fitted, 16, 16)[1] == []
    gray, changes = fit_image(np.full((16, 16), 0.5), 16, 16)
    assert np.asarray(gray).tolist() == np.full((16, 16, 3), 128).tolist() and changes == ["converted from L to RGB"]
    pixels = torch.from_numpy(np.asarray(fitted, np.float32) / 127.5 - 1).permute(2, 0, 1)[None, :, None]
    encoded = encode_video(pipe.vae, pixels)
    out = latents(pipe, num_frames=9, image=image)
    assert torch.equal(out[:, :, :1], encoded)
    assert torch.equal(out, latents(pipe, num_frames=9, context_latents=encoded))
    assert not torch.allclose(out[:, :, 1:], latents(pipe, num_frames=9)[:, :, 1:])


def test_a_long_cascade_clip_starts_with_the_short_clip_and_streams_the_same_frames(cascade):
    """Every stage runs window by window (interpolation between neighbouring keyframes, the VideoVAE's state
    carried over, per-frame super-resolution): the first 10 frames of a 10-keyframe clip are the 4-keyframe
    clip's bit for bit; the frames sent to a frame sink are the returned ones; the streamed decoding equals
    decoding the whole clip's latents at once."""
    kwargs = dict(num_inference_steps=2, seed=4, upscale=True)
    short = cascade("a red ball", num_frames=4, **kwargs)
    long = cascade("a red ball", num_frames=10, **kwargs)
    assert long.frames.shape == (28, 64, 64, 3) and long.fps == 24  # (10 - 1) * 3 + 1 frames
    assert np.array_equal(long.frames[:10], short.frames)
    pieces = []
    sunk = cascade("a red ball", num_frames=10, frame_sink=pieces.append, **kwargs)
    assert sunk.frames is None and [len(p) for p in pieces] == [10, 9, 9]  # context 1: 3 new keyframes a window
    assert np.array_equal(np.concatenate(pieces), long.frames)

    keyframes = cascade.keyframes("a red ball", num_frames=10, num_inference_steps=2,
                                  generator=torch.Generator().manual_seed(0), output_type="latent").frames
    whole = decode_latents_video(cascade.keyframes.vae, keyframes, None)
    caches = {}
    streamed = torch.cat([decode_latents_video(cascade.keyframes.vae, part, 16, caches=caches)
                          for part in keyframes.split([4, 3, 2, 1], dim=2)], dim=2)
    torch.testing.assert_close(streamed, whole, rtol=1e-4, atol=1e-5)


def test_extend_continues_the_last_frames_of_a_clip(cascade):
    """The new frames depend on the clip's last context_frames frames only, are a prefix of a longer
    extension, and a clip shorter than the context is refused."""
    clip = cascade("a red ball", num_frames=4, interpolate=False, num_inference_steps=2).frames  # (4, 16, 16, 3)
    out = cascade.extend(clip, 4, num_inference_steps=2, context_frames=2)  # windows: 2 given + 2 new, 2 + 2
    assert out.frames.shape == (4, 16, 16, 3) and out.stages == ["keyframes", "decode (VideoVAE)"]
    assert np.array_equal(cascade.extend(clip, 8, num_inference_steps=2, context_frames=2).frames[:4], out.frames)
    earlier = clip.copy()
    earlier[:2] = 0  # outside the context
    assert np.array_equal(cascade.extend(earlier, 4, num_inference_steps=2, context_frames=2).frames, out.frames)
    later = clip.copy()
    later[-1] = 0
    assert not np.array_equal(cascade.extend(later, 4, num_inference_steps=2, context_frames=2).frames, out.frames)
    for kwargs, argument in (({"context_frames": 5}, "context_frames"), ({"num_frames": 0}, "num_frames")):
        with pytest.raises(InvalidArgumentError) as info:
            cascade.extend(clip[:1] if "context_frames" not in kwargs else clip, **{"num_frames": 2, **kwargs})
        assert info.value.argument == argument
    with pytest.raises(InvalidArgumentError, match="the clip has 1 frame, fewer than the 2"):
        cascade.extend(clip[:1], 2, context_frames=2)


def test_video_writer_writes_what_write_video_writes_and_leaves_the_file_alone_on_failure(tmp_path):
    frames = (np.random.default_rng(1).random((9, 16, 16, 3)) * 255).astype(np.uint8)
    for suffix in (".mp4", ".gif"):
        whole = write_video(tmp_path / f"whole{suffix}", frames)
        with VideoWriter(tmp_path / f"pieces{suffix}") as writer:
            for piece in np.split(frames, [2, 3, 7]):
                writer.write(piece)
        assert writer.frames == 9 and (writer.height, writer.width) == (16, 16)
        assert (tmp_path / f"pieces{suffix}").read_bytes() == whole.read_bytes()
    with pytest.raises(RuntimeError), VideoWriter(whole) as writer:
        writer.write(frames[:3])
        raise RuntimeError("interrupted")
    assert whole.read_bytes() == (tmp_path / "pieces.gif").read_bytes()  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pieces.gif", "pieces.mp4", "whole.gif", "whole.mp4"]
    with pytest.raises(ValueError, match="after frames of 16x16"), VideoWriter(tmp_path / "x.mp4") as writer:
        writer.write(frames[:1])
        writer.write(frames[:1, :8])
    assert not (tmp_path / "x.mp4").exists()


@pytest.fixture(scope="module")
def cascade_dir(tmp_path_factory, cascade):
    return cascade.save_pretrained(tmp_path_factory.mktemp("models") / "cascade")


def test_generate_writes_a_long_clip_and_starts_from_an_image(cascade_dir, tmp_path, capsys):
    out = tmp_path / "long.mp4"
    base = ["generate", "a red ball", "--model", str(cascade_dir), "--steps", "2", "--keyframes-only",
            "--decoder", "image"]
    assert main([*base, "--frames", "9", "--out", str(out)]) == 0
    assert read_video(out)[0].shape == (9, 16, 16, 3) and "(9 frames, 16x16" in capsys.readouterr().out
    image = tmp_path / "first.png"
    Image.fromarray(np.full((30, 20), 200, np.uint8), "L").save(image)
    assert main([*base, "--frames", "6", "--image", str(image), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"note: --image: {image} converted from L to RGB, resized from 20x30 to 16x16" in err
    assert read_video(out)[0].shape == (6, 16, 16, 3)


@pytest.mark.parametrize(("setup", "argv", "message"), [
    (lambda d: (d / "bad.png").write_text("not a picture"), ["--image", "{d}/bad.png"], "--image: cannot read"),
    (None, ["--image", "{d}/missing.png"], "--image: no such file"),
    (None, ["--frames", "1", "--image", "{d}/missing.png"], "--frames: --image is the first frame"),
    (None, ["--context-frames", "2"], "--context-frames: not used: --frames 4 fits"),
    (None, ["--frames", "9", "--context-frames", "4"], "--context-frames: must be an integer between 1 and 3"),
])
def test_generate_refuses_bad_long_clip_and_image_input(cascade_dir, tmp_path, capsys, setup, argv, message):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"keep me")
    if setup:
        setup(tmp_path)
    argv = [a.format(d=tmp_path) for a in argv]
    assert main(["generate", "a", "--model", str(cascade_dir), "--steps", "1", "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "Traceback" not in err[0]
    assert out.read_bytes() == b"keep me"


def test_extend_command_appends_frames_and_refuses_bad_clips(cascade_dir, cascade, tmp_path, capsys):
    clip = cascade("a red ball", num_frames=4, interpolate=False, num_inference_steps=2).frames
    source = write_video(tmp_path / "in.gif", clip, fps=12.5)  # gif: the clip's frames come back exactly
    out = tmp_path / "out.gif"
    args = ["extend", str(source), "--model", str(cascade_dir), "--steps", "2", "--out", str(out)]
    assert main([*args, "--frames", "7", "--context-frames", "2"]) == 0
    frames, fps = read_video(out)
    assert frames.shape == (11, 16, 16, 3) and fps == pytest.approx(12.5, rel=0.05)
    assert np.array_equal(frames[:4], read_video(source)[0])  # the clip, then its continuation
    assert "(4 + 7 frames, 16x16" in capsys.readouterr().out

    out.write_bytes(b"keep me")
    (tmp_path / "bad.mp4").write_text("not a video")
    write_video(tmp_path / "big.mp4", np.zeros((4, 128, 128, 3), np.uint8))
    write_video(tmp_path / "odd.mp4", np.zeros((4, 18, 18, 3), np.uint8))
    for argv, message in (([str(tmp_path / "bad.mp4"), "--frames", "3"], "IN: cannot read"),
                          ([str(tmp_path / "missing.mp4"), "--frames", "3"], "IN: no such file"),
                          ([str(source), "--frames", "3", "--context-frames", "5"], "--context-frames: must be between"),
                          ([str(source), "--frames", "3", "--context-frames", "2"], "fewer than the 2"),
                          ([str(tmp_path / "big.mp4"), "--frames", "3", "--context-frames", "2"], "IN: frames of 128x128"),
                          ([str(tmp_path / "odd.mp4"), "--frames", "3", "--context-frames", "2"], "IN: frames of 18x18"),
                          ([str(source), "--frames", "0"], "--frames: must be an integer >= 1"),
                          ([str(source), "--frames", "3", "--guidance", "5"], "--guidance: not used without --prompt")):
        if "fewer than the 2" in message:
            argv = [str(write_video(tmp_path / "one.mp4", clip[:1])), "--frames", "3", "--context-frames", "2"]
        assert main(["extend", *argv, "--model", str(cascade_dir), "--out", str(out)]) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (argv, err)
        assert out.read_bytes() == b"keep me"


def test_long_video_benchmark_compares_a_long_run_with_its_baseline(cascade_dir):
    """benchmarks/long_video.py on the tiny cascade: each length in its own process, the ratios are those
    of the runs' medians."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "long_video.py"
    out = subprocess.run([sys.executable, str(script), "--model", str(cascade_dir), "--frames", "4", "8", "--steps", "1",
                          "--threads", "1", "--json"], check=True, capture_output=True, text=True).stdout
    report = json.loads(out.splitlines()[-1])
    base, long = report["runs"]
    assert (base["frames"], long["frames"]) == (4, 8) and report["frames_ratio"] == 2
    assert report["time_ratio"] == long["seconds"] / base["seconds"]
    assert report["peak_rss_ratio"] == long["peak_mib"] / base["peak_mib"]
    assert all(r["peak_mib"] >= r["loaded_mib"] > 0 and r["cpu_seconds"] > 0 for r in report["runs"])
    assert "target <= 2.2x" in out
