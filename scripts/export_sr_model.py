"""Export a trained super-resolution pipeline (a run's `final/`, task super_resolution) as the SR
model bundled in the package.

    python scripts/export_sr_model.py /work/state/runs/digits-sr/final

Writes src/magicvideo/weights/digits-sr/: the SuperResolutionUNet in float16 safetensors (half the
size; `load_upscale_pipeline` runs it in float32) and its DDIM scheduler (trailing timesteps), with
docs/super-resolution.md as its model card.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

from magicvideo.pipelines.upscale import BUNDLED_SR_MODEL, MagicVideoUpscalePipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("final", type=Path, help="a pipeline folder written by `magicvideo train` (its final/)")
    parser.add_argument("--out", type=Path, default=BUNDLED_SR_MODEL, help="destination (default: the package's)")
    args = parser.parse_args()

    pipe = MagicVideoUpscalePipeline.from_pretrained(args.final)
    pipe.unet.to(torch.float16)
    if args.out.exists():
        shutil.rmtree(args.out)
    pipe.save_pretrained(args.out)
    for config in args.out.rglob("*.json"):  # the folder it was exported from means nothing to users
        data = json.loads(config.read_text())
        if data.pop("_name_or_path", None) is not None:
            config.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    (args.out / "README.md").write_text("# Bundled digits super-resolution model (x4, 64 -> 256)\n\n"
                                        "Model card: docs/super-resolution.md in the repository.\n")
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"exported to {args.out} ({size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
