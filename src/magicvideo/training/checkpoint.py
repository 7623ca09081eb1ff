"""Atomic, verified, rotating training checkpoints on top of `accelerate`'s save_state/load_state.

A checkpoint `checkpoints/checkpoint-<step>` holds the model, the EMA weights, the optimizer, the
LR scheduler, every process's RNG states (accelerate's files), `trainer_state.json` (step, data
position, skipped-video count) and `checksums.json`, the SHA-256 and size of every other file. It is
written into `checkpoints/.tmp-checkpoint-<step>`, every file and the folder are flushed to disk
(fsync), and only then renamed (and the parent folder flushed), so a run killed at any moment, or a
power cut, leaves only whole checkpoints behind. On resume the newest checkpoint whose files match
its manifest is used: a damaged one (truncated, a flipped byte) is reported in one line and skipped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from pathlib import Path

from ..loading import follow_umask

STATE = "trainer_state.json"
MANIFEST = "checksums.json"
PATTERN = re.compile(r"^checkpoint-(\d+)$")

logger = logging.getLogger(__name__)


def checkpoint_dirs(output_dir: str | Path) -> list[Path]:
    """Checkpoint folders of a run that were renamed into place (complete when written), oldest first."""
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := PATTERN.match(p.name)) and (p / STATE).is_file()]
    return [p for _, p in sorted(found)]


def check_new_run(output_dir: str | Path) -> None:
    """ValueError if ``output_dir`` already holds a run (checkpoints or a final model) that a new run would
    overwrite; the message says how to continue it or keep it."""
    output_dir = Path(output_dir)
    found = checkpoint_dirs(output_dir)
    held = (f"checkpoints up to step {int(PATTERN.match(found[-1].name).group(1))}" if found else
            "a final model" if (output_dir / "final").exists() else None)
    if held:
        raise ValueError(f"output.output_dir: {output_dir} already holds a run ({held}); pass --resume to continue "
                         "it, or choose another folder (--output-dir); nothing was changed")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    """Flush a file, or a folder's entries, to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def checkpoint_problem(path: Path) -> str | None:
    """Why the checkpoint folder `path` cannot be trusted (a file missing, of another size or
    content than its manifest says), or None when it is whole. A checkpoint written before manifests
    existed (no checksums.json) cannot be checked and is taken as whole."""
    manifest = path / MANIFEST
    if not manifest.is_file():
        return None
    try:
        files = json.loads(manifest.read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"{MANIFEST} is unreadable ({err})"
    for name, expected in sorted(files.items()):
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != expected["bytes"]:
            return f"{name} has {file.stat().st_size} bytes, its manifest says {expected['bytes']}"
        if _sha256(file) != expected["sha256"]:
            return f"{name} differs from its checksum"
    return None


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest checkpoint of a run whose files match its manifest; each newer one that does not
    is reported (one warning line) and passed over."""
    for path in reversed(checkpoint_dirs(output_dir)):
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        logger.warning("checkpoint %s is damaged (%s): skipped, an earlier one is used", path, problem)
    return None


def _write_manifest(folder: Path) -> None:
    """Flush every file of `folder` to disk, then write (and flush) its manifest."""
    files = {}
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        _fsync(file)
        files[file.relative_to(folder).as_posix()] = {"bytes": file.stat().st_size, "sha256": _sha256(file)}
    with open(folder / MANIFEST, "w", encoding="utf-8") as f:
        json.dump({"files": files}, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    for sub in sorted({p.parent for p in folder.rglob("*")}):
        _fsync(sub)


def save_checkpoint(accelerator, output_dir: str | Path, step: int, state: dict, keep: int) -> Path:
    """Collective: every process calls it. Returns the checkpoint folder."""
    root = Path(output_dir) / "checkpoints"
    final, tmp = root / f"checkpoint-{step:08d}", root / f".tmp-checkpoint-{step:08d}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / STATE).write_text(json.dumps(state, indent=1), encoding="utf-8")
        follow_umask(tmp)
        _write_manifest(tmp)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        _fsync(root)
        for old in checkpoint_dirs(output_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator, path: Path) -> dict:
    accelerator.load_state(str(path))
    return json.loads((path / STATE).read_text(encoding="utf-8"))
