"""A small captioned video data set of moving coloured shapes, for trying a whole training run on
a laptop before touching real data: `magicvideo data synthetic OUT --clips N`."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..manifest import VideoRecord, write_manifest
from ..video_io import write_video

COLOURS = {
    "red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 80, 220), "yellow": (235, 210, 40),
    "purple": (150, 60, 190), "orange": (245, 140, 30), "white": (245, 245, 245), "black": (15, 15, 15),
}
SHAPES = ("circle", "square", "triangle")
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}


def _mask(shape: str, size: int, cx: float, cy: float, radius: float) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    if shape == "circle":
        return (x - cx) ** 2 + (y - cy) ** 2 <= radius**2
    if shape == "square":
        return (abs(x - cx) <= radius) & (abs(y - cy) <= radius)
    # an upward triangle inscribed in the radius box
    return (y >= cy - radius) & (y <= cy + radius) & (abs(x - cx) <= (y - (cy - radius)) / 2)


def render_clip(rng: random.Random, num_frames: int, size: int) -> tuple[np.ndarray, str]:
    """One clip (F, size, size, 3) uint8 of a shape crossing a plain background, and its caption."""
    shape, direction = rng.choice(SHAPES), rng.choice(list(DIRECTIONS))
    colour, background = rng.sample(list(COLOURS), 2)
    radius = size * rng.uniform(0.12, 0.2)
    dx, dy = DIRECTIONS[direction]
    speed = size * rng.uniform(0.5, 1.0) / num_frames  # crosses half to all of the frame
    travel = speed * (num_frames - 1)
    cx = size / 2 - dx * travel / 2 + (rng.uniform(-0.2, 0.2) * size if dx == 0 else 0)
    cy = size / 2 - dy * travel / 2 + (rng.uniform(-0.2, 0.2) * size if dy == 0 else 0)
    frames = np.empty((num_frames, size, size, 3), dtype=np.uint8)
    for i in range(num_frames):
        frames[i] = COLOURS[background]
        frames[i][_mask(shape, size, cx + dx * speed * i, cy + dy * speed * i, radius)] = COLOURS[colour]
    article = "an" if colour[0] in "aeiou" else "a"
    return frames, f"{article} {colour} {shape} moving {direction} on a {background} background"


def write_synthetic_dataset(out: str | Path, clips: int, num_frames: int = 32, size: int = 64, fps: float = 8.0,
                            seed: int = 0) -> Path:
    """Write `clips` mp4 files under OUT/videos and OUT/captions.csv (path,caption,fps); returns the CSV path."""
    out = Path(out)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    rows = []
    for i in tqdm(range(clips), desc="synthetic clips", unit="clip"):
        frames, caption = render_clip(rng, num_frames, size)
        rel = f"videos/{i:06d}.mp4"
        write_video(out / rel, frames, fps)
        rows.append(VideoRecord(rel, caption, fps))
    return write_manifest(out / "captions.csv", rows)
