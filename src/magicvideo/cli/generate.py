"""`magicvideo generate`: text to video clips (mp4 or gif)."""

from __future__ import annotations

import sys
from pathlib import Path

from . import UserError

DTYPES = ("fp32", "fp16", "bf16")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "generate",
        help="generate video clips from text",
        description="Generate a clip from a text prompt (or one clip per line of --prompts-file). "
        "Without --model, the small digits model bundled with the package is used "
        "(prompts like \"the digit 7 moves to the right\").",
    )
    p.add_argument("prompt", nargs="?", help="the text prompt (omit when using --prompts-file)")
    p.add_argument("--out", default="out.mp4", help="output file, .mp4 (H.264) or .gif (default: out.mp4)")
    p.add_argument("--prompts-file", help="text file with one prompt per line (or a CSV with a caption column): writes one "
                   "clip per prompt into --out-dir, loading the model once")
    p.add_argument("--out-dir", default="outputs", help="folder for --prompts-file clips (default: outputs)")
    p.add_argument("--format", choices=("mp4", "gif"), default="mp4", help="clip format with --prompts-file (default: mp4)")
    add_generation_options(p)
    p.set_defaults(func=run, argument_flags=OPTION_NAMES)


def add_generation_options(p) -> None:
    """The model and sampling options, shared by `generate` and `eval protocol`."""
    p.add_argument("--model", help="a MagicVideo pipeline folder (default: the bundled digits model)")
    p.add_argument("--frames", type=int, help="number of keyframes (default: the model's, 16)")
    p.add_argument("--steps", type=int, default=25, help="denoising steps (default: 25)")
    p.add_argument("--guidance", type=float, default=7.5, help="classifier-free guidance scale; <= 1 disables it (default: 7.5)")
    p.add_argument("--negative", default=None, help="negative prompt for guidance (default: empty)")
    p.add_argument("--seed", type=int, default=0, help="random seed; the i-th clip of a prompt list uses seed + i (default: 0)")
    p.add_argument("--fps", type=float, default=8, help="frame rate the model is conditioned on and the clip is written at; "
                   "lower = more motion per frame (default: 8)")
    p.add_argument("--height", type=int, help="frame height in pixels (default: the model's)")
    p.add_argument("--width", type=int, help="frame width in pixels (default: the model's)")
    p.add_argument("--scheduler", help="sampler: ddim, ddpm, dpm++ (DPM-Solver++), euler (default: the model's own)")
    p.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda (default: cuda if available, else cpu)")
    p.add_argument("--dtype", choices=DTYPES, default=None, help="weights precision (default: fp16 on cuda, fp32 on cpu)")


def pipeline_from_args(args):
    """The pipeline of --model/--device/--dtype with --scheduler swapped in."""
    from ..loading import load_pipeline

    pipe = load_pipeline(args.model, args.device, args.dtype)
    if args.scheduler:
        pipe.set_scheduler(args.scheduler)
    return pipe


# pipeline argument -> the CLI option that sets it (for error messages)
OPTION_NAMES = {"num_frames": "--frames", "num_inference_steps": "--steps", "guidance_scale": "--guidance",
                "height": "--height", "width": "--width", "fps": "--fps", "prompt": "PROMPT",
                "negative_prompt": "--negative", "model": "--model", "scheduler": "--scheduler", "seed": "--seed",
                "device": "--device", "dtype": "--dtype"}


def pipeline_settings(args) -> dict:
    """The pipeline call arguments set by the generation options shared by `generate` and `eval protocol`."""
    return dict(negative_prompt=args.negative, num_frames=args.frames, height=args.height, width=args.width,
                num_inference_steps=args.steps, guidance_scale=args.guidance)


def read_prompts_file(path: str, option: str = "--prompts-file") -> list[str]:
    from ..generation import read_prompts

    try:
        prompts = read_prompts(path)
    except OSError as err:
        raise UserError(f"{option}: cannot read {path}: {err.strerror}") from err
    except (ValueError, UnicodeDecodeError) as err:
        raise UserError(f"{option}: {err}") from err
    if not prompts:
        raise UserError(f"{option}: {path} has no prompts")
    return prompts


def run(args) -> int:
    from ..generation import ClipJob, generate_clips, plan_clips

    if args.prompts_file:
        if args.prompt:
            raise UserError("give either PROMPT or --prompts-file, not both")
        jobs = plan_clips(read_prompts_file(args.prompts_file), args.out_dir, args.seed, format=args.format)
    elif args.prompt:
        jobs = [ClipJob(args.prompt, args.seed, Path(args.out))]
        if jobs[0].path.suffix.lower() not in (".mp4", ".gif"):
            raise UserError(f"--out: {args.out} must end in .mp4 or .gif")
    else:
        raise UserError("give a PROMPT (or --prompts-file); see --help")

    pipe = pipeline_from_args(args)
    warning = pipe.fps_warning(args.fps)
    if warning:
        print(f"magicvideo generate: warning: --fps: {warning}", file=sys.stderr)
    if len(jobs) > 1:
        pipe.set_progress_bar_config(disable=True)  # one bar over the clips, not one per clip
    for job, frames in generate_clips(pipe, jobs, fps=args.fps, **pipeline_settings(args)):
        print(f"wrote {job.path} ({len(frames)} frames, {frames.shape[2]}x{frames.shape[1]}, seed {job.seed})")
    return 0
