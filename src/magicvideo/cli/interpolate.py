"""`magicvideo interpolate`: raise a clip's frame rate k-fold with the interpolation model (stage 2)."""

from __future__ import annotations

from pathlib import Path

from ..loading import DTYPES
from . import ALLOW_LARGE_HELP, UserError

# pipeline argument -> the CLI option that sets it (for error messages)
OPTION_NAMES = {"video": "IN", "factor": "--factor", "model": "--model", "prompt": "--prompt",
                "num_inference_steps": "--steps", "guidance_scale": "--guidance", "fps": "--fps", "seed": "--seed",
                "device": "--device", "dtype": "--dtype", "scheduler": "--scheduler", "strength": "--strength"}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "interpolate",
        help="interpolate a clip to k times its frame rate",
        description="Fill in k - 1 frames between every two frames of a clip (F frames -> (F - 1) * k + 1) with "
        "MagicVideo's frame-interpolation model; the input frames are kept. Without --model, the digits "
        "interpolation model bundled with the package is used (8 fps keyframes -> 24 fps).",
    )
    p.add_argument("video", metavar="IN", help="input clip (.mp4, .gif, anything PyAV reads)")
    p.add_argument("--out", default="interpolated.mp4", help="output file, .mp4 or .gif (default: interpolated.mp4)")
    p.add_argument("--factor", type=int, default=None, help="frames out per frame in, k (default: the model's, 3 for "
                   "the bundled model)")
    p.add_argument("--model", help="a MagicVideo interpolation pipeline folder (default: the bundled digits model)")
    p.add_argument("--prompt", default="", help="optional text describing the clip (default: none)")
    p.add_argument("--steps", type=int, default=25, help="denoising steps (default: 25)")
    p.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance scale; <= 1 disables it "
                   "(default: 1)")
    p.add_argument("--strength", type=float, default=1.0, help="1: in-between frames start from noise; less: from the "
                   "blend of their keyframes noised to that level, running that fraction of --steps (default: 1)")
    p.add_argument("--fps", type=float, default=None, help="the input's frame rate, > 0, which the model is conditioned "
                   "on (default: read from the file); the output runs at k times it")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--scheduler", help="sampler: ddim, ddpm, dpm++, euler (default: the model's own)")
    p.add_argument("--allow-large", action="store_true", help=ALLOW_LARGE_HELP + "; and clips of more than that many "
                   "times the model's window of trained frames, as all windows are denoised in one batch")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--dtype", choices=DTYPES, default=None,
                   help="weights precision (default: fp16 on cuda, fp32 on cpu)")
    p.set_defaults(func=run, argument_flags=OPTION_NAMES)


def run(args) -> int:
    import torch

    from ..devices import resolve_device
    from ..limits import check_size
    from ..pipelines.interpolation import load_interpolation_pipeline
    from ..video_io import probe_video, read_video, write_video
    from .generate import trained_size

    out = Path(args.out)
    if out.suffix.lower() not in (".mp4", ".gif"):
        raise UserError(f"--out: {args.out} must end in .mp4 or .gif")
    if not Path(args.video).is_file():
        raise UserError(f"IN: no such file {args.video}")
    if args.factor is not None and args.factor < 2:
        raise UserError(f"--factor: must be an integer >= 2, got {args.factor}")
    if args.fps is not None and not args.fps > 0:
        raise UserError(f"--fps: must be > 0, got {args.fps:g}")
    if args.guidance > 1 and not args.prompt:
        raise UserError(f"--guidance: not used without --prompt: guidance {args.guidance:g} would contrast an empty "
                        "prompt with an empty prompt")
    try:
        clip = probe_video(args.video)
    except Exception as err:  # noqa: BLE001 - any decoder failure is the input's fault
        raise UserError(f"IN: cannot read {args.video} as a video: {type(err).__name__}: {err}") from None
    pipe = load_interpolation_pipeline(args.model, resolve_device(args.device), args.dtype)
    if args.scheduler:
        pipe.set_scheduler(args.scheduler)
    factor = args.factor or pipe.keyframe_stride
    trained = trained_size(pipe)
    if trained is not None:
        check_size(clip.height, clip.width, *trained, allow_large=args.allow_large, frames=(clip.frames - 1) * factor + 1,
                   trained_frames=pipe.unet.config.num_frames, arguments=("video", "video"), frames_argument="video")
    try:
        frames, native_fps = read_video(args.video)
    except Exception as err:  # noqa: BLE001 - any decoder failure is the input's fault
        raise UserError(f"IN: cannot read {args.video} as a video: {type(err).__name__}: {err}") from None
    if len(frames) < 2:
        raise UserError(f"IN: {args.video} has {len(frames)} frame; interpolation needs at least 2")
    fps = native_fps if args.fps is None else args.fps
    generator = torch.Generator().manual_seed(args.seed)
    result = pipe(video=frames, factor=args.factor, prompt=args.prompt, fps=fps, num_inference_steps=args.steps,
                  guidance_scale=args.guidance, strength=args.strength, generator=generator).frames[0]
    write_video(out, result, fps * factor)
    print(f"wrote {out} ({len(result)} frames at {fps * factor:g} fps from {len(frames)} at {fps:g} fps)")
    return 0
