"""`magicvideo extend`: append keyframes to a clip by causal extension from its last frames."""

from __future__ import annotations

import sys
from pathlib import Path

from ..loading import DTYPES
from . import ALLOW_LARGE_HELP, UserError, loading_without_gc

# library argument -> the CLI option that sets it (for error messages)
OPTION_NAMES = {"video": "IN", "num_frames": "--frames", "prompt": "--prompt", "negative_prompt": "--negative",
                "num_inference_steps": "--steps", "guidance_scale": "--guidance", "fps": "--fps", "seed": "--seed",
                "model": "--model", "scheduler": "--scheduler", "device": "--device", "dtype": "--dtype",
                "decoder": "--decoder", "context_frames": "--context-frames"}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "extend",
        help="append keyframes to a clip (causal extension from its last frames)",
        description="Continue a clip: its last frames (--context-frames, default the model's: 4) are encoded by the "
        "VAE and the keyframe model makes --frames more beside them, window after window, at the clip's frame "
        "rate; OUT is the clip followed by the new frames. Keyframes only: the clip's frames are taken as keyframes "
        "(no interpolation or super-resolution runs); the new frames are decoded by the VideoVAE carrying on from "
        "the clip's last frames. The clip must have the model's frame size (64x64 for the bundled model, e.g. a "
        "`generate --keyframes-only` clip).",
    )
    p.add_argument("video", metavar="IN", help="the clip to continue (.mp4, .gif, anything PyAV reads)")
    p.add_argument("--frames", type=int, required=True, help="keyframes to append")
    p.add_argument("--out", required=True, help="output file, .mp4 or .gif: the clip and its continuation")
    p.add_argument("--prompt", default="", help="what happens next (default: none, the clip alone leads)")
    p.add_argument("--negative", default=None, help="negative prompt for guidance, with --prompt (default: empty)")
    p.add_argument("--fps", type=float, help="the clip's frame rate, which the model is conditioned on and OUT is "
                   "written at (default: read from the file)")
    p.add_argument("--model", help="a MagicVideo cascade or keyframe pipeline folder (default: the bundled digits cascade)")
    p.add_argument("--steps", type=int, default=25, help="denoising steps (default: 25)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance scale; <= 1 disables it (default: 7.5 with "
                   "--prompt, else 1)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--context-frames", type=int, help="the clip's last frames the continuation starts from, and the "
                   "finished frames each later window continues from (default: the model's own, a quarter of its window: 4)")
    p.add_argument("--decoder", choices=("video", "image"), help="video: the VideoVAE's temporal decoder (the model "
                   "must have one); image: frame by frame (default: video when the model has a VideoVAE, else image)")
    p.add_argument("--scheduler", help="sampler of the first window's steps' noise schedule (see generate --help)")
    p.add_argument("--allow-large", action="store_true", help=ALLOW_LARGE_HELP)
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--dtype", choices=DTYPES, default=None, help="weights precision (default: fp16 on cuda, fp32 on cpu)")
    p.set_defaults(func=run, argument_flags=OPTION_NAMES)


def run(args) -> int:
    out = Path(args.out)
    if out.suffix.lower() not in (".mp4", ".gif"):
        raise UserError(f"--out: {args.out} must end in .mp4 or .gif")
    if args.frames < 1:
        raise UserError(f"--frames: must be an integer >= 1 (the keyframes to append), got {args.frames}")
    if args.fps is not None and not args.fps > 0:
        raise UserError(f"--fps: must be > 0, got {args.fps:g}")
    if args.context_frames is not None and args.context_frames < 1:
        raise UserError(f"--context-frames: must be an integer >= 1, got {args.context_frames}")
    if args.guidance is not None and args.guidance > 1 and not args.prompt:
        raise UserError(f"--guidance: not used without --prompt: guidance {args.guidance:g} would contrast an empty "
                        "prompt with an empty prompt")
    if args.negative is not None and not args.prompt:
        raise UserError("--negative: not used without --prompt (guidance needs a prompt)")
    if not Path(args.video).is_file():
        raise UserError(f"IN: no such file {args.video}")
    with loading_without_gc():
        from ..video_io import UnreadableVideo, VideoWriter, probe_video, read_video

    try:
        info = probe_video(args.video)
    except UnreadableVideo as err:
        raise UserError(f"IN: cannot read {args.video} as a video: {err}") from None
    with loading_without_gc():
        from ..devices import resolve_device
        from ..limits import check_size
        from ..loading import BUNDLED_CASCADE
        from ..pipelines.cascade import MagicVideoCascadePipeline
        from .generate import trained_size

        cascade = MagicVideoCascadePipeline.from_pretrained(args.model or BUNDLED_CASCADE, resolve_device(args.device),
                                                            args.dtype, stages=("keyframes",))
    keyframes = cascade.keyframes
    trained = trained_size(keyframes)
    if trained is not None:  # one window at a time: the per-frame size is what grows
        check_size(info.height, info.width, *trained, allow_large=args.allow_large, arguments=("video", "video"))
    context, window = keyframes.context_frames_of(args.context_frames), keyframes.unet.config.num_frames
    if not 1 <= context < window:
        raise UserError(f"--context-frames: must be between 1 and {window - 1} (the model's window is {window} frames, "
                        f"which must hold new frames too), got {context}")
    if info.frames < context:
        raise UserError(f"IN: {args.video} has {info.frames} frame{'s' * (info.frames != 1)}, fewer than the {context} "
                        "the continuation starts from (--context-frames): give a longer clip or a smaller --context-frames")
    decoder = args.decoder or ("video" if cascade.has_video_decoder else "image")
    fps = args.fps or info.fps
    warning = keyframes.fps_warning(fps)
    if warning:
        print(f"magicvideo extend: warning: --fps: {warning}", file=sys.stderr)
    try:
        clip, _ = read_video(args.video)
    except UnreadableVideo as err:
        raise UserError(f"IN: cannot read {args.video} as a video: {err}") from None
    guidance = args.guidance if args.guidance is not None else 7.5 if args.prompt else 1.0
    with VideoWriter(out, fps) as writer:
        writer.write(clip)
        cascade.extend(clip, args.frames, prompt=args.prompt, negative_prompt=args.negative, fps=fps,
                       num_inference_steps=args.steps, guidance_scale=guidance, seed=args.seed, decoder=decoder,
                       scheduler=args.scheduler, context_frames=args.context_frames, frame_sink=writer.write)
    print(f"wrote {out} ({len(clip)} + {writer.frames - len(clip)} frames, {writer.width}x{writer.height}, "
          f"{fps:g} fps, seed {args.seed})")
    return 0
