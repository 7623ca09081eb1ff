"""`magicvideo upscale`: x4 super-resolution of a clip, frame by frame with shared noise (cascade stage 3)."""

from __future__ import annotations

import json
from pathlib import Path

from . import ALLOW_LARGE_HELP, UserError, refuse_unused

# library argument names -> the flag that sets them
FLAGS = {"scale": "--scale", "num_inference_steps": "--steps", "noise_level": "--noise-level", "model": "--model",
         "video": "IN", "batch_size": "--batch-size", "output_type": "--out"}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "upscale",
        help="upscale a clip x4 with the diffusion super-resolution stage",
        description="Upscale every frame of a clip x4 with a pixel-space diffusion super-resolution model "
        "(default: the digits SR model bundled with the package, 64x64 -> 256x256), the same noise for every "
        "frame (temporal consistency) and a deterministic DDIM sampler. --model also takes a "
        "StableDiffusionUpscalePipeline folder (stable-diffusion-x4-upscaler).",
    )
    p.add_argument("input", metavar="IN", help="input clip (.mp4 or any format PyAV reads)")
    p.add_argument("--out", default="upscaled.mp4", help="output clip, .mp4 or .gif (default: upscaled.mp4)")
    p.add_argument("--scale", type=int, default=4, help="upscaling factor; must be the model's (default: 4)")
    p.add_argument("--model", help="an SR pipeline folder (`magicvideo train` with task super_resolution, final/) or a "
                   "StableDiffusionUpscalePipeline folder (default: the bundled digits SR model)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: 1 for the SR model, 20 for SD x4)")
    p.add_argument("--noise-level", type=int, default=None,
                   help="noise augmentation of the input frames (default: 0 for the SR model, 20 for SD x4)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--independent-noise", action="store_true",
                   help="draw fresh noise for every frame instead of sharing it (more flicker; for comparison)")
    p.add_argument("--prompt", help="text prompt (SD x4 upscaler models only; default: none)")
    p.add_argument("--batch-size", type=int, default=4, help="frames per network call (default: 4)")
    p.add_argument("--fps", type=float, default=None, help="output frame rate, > 0 (default: the input's)")
    p.add_argument("--allow-large", action="store_true", help=ALLOW_LARGE_HELP)
    p.add_argument("--device", help="torch device, e.g. cpu or cuda (default: cuda if available, else cpu)")
    p.set_defaults(func=run)


def _kind(folder: Path) -> str | None:
    try:
        return json.loads((folder / "model_index.json").read_text(encoding="utf-8")).get("_class_name")
    except (OSError, ValueError):
        return None


def run(args) -> int:
    from ..devices import resolve_device
    from ..errors import InvalidArgumentError
    from ..limits import check_size
    from ..video_io import probe_video, read_video, write_video

    source = Path(args.input)
    if not source.is_file():
        raise UserError(f"IN: no such file {source}")
    if Path(args.out).suffix.lower() not in (".mp4", ".gif"):
        raise UserError(f"--out: unsupported format {Path(args.out).suffix or '(none)'!r}: use .mp4 or .gif")
    if args.steps is not None and args.steps < 1:
        raise UserError(f"--steps must be at least 1, got {args.steps}")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.fps is not None and not args.fps > 0:
        raise UserError(f"--fps: must be > 0, got {args.fps:g}")
    if args.model is not None:
        folder = Path(args.model)
        if not (folder / "model_index.json").is_file():
            raise UserError(f"--model: {folder} is not a pipeline folder (no model_index.json)")
        kind = _kind(folder)
        if kind not in ("MagicVideoUpscalePipeline", "StableDiffusionUpscalePipeline"):
            raise UserError(f"--model: {folder} holds a {kind}, not a super-resolution model "
                            "(MagicVideoUpscalePipeline or StableDiffusionUpscalePipeline)")
    else:
        kind = "MagicVideoUpscalePipeline"
    if kind != "StableDiffusionUpscalePipeline":
        refuse_unused(args, "not used: only Stable Diffusion x4 upscaler models (--model) take a prompt", "prompt")
    device = resolve_device(args.device)
    try:
        clip = probe_video(source)
    except Exception as err:  # PyAV raises its own error types for undecodable files
        raise UserError(f"IN: cannot read a clip from {source}: {err}") from None

    import torch
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.disable_progress_bar()
    # flags left out take the stage's own defaults (ours: 1 step, noise level 0; SD x4: 20 and 20)
    given = {name: value for name, value in (("num_inference_steps", args.steps), ("noise_level", args.noise_level))
             if value is not None}
    try:
        if kind == "StableDiffusionUpscalePipeline":
            from ..pipelines.upscale import SDUpscaleStage

            stage = SDUpscaleStage(args.model)
            stage.pipe.to(device)
            trained = stage.pipe.unet.config.sample_size  # the low-resolution input's size (latents are at it)
        else:
            from ..pipelines.upscale import load_upscale_pipeline

            pipe = load_upscale_pipeline(args.model, device)
            pipe.set_progress_bar_config(leave=False)
            trained = pipe.unet.config.sample_size // pipe.scale
        check_size(clip.height, clip.width, trained, trained, allow_large=args.allow_large, arguments=("video", "video"))
        try:
            frames, fps = read_video(source)
        except Exception as err:  # PyAV raises its own error types for undecodable files
            raise UserError(f"IN: cannot read a clip from {source}: {err}") from None
        if kind == "StableDiffusionUpscalePipeline":
            out = stage(frames, prompt=args.prompt or "", seed=args.seed, shared_noise=not args.independent_noise,
                        batch_size=args.batch_size, output_type="uint8", scale=args.scale, **given).frames
        else:
            out = pipe(frames, generator=torch.Generator().manual_seed(args.seed), shared_noise=not args.independent_noise,
                       output_type="uint8", scale=args.scale, batch_size=args.batch_size, **given).frames
    except InvalidArgumentError as err:
        raise UserError(f"{FLAGS.get(err.argument, err.argument)}: {err.message}") from None
    path = write_video(args.out, out, fps if args.fps is None else args.fps)
    print(f"{path}: {out.shape[0]} frames {frames.shape[2]}x{frames.shape[1]} -> {out.shape[2]}x{out.shape[1]}")
    return 0
