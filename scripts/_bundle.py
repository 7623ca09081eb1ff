"""What every export script does last: write a pipeline as a bundled model folder of the package."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch


def write_bundled(pipe, out: Path, model_card: str) -> None:
    """Save `pipe` to `out` (replaced) with its U-Net in float16 (half the package size; loaded back in
    float32 on CPUs), no `_name_or_path` in its configs (the folder it came from means nothing to
    users), `model_card` as README.md, and print the files' sizes."""
    pipe.unet.to(torch.float16)
    if out.exists():
        shutil.rmtree(out)
    pipe.save_pretrained(out)
    for config in out.rglob("*.json"):
        data = json.loads(config.read_text())
        if data.pop("_name_or_path", None) is not None:
            config.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    (out / "README.md").write_text(model_card)
    sizes = {p.relative_to(out): p.stat().st_size for p in out.rglob("*") if p.is_file()}
    for path, size in sorted(sizes.items()):
        print(f"{size / 2**20:8.2f} MiB  {path}")
    print(f"{sum(sizes.values()) / 2**20:8.2f} MiB  total in {out}")
