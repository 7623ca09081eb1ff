"""The one reader and writer of clips: mp4 (H.264 through PyAV) and gif (Pillow).

`read_video` decodes a whole clip (or its first frames), `probe_video` reads only its size and
length, `decode_clip` only the frames a sampler chooses (training), `write_video` writes one
atomically (a temporary name in the same folder, renamed when complete), so that a reader never
sees a truncated file and an interrupted write leaves an existing file untouched. `VideoWriter` is
the same writer taking frames as they are made (a frame sink: a long clip is never all in memory)."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

# x264 settings that make an mp4 depend only on its frames (and the x264 build):
# - no-mbtree: x264's macroblock-tree rate control, run with its AVX-512 kernels (CPUs that have
#   them), gives a different encoding of the same frames in most writes (up to 30 grey levels on
#   decoded pixels): measured on 64x64 clips, 25 distinct results in 30 writes, also single-threaded;
#   identical in every write with mbtree off, or with x264's instruction sets capped at AVX2.
# - threads=1: x264 is deterministic for a given thread count, but its default count follows the
#   CPU's cores, and different counts encode (256x256 frames) differently.
X264_OPTIONS = {"threads": "1", "x264-params": "no-mbtree=1"}


def to_uint8(frames) -> np.ndarray:
    """Floats in [0, 1] (clipped) or uint8, of any shape -> uint8."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        frames = (np.clip(frames, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    return frames


def write_video(path: str | Path, frames, fps: float = 8, crf: int = 18) -> Path:
    """Write (F, H, W, 3) frames (uint8, or float in [0, 1]) to `.mp4` (H.264, yuv420p) or `.gif`.

    The file depends only on the frames, fps and crf (`X264_OPTIONS`): the same frames written twice
    give the same bytes. It is written under a hidden temporary name in its folder and renamed over
    `path` when complete, so an interrupted write leaves an existing `path` as it was."""
    frames = to_uint8(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (F, H, W, 3), got shape {frames.shape}")
    with VideoWriter(path, fps, crf) as writer:
        writer.write(frames)
    return writer.path


class VideoWriter:
    """`write_video` for frames that come in pieces: `write(frames)` appends (n, H, W, 3) frames (uint8,
    or floats in [0, 1]) as they are made, `close()` (or leaving a `with` block) completes the file.

    Written as `write_video` writes (the same bytes for the same frames, however they are split into
    pieces): under a hidden temporary name, renamed over `path` on `close()`; leaving the `with` block
    by an exception (or `abort()`) removes the temporary file and leaves an existing `path` as it was.
    An mp4's frames are encoded as they come, so memory stays flat however long the clip; a gif keeps
    its frames until `close()` (Pillow writes a gif at once). `frames`, `height`, `width`: what was
    written so far."""

    def __init__(self, path: str | Path, fps: float = 8, crf: int = 18):
        self.path, self.fps, self.crf = Path(path), fps, crf
        self.suffix = self.path.suffix.lower()
        if self.suffix not in (".gif", ".mp4"):
            raise ValueError(f"unsupported video format {self.suffix!r}: use .mp4 or .gif")
        self.frames, self.height, self.width = 0, None, None
        self.temporary = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:12]}.tmp")
        self._container = self._stream = None
        self._images: list[Image.Image] = []

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()

    def _open(self, height: int, width: int) -> None:
        if self.suffix == ".mp4" and (height % 2 or width % 2):
            raise ValueError(f"H.264 needs even frame sizes, got {width}x{height}")
        self.height, self.width = height, width
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.suffix == ".mp4":
            self._container = av.open(str(self.temporary), mode="w", format="mp4")
            self._stream = self._container.add_stream("libx264", rate=Fraction(self.fps).limit_denominator(1000))
            self._stream.width, self._stream.height, self._stream.pix_fmt = width, height, "yuv420p"
            self._stream.options = {"crf": str(self.crf), **X264_OPTIONS}

    def write(self, frames) -> None:
        """Append frames (n, H, W, 3), all of the size of the first ones written."""
        frames = to_uint8(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be (F, H, W, 3), got shape {frames.shape}")
        if self.height is None:
            self._open(*frames.shape[1:3])
        elif frames.shape[1:3] != (self.height, self.width):
            raise ValueError(f"frames of {frames.shape[2]}x{frames.shape[1]} after frames of {self.width}x{self.height}")
        if self._stream is None:
            self._images.extend(Image.fromarray(frame) for frame in frames)
        else:
            for frame in frames:
                for packet in self._stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    self._container.mux(packet)
        self.frames += len(frames)

    def close(self) -> Path:
        """Complete the file and move it to `path`."""
        try:
            if self._stream is not None:
                for packet in self._stream.encode():
                    self._container.mux(packet)
                self._container.close()
                self._container = self._stream = None
            elif self._images:
                self._images[0].save(self.temporary, format="GIF", save_all=True, append_images=self._images[1:],
                                     duration=round(1000 / self.fps), loop=0)
            else:
                raise ValueError(f"no frames were written to {self.path}")
            os.replace(self.temporary, self.path)
        finally:
            self.abort()
        return self.path

    def abort(self) -> None:
        """Stop without completing the file: `path` is left as it was."""
        if self._container is not None:
            self._container.close()
            self._container = self._stream = None
        self._images = []
        self.temporary.unlink(missing_ok=True)


class UnreadableVideo(ValueError):
    """A file that is not a decodable video, or has no frames."""


def read_video(path: str | Path, max_frames: int | None = None) -> tuple[np.ndarray, float]:
    """Decode a clip (its first `max_frames` frames, or all): (frames uint8 (F, H, W, 3), frames per second).
    Raises `UnreadableVideo` (a ValueError) for anything that cannot be decoded."""
    frames = []
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            fps = _frame_rate(stream)
            for frame in container.decode(stream):
                frames.append(frame.to_ndarray(format="rgb24"))
                if max_frames is not None and len(frames) == max_frames:
                    break
    except (av.FFmpegError, IndexError, OSError) as err:
        raise UnreadableVideo(f"cannot decode video {path}: {err}") from err
    if not frames:
        raise UnreadableVideo(f"video {path} has no frames")
    return np.stack(frames), fps


def _frame_rate(stream) -> float:
    """A video stream's frames per second (8 when the container does not say)."""
    return float(stream.average_rate or stream.guessed_rate or 0) or 8.0


@dataclass(frozen=True)
class VideoInfo:
    """What `probe_video` reads from a container: frame count, frame size, frames per second."""

    frames: int
    height: int
    width: int
    fps: float


def probe_video(path: str | Path) -> VideoInfo:
    """A clip's length, frame size and rate, without decoding it (its packets are counted when the
    container does not state its length): for checking a clip's size before reading it. Raises
    `UnreadableVideo` (a ValueError) for anything that is not a video."""
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            width, height, fps = stream.codec_context.width, stream.codec_context.height, _frame_rate(stream)
            frames = stream.frames or sum(1 for packet in container.demux(stream) if packet.size)
    except (av.FFmpegError, IndexError, OSError) as err:
        raise UnreadableVideo(f"cannot decode video {path}: {err}") from err
    if not frames or not width or not height:
        raise UnreadableVideo(f"video {path} has no frames")
    return VideoInfo(frames, height, width, fps)


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
