"""The one reader and writer of clips: mp4 (H.264 through PyAV) and gif (Pillow).

`read_video` decodes a whole clip (or its first frames), `decode_clip` only the frames a sampler
chooses (training), `write_video` writes one atomically enough for a reader never to see a
truncated file (a temporary name, renamed when complete)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image


def to_uint8(frames) -> np.ndarray:
    """Floats in [0, 1] (clipped) or uint8, of any shape -> uint8."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        frames = (np.clip(frames, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    return frames


def write_video(path: str | Path, frames, fps: float = 8, crf: int = 18) -> Path:
    """Write (F, H, W, 3) frames (uint8, or float in [0, 1]) to `.mp4` (H.264, yuv420p) or `.gif`."""
    path = Path(path)
    frames = to_uint8(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (F, H, W, 3), got shape {frames.shape}")
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


class UnreadableVideo(ValueError):
    """A file that is not a decodable video, or has no frames."""


def read_video(path: str | Path, max_frames: int | None = None) -> tuple[np.ndarray, float]:
    """Decode a clip (its first `max_frames` frames, or all): (frames uint8 (F, H, W, 3), frames per second).
    Raises `UnreadableVideo` (a ValueError) for anything that cannot be decoded."""
    frames = []
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0) or 8.0
            for frame in container.decode(stream):
                frames.append(frame.to_ndarray(format="rgb24"))
                if max_frames is not None and len(frames) == max_frames:
                    break
    except (av.FFmpegError, IndexError, OSError) as err:
        raise UnreadableVideo(f"cannot decode video {path}: {err}") from err
    if not frames:
        raise UnreadableVideo(f"video {path} has no frames")
    return np.stack(frames), fps


def decode_clip(source, choose, fps_override: float | None = None):
    """Decode only the frames `choose(total_frames, native_fps) -> ClipIndices` selects from a video
    (path or file object); returns uint8 frames (F, H, W, 3) and the chosen indices. Raises
    `UnreadableVideo` for a truncated file (fewer frames than the container announces)."""
    with av.open(source) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        native_fps = fps_override or (float(rate) if rate else None)
        if not native_fps:
            raise UnreadableVideo("unknown frame rate")
        total = stream.frames
        if not total and stream.duration and stream.time_base:
            total = int(round(float(stream.duration * stream.time_base) * native_fps))
        if not total:
            total = sum(1 for _ in container.decode(stream))
            container.seek(0)
        clip = choose(total, native_fps)
        wanted = {index: slot for slot, index in enumerate(clip.indices)}
        frames: list[np.ndarray | None] = [None] * len(clip.indices)
        for index, frame in enumerate(container.decode(stream)):
            if index in wanted:
                frames[wanted[index]] = frame.to_ndarray(format="rgb24")
            if index >= clip.indices[-1]:
                break
    if any(frame is None for frame in frames):
        raise UnreadableVideo(f"decoded fewer frames than the {total} the container announces (truncated?)")
    return np.stack(frames), clip


def contact_sheet(rows: list[np.ndarray], frames: int | None = None, gap: int = 2) -> np.ndarray:
    """Rows of clips (F, H, W, 3), floats in [0, 1] or uint8 (as `read_video` returns them) -> one image
    (uint8): each row one clip, frames side by side, on a white grid."""
    rows = [to_uint8(r) for r in rows]
    count = min(len(r) for r in rows) if frames is None else frames
    h, w = rows[0].shape[1:3]
    sheet = np.full((len(rows) * (h + gap) - gap, count * (w + gap) - gap, 3), 255, dtype=np.uint8)
    for i, clip in enumerate(rows):
        for j in range(count):
            sheet[i * (h + gap):i * (h + gap) + h, j * (w + gap):j * (w + gap) + w] = clip[j]
    return sheet
