"""Export a trained super-resolution pipeline (a run's `final/`, task super_resolution) as the SR
model bundled in the package.

    python scripts/export_sr_model.py /work/state/runs/digits-sr/final

Writes src/magicvideo/weights/digits-sr/: the SuperResolutionUNet in float16 safetensors (half the
size; `load_upscale_pipeline` runs it in float32) and its DDIM scheduler (trailing timesteps), with
docs/super-resolution.md as its model card.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _bundle import write_bundled
from magicvideo.pipelines.upscale import BUNDLED_SR_MODEL, MagicVideoUpscalePipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("final", type=Path, help="a pipeline folder written by `magicvideo train` (its final/)")
    parser.add_argument("--out", type=Path, default=BUNDLED_SR_MODEL, help="destination (default: the package's)")
    args = parser.parse_args()

    pipe = MagicVideoUpscalePipeline.from_pretrained(args.final)
    write_bundled(pipe, args.out, "# Bundled digits super-resolution model (x4, 64 -> 256)\n\n"
                                  "Model card: docs/super-resolution.md in the repository.\n")

if __name__ == "__main__":
    main()
