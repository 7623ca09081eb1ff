"""Finding and decoding the video sets that the metrics compare."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..manifest import ManifestError, read_manifest
from ..video_io import UnreadableVideo, read_video

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
    try:
        records = read_manifest(manifest, require_caption=False, must_exist=True)
    except ManifestError as err:
        raise EvaluationError(str(err)) from err
    return [VideoItem(Path(r.path), r.caption) for r in records]


def read_frames(path: str | Path, max_frames: int | None = None) -> np.ndarray:
    """Decode up to ``max_frames`` frames (all if None) as uint8 RGB (F, H, W, 3)."""
    try:
        return read_video(path, max_frames)[0]
    except UnreadableVideo as err:
        raise EvaluationError(str(err)) from err
