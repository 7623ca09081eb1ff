"""Frame sampling as MagicVideo trains: a random segment of the video, `num_frames` frames taken
uniformly from it, and the frame rate that results.

A segment of length (num_frames - 1) * stride + 1 frames at a random start gives `num_frames`
frames spaced `stride` apart; their frame rate is native_fps / stride, which the U-Net receives
as `fps`. The stride is drawn uniformly from [min_stride, max_stride], capped so the segment fits.
A share of the segments (`data.first_frame_share`) can be made to start at the video's first frame:
for captions that describe how a video begins (the bouncing digits' name their initial direction).
"""

from __future__ import annotations

import random
from dataclasses import dataclass


class VideoTooShort(ValueError):
    """The video has fewer frames than one clip needs."""


@dataclass(frozen=True)
class ClipIndices:
    indices: list[int]
    stride: int
    fps: float


def sample_clip(
    total_frames: int, native_fps: float, num_frames: int, min_stride: int, max_stride: int, rng: random.Random,
    first_frame_share: float = 0.0,
) -> ClipIndices:
    """Pick `num_frames` frame indices of a `total_frames`-frame video (see module docstring); with
    probability `first_frame_share` the segment starts at the video's first frame."""
    if total_frames < (num_frames - 1) * min_stride + 1:
        raise VideoTooShort(
            f"{total_frames} frames, a clip needs {(num_frames - 1) * min_stride + 1} (num_frames={num_frames}, "
            f"min_stride={min_stride})"
        )
    longest = (total_frames - 1) // (num_frames - 1) if num_frames > 1 else max_stride
    stride = rng.randint(min_stride, max(min_stride, min(max_stride, longest)))
    span = (num_frames - 1) * stride + 1
    start = rng.randint(0, total_frames - span)
    if first_frame_share and rng.random() < first_frame_share:  # no extra draw by default: streams unchanged
        start = 0
    return ClipIndices([start + i * stride for i in range(num_frames)], stride, native_fps / stride)


def sample_rng(seed: int, position: int, salt: int = 0) -> random.Random:
    """The random source of one sample of the data stream: a function of (seed, position) only, so
    any number of processes, workers or a resumed run draw exactly the same clips."""
    return random.Random(f"{seed}:{position}:{salt}")
