"""Reading and writing clips: mp4 (H.264 through PyAV) and gif (Pillow)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image


def to_uint8(frames) -> np.ndarray:
    """(F, H, W, 3) float in [0, 1] or uint8 -> uint8."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        frames = (np.clip(frames, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (F, H, W, 3), got shape {frames.shape}")
    return frames


def write_video(path: str | Path, frames, fps: float = 8, crf: int = 18) -> Path:
    """Write (F, H, W, 3) frames (uint8, or float in [0, 1]) to `.mp4` (H.264, yuv420p) or `.gif`."""
    path = Path(path)
    frames = to_uint8(frames)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".gif":
        images = [Image.fromarray(frame) for frame in frames]
        images[0].save(path, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
    elif suffix == ".mp4":
        height, width = frames.shape[1:3]
        if height % 2 or width % 2:
            raise ValueError(f"H.264 needs even frame sizes, got {width}x{height}")
        with av.open(str(path), mode="w") as container:
            stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"crf": str(crf)}
            for frame in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    else:
        raise ValueError(f"unsupported video format {suffix!r}: use .mp4 or .gif")
    return path


def read_video(path: str | Path) -> tuple[np.ndarray, float]:
    """Decode a whole clip: returns (frames uint8 (F, H, W, 3), frames per second)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0) or 8.0
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    if not frames:
        raise ValueError(f"{path}: no video frames")
    return np.stack(frames), fps
