"""The one reader and writer of video manifests: CSV files listing ``path,caption[,fps]``.

Used by training (`data.manifest`), evaluation (FVD and CLIPSIM of a manifest), generation (the
manifest of generated clips) and the digits tools (`captions.csv` with digit, direction and source
columns). Paths are relative to a root folder, by default the manifest's own.
"""

from __future__ import annotations

import csv
import string
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

COLUMNS = ("path", "caption", "fps")


class ManifestError(ValueError):
    """A manifest that cannot be read as asked (the message names the file and the row)."""


@dataclass(frozen=True)
class VideoRecord:
    """One video of a manifest: `path` (absolute, or relative to the manifest when writing),
    `caption` (None when the manifest has none), `fps` (None: read it from the file) and the row's
    other columns in `extra`."""

    path: str
    caption: str | None = None
    fps: float | None = None
    extra: dict = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class ManifestColumns:
    """How the columns of a CSV manifest map onto a video record.

    `path`: a Python format string over the row's columns giving the video path relative to the
    root folder; `caption` and `fps`: column names (a missing fps column means "read the fps from
    the file"). The defaults read `path,caption[,fps]`; WebVid's CSV (videoid, name, page_dir, ...)
    is read with path="{page_dir}/{videoid}.mp4", caption="name" (the layout of its downloaders).
    A manifest whose first row does not name its columns is read as path, caption, fps by position.
    """

    path: str = "{path}"
    caption: str = "caption"
    fps: str = "fps"


def _fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def _has_header(first: list[str], columns: ManifestColumns) -> bool:
    """Whether the first row names columns (any of path, caption, fps or the path format's)."""
    known = {"path", columns.caption, columns.fps, *_fields(columns.path)}
    return bool({cell.strip().lower() for cell in first} & {name.lower() for name in known})


def read_manifest(manifest: str | Path, root: str | Path | None = None, columns: ManifestColumns = ManifestColumns(),
                  require_caption: bool = True, must_exist: bool = False) -> list[VideoRecord]:
    """The videos a CSV manifest lists, in order, with absolute paths (relative ones are taken from
    `root`, by default the manifest's folder). Raises `ManifestError` (a ValueError) for a manifest
    without videos, without the caption column (`require_caption`), with unknown path columns, or
    (with `must_exist`) listing a file that does not exist."""
    manifest = Path(manifest)
    root = Path(root) if root is not None else manifest.parent
    with open(manifest, newline="", encoding="utf-8") as f:
        rows = [row for row in csv.reader(f) if row and any(cell.strip() for cell in row)]
    records = []
    if rows and _has_header(rows[0], columns):
        header = [cell.strip() for cell in rows[0]]
        if "path" not in header and "{path}" == columns.path:
            header = [("path" if cell.lower() == "path" else cell) for cell in header]
        if require_caption and columns.caption not in header:
            raise ManifestError(f"{manifest}: no caption column {columns.caption!r} (columns: {header})")
        named = [dict(zip(header, row)) for row in rows[1:]]
        first_line = 2
    else:
        named = [dict(zip(COLUMNS, row)) for row in rows]
        if require_caption and any(len(row) < 2 for row in rows):
            raise ManifestError(f"{manifest}: every row needs path,caption (no header row naming the columns)")
        first_line = 1
    for line, row in enumerate(named, start=first_line):
        try:
            rel = columns.path.format(**row).strip()
        except KeyError as err:
            raise ManifestError(f"{manifest}:{line}: path format {columns.path!r} needs column {err}") from None
        path = root / rel
        if must_exist and not path.is_file():
            raise ManifestError(f"{manifest}: video {rel!r} (row {line - first_line + 1}) does not exist")
        fps = (row.get(columns.fps) or "").strip()
        caption = row.get(columns.caption)
        try:
            records.append(VideoRecord(str(path), caption, float(fps) if fps else None, row))
        except ValueError:
            raise ManifestError(f"{manifest}:{line}: fps {fps!r} is not a number") from None
    if not records:
        raise ManifestError(f"{manifest}: no videos listed")
    return records


def write_manifest(manifest: str | Path, records: Iterable[VideoRecord], extra_columns: Iterable[str] = ()) -> Path:
    """Write `records` as ``path,caption,fps[,extra...]`` (paths relative to the manifest's folder
    where they lie below it), atomically: a reader never sees half a file."""
    manifest = Path(manifest)
    extra_columns = tuple(extra_columns)
    manifest.parent.mkdir(parents=True, exist_ok=True)
    partial = manifest.with_name(manifest.name + ".partial")
    with open(partial, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS + extra_columns)
        for record in records:
            path = Path(record.path)
            if path.is_absolute() and path.is_relative_to(manifest.parent.resolve()):
                path = path.relative_to(manifest.parent.resolve())
            elif path.is_absolute() and path.is_relative_to(manifest.parent.absolute()):
                path = path.relative_to(manifest.parent.absolute())
            fps = "" if record.fps is None else f"{record.fps:g}"
            writer.writerow((path.as_posix(), record.caption or "", fps, *(record.extra.get(c, "") for c in extra_columns)))
    partial.replace(manifest)
    return manifest
