"""Atomic, rotating training checkpoints on top of `accelerate`'s save_state/load_state.

A checkpoint `checkpoints/checkpoint-<step>` holds the model, the EMA weights, the optimizer, the
LR scheduler, every process's RNG states (accelerate's files) and `trainer_state.json` (step,
data position, skipped-video count). It is written into `checkpoints/.tmp-checkpoint-<step>` and
renamed when complete, so a run killed at any moment leaves only whole checkpoints behind.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

STATE = "trainer_state.json"
PATTERN = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_dirs(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := PATTERN.match(p.name)) and (p / STATE).is_file()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    found = checkpoint_dirs(output_dir)
    return found[-1] if found else None


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
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in checkpoint_dirs(output_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator, path: Path) -> dict:
    accelerator.load_state(str(path))
    return json.loads((path / STATE).read_text(encoding="utf-8"))
