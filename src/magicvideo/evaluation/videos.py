"""Finding and decoding the video sets that the metrics compare."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

VIDEO_SUFFIXES = (".mp4", ".gif", ".webm", ".mov", ".avi", ".mkv")


class EvaluationError(ValueError):
    """Input that would make a metric wrong or meaningless (the CLI reports it as a UserError)."""


class EvaluationWarning(UserWarning):
    """A metric was computed but is less trustworthy (the CLI prints it as a warning)."""


@dataclass(frozen=True)
class VideoItem:
    path: Path
    caption: str | None = None


def list_videos(source: str | Path) -> list[VideoItem]:
    """The videos of a folder (sorted by name) or of a CSV manifest.

    A manifest has rows ``path,caption[,fps]`` (an optional header row starting with ``path``);
    paths are relative to the manifest's folder.
    """
    source = Path(source)
    if source.is_dir():
        items = [
            VideoItem(p)
            for p in sorted(source.iterdir())
            if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES
        ]
        if not items:
            raise EvaluationError(f"no videos ({', '.join(VIDEO_SUFFIXES)}) in folder {source}")
        return items
    if source.is_file() and source.suffix.lower() == ".csv":
        return _read_manifest(source)
    raise EvaluationError(f"{source} is neither a folder of videos nor a .csv manifest")


def _read_manifest(manifest: Path) -> list[VideoItem]:
    with open(manifest, newline="", encoding="utf-8") as f:
        rows = [row for row in csv.reader(f) if row and any(cell.strip() for cell in row)]
    if rows and rows[0][0].strip().lower() == "path":
        rows = rows[1:]
    items = []
    for line, row in enumerate(rows, start=1):
        path = manifest.parent / row[0].strip()
        if not path.is_file():
            raise EvaluationError(f"{manifest}: video {row[0]!r} (row {line}) does not exist")
        items.append(VideoItem(path, row[1] if len(row) > 1 else None))
    if not items:
        raise EvaluationError(f"manifest {manifest} lists no videos")
    return items


def read_frames(path: str | Path, max_frames: int | None = None) -> np.ndarray:
    """Decode up to ``max_frames`` frames (all if None) as uint8 RGB (F, H, W, 3)."""
    frames = []
    try:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                frames.append(frame.to_ndarray(format="rgb24"))
                if max_frames is not None and len(frames) == max_frames:
                    break
    except (av.FFmpegError, IndexError) as err:
        raise EvaluationError(f"cannot decode video {path}: {err}") from err
    if not frames:
        raise EvaluationError(f"video {path} has no frames")
    return np.stack(frames)
