"""`magicvideo generate`: text to video clips (mp4 or gif)."""

from __future__ import annotations

import sys
from pathlib import Path

from ..loading import DTYPES
from . import ALLOW_LARGE_HELP, UserError, loading_without_gc, refuse_unused


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "generate",
        help="generate video clips from text",
        description="Generate a clip from a text prompt (or one clip per line of --prompts-file) with the "
        "MagicVideo cascade: keyframes, frame interpolation (x3: 16 keyframes at 8 fps -> 46 frames at 24 fps), "
        "VideoVAE decoding and, with --upscale 4, super-resolution. Without --model, the small digits cascade "
        "bundled with the package is used (prompts like \"the digit 7 moves to the right\"). --frames beyond the "
        "model's window (16) makes a long clip by causal extension, written to --out as it is made; --image makes "
        "a clip that starts from a given first frame.",
    )
    p.add_argument("prompt", nargs="?", help="the text prompt (omit when using --prompts-file)")
    p.add_argument("--out", help="output file of a PROMPT, .mp4 (H.264) or .gif (default: out.mp4)")
    p.add_argument("--prompts-file", help="text file with one prompt per line (or a CSV with a caption column): writes one "
                   "clip per prompt into --out-dir, loading the model once")
    p.add_argument("--out-dir", help="folder for --prompts-file clips (default: outputs)")
    p.add_argument("--format", choices=("mp4", "gif"), help="clip format with --prompts-file (default: mp4)")
    add_generation_options(p)
    p.add_argument("--image", help="the first frame (image-to-video): a picture file, converted to RGB and resized "
                   "and centre-cropped to the model's frame size (with a note when it is not that already)")
    p.add_argument("--context-frames", type=int, help="long clips (--frames beyond the model's window): the finished "
                   "keyframes each next window continues from (default: the model's own, a quarter of its window: 4)")
    stages = p.add_argument_group("cascade stages")
    stages.add_argument("--keyframes-only", action="store_true",
                        help="only the keyframe stage: no interpolation, no super-resolution")
    stages.add_argument("--interpolate", type=int, metavar="K",
                        help="interpolation factor (default: the model's, when it has an interpolation stage); "
                        "must be the factor the interpolation model was trained for")
    stages.add_argument("--interpolation-steps", type=int, help="denoising steps of the interpolation stage (default: 10)")
    stages.add_argument("--decoder", choices=("video", "image"),
                        help="video: the VideoVAE's temporal decoder (the model must have one); image: the image "
                        "decoder frame by frame (default: video when the model has a VideoVAE, else image)")
    stages.add_argument("--upscale", type=int, metavar="S", help="super-resolution factor (the SR model's, 4)")
    stages.add_argument("--upscale-steps", type=int, help="denoising steps of the super-resolution stage, with --upscale "
                        "(default: its own, 1)")
    stages.add_argument("--noise-level", type=int, help="noise augmentation of the super-resolution input, with --upscale "
                        "(default: its own)")
    p.set_defaults(func=run, argument_flags=OPTION_NAMES)


def add_generation_options(p) -> None:
    """The model and sampling options, shared by `generate` and `eval protocol`."""
    p.add_argument("--model", help="a MagicVideo cascade or keyframe pipeline folder (default: the bundled digits cascade)")
    p.add_argument("--frames", type=int, help="number of keyframes (default: the model's window, 16; more make a long "
                   "clip window by window, each continuing from the last frames of the one before)")
    p.add_argument("--steps", type=int, default=25, help="denoising steps (default: 25)")
    p.add_argument("--guidance", type=float, default=7.5, help="classifier-free guidance scale; <= 1 disables it (default: 7.5)")
    p.add_argument("--negative", default=None, help="negative prompt for guidance, with --guidance > 1 (default: empty)")
    p.add_argument("--seed", type=int, default=0, help="random seed; the i-th clip of a prompt list uses seed + i (default: 0)")
    p.add_argument("--fps", type=float, default=8, help="frame rate the model is conditioned on and the clip is written at; "
                   "lower = more motion per frame (default: 8)")
    p.add_argument("--height", type=int, help="frame height in pixels (default: the model's)")
    p.add_argument("--width", type=int, help="frame width in pixels (default: the model's)")
    p.add_argument("--scheduler", help="sampler: ddim, ddpm, dpm++ (DPM-Solver++), euler (default: the model's own)")
    p.add_argument("--chunk-size", type=int, help="causal sampling: keyframes are made this many at a time, each chunk "
                   "denoised beside the finished frames before it (DDIM updates); the number of frames = all at once "
                   "(default: the model's own)")
    p.add_argument("--frame-lag", type=int, help="causal sampling: each chunk starts this many steps after the one "
                   "before (staggered; alone, it staggers single frames); 0 = all frames at once (default: when the "
                   "chunk before is finished)")
    p.add_argument("--allow-large", action="store_true", help=ALLOW_LARGE_HELP)
    p.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda (default: cuda if available, else cpu)")
    p.add_argument("--dtype", choices=DTYPES, default=None, help="weights precision (default: fp16 on cuda, fp32 on cpu)")
    p.add_argument("--lora", action="append", default=[], metavar="PATH[:SCALE]",
                   help="a LoRA of the keyframe U-Net (pytorch_lora_weights.safetensors or its folder) at SCALE "
                   "(default 1); repeatable, the LoRAs add up (docs/lora.md)")


def pipeline_from_args(args):
    """The keyframe pipeline of --model/--device/--dtype with --scheduler swapped in, after the
    generation options are checked (`check_generation_options`)."""
    from ..devices import resolve_device
    from ..lora import load_loras
    from ..pipelines.keyframes import load_pipeline

    check_generation_options(args)
    pipe = load_pipeline(args.model, resolve_device(args.device), args.dtype)
    if args.scheduler:
        pipe.set_scheduler(args.scheduler)
    load_loras(pipe, args.lora)
    check_size(args, pipe)
    return pipe


def check_generation_options(args) -> None:
    """Refuse generation options that would not be used."""
    if args.negative is not None and args.guidance <= 1:
        raise UserError(f"--negative: not used: --guidance {args.guidance:g} (<= 1) turns guidance off")


def trained_size(pipe) -> tuple[int, int] | None:
    """(height, width) in pixels of the frames a MagicVideo pipeline was trained at (its U-Net's
    sample_size in latents times the VAE's factor), or None when the U-Net's config does not say."""
    size = pipe.unet.config.sample_size
    if size is None:
        return None
    height, width = (size, size) if isinstance(size, int) else size
    return height * pipe.vae_scale_factor, width * pipe.vae_scale_factor


def check_size(args, keyframes) -> None:
    """Refuse --height/--width beyond the stated limit (`magicvideo.limits`) of the keyframe model
    `keyframes`, unless --allow-large."""
    from ..limits import check_size as check

    trained = trained_size(keyframes)
    if trained is None:  # the pipeline asks for --height and --width
        return
    check(args.height or trained[0], args.width or trained[1], *trained, allow_large=args.allow_large,
          latent_factor=keyframes.vae_scale_factor)


def cascade_from_args(args):
    """The cascade of --model (a keyframe pipeline folder is a cascade of one stage), with only the
    stages the flags can use loaded: no interpolation with --keyframes-only, no super-resolution
    without --upscale."""
    from ..devices import resolve_device
    from ..loading import BUNDLED_CASCADE
    from ..lora import load_loras
    from ..pipelines.cascade import MagicVideoCascadePipeline

    if args.keyframes_only and (args.interpolate or args.upscale):
        raise UserError("--keyframes-only: cannot be combined with --interpolate or --upscale")
    check_generation_options(args)
    stages = ("keyframes", *(() if args.keyframes_only else ("interpolation",)),
              *(("upscale",) if args.upscale is not None else ()))
    cascade = MagicVideoCascadePipeline.from_pretrained(args.model or BUNDLED_CASCADE, resolve_device(args.device),
                                                        args.dtype, stages=stages)
    if args.scheduler:
        cascade.keyframes.set_scheduler(args.scheduler)
    load_loras(cascade.keyframes, args.lora)
    check_size(args, cascade.keyframes)
    return cascade


def stage_settings(args, cascade) -> dict:
    """The cascade call arguments of the stage flags; refuses what the cascade cannot apply and stage
    options that no stage would use. One keyframe (--frames 1) skips interpolation, saying so."""
    from ..errors import InvalidArgumentError

    if args.keyframes_only and (args.interpolate or args.upscale):
        raise UserError("--keyframes-only: cannot be combined with --interpolate or --upscale")
    interpolate = not args.keyframes_only and cascade.interpolation is not None
    if args.interpolate is not None:
        factor = cascade.interpolation_factor
        if factor is None:
            raise InvalidArgumentError("interpolate", "this model has no interpolation stage")
        if args.interpolate != factor:
            raise InvalidArgumentError("interpolate", f"the interpolation model was trained for x{factor}, not x{args.interpolate}")
        interpolate = True
    if interpolate and args.frames == 1:
        if args.interpolate is not None:
            raise InvalidArgumentError("num_frames", "1 keyframe: interpolation needs at least 2; give --frames 2 or "
                                       "more, or leave --interpolate out")
        print("magicvideo generate: note: --frames 1: one keyframe, nothing to interpolate between; the interpolation "
              "stage is skipped", file=sys.stderr)
        interpolate = False
    if not interpolate:
        refuse_unused(args, "not used: no interpolation stage runs (--keyframes-only, --frames 1, or a model without "
                      "one)", "interpolation_steps")
    if args.upscale is not None:
        if cascade.upscale_factor is None:
            raise InvalidArgumentError("upscale", "this model has no super-resolution stage")
        if args.upscale != cascade.upscale_factor:
            raise InvalidArgumentError("upscale", f"the super-resolution model upscales x{cascade.upscale_factor}, not x{args.upscale}")
    else:
        refuse_unused(args, "not used without --upscale (the super-resolution stage)", "upscale_steps", "noise_level")
    if args.decoder == "video" and not cascade.has_video_decoder:
        raise InvalidArgumentError("decoder", "this model's VAE has no temporal decoder (it is not a VideoVAE); use "
                                   "--decoder image or leave --decoder out")
    return dict(interpolate=interpolate, interpolation_steps=args.interpolation_steps, decoder=args.decoder or "video",
                upscale=args.upscale is not None, upscale_steps=args.upscale_steps, noise_level=args.noise_level)


# pipeline argument -> the CLI option that sets it (for error messages)
OPTION_NAMES = {"num_frames": "--frames", "num_inference_steps": "--steps", "guidance_scale": "--guidance",
                "height": "--height", "width": "--width", "fps": "--fps", "prompt": "PROMPT",
                "negative_prompt": "--negative", "model": "--model", "scheduler": "--scheduler", "seed": "--seed",
                "device": "--device", "dtype": "--dtype", "interpolate": "--interpolate", "upscale": "--upscale",
                "decoder": "--decoder", "num_upscale_steps": "--upscale-steps", "noise_level": "--noise-level",
                "interpolation_steps": "--interpolation-steps", "frame_lag": "--frame-lag",
                "chunk_size": "--chunk-size", "context_timestep": "--context-timestep", "image": "--image",
                "context_frames": "--context-frames"}


def pipeline_settings(args) -> dict:
    """The pipeline call arguments set by the generation options shared by `generate` and `eval protocol`."""
    return dict(negative_prompt=args.negative, num_frames=args.frames, height=args.height, width=args.width,
                num_inference_steps=args.steps, guidance_scale=args.guidance, chunk_size=args.chunk_size,
                frame_lag=args.frame_lag)


def read_image(path: str, option: str = "--image"):
    """The picture file `path` as a loaded PIL image; a file that cannot be read as one is a UserError."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except FileNotFoundError:
        raise UserError(f"{option}: no such file {path}") from None
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise UserError(f"{option}: cannot read {path} as an image ({err})") from None


def image_and_context_settings(args, keyframes, image) -> dict:
    """The cascade arguments of --image (`image`, as `read_image` read it: converted and fitted to the
    frame size, with a note saying how) and --context-frames (refused where it is not used: a clip
    within one window)."""
    settings = {}
    frames = args.frames or keyframes.unet.config.num_frames
    if args.context_frames is not None:
        if frames <= keyframes.unet.config.num_frames:
            raise UserError(f"--context-frames: not used: --frames {frames} fits in the model's window "
                            f"({keyframes.unet.config.num_frames} frames)")
        settings["context_frames"] = args.context_frames
    if image is not None:
        from ..pipelines.keyframes import fit_image

        image, changes = fit_image(image, *keyframes.frame_size(args.height, args.width))
        if changes:
            print(f"magicvideo generate: note: --image: {args.image} {', '.join(changes)}", file=sys.stderr)
        settings["image"] = image
    return settings


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
    with loading_without_gc():
        from ..generation import ClipJob, for_this_process, generate_clips, plan_clips

    if args.prompts_file:
        if args.prompt:
            raise UserError("give either PROMPT or --prompts-file, not both")
        refuse_unused(args, "not used with --prompts-file, whose clips are written into --out-dir", "out")
        jobs = plan_clips(read_prompts_file(args.prompts_file), args.out_dir or "outputs", args.seed,
                          format=args.format or "mp4")
    elif args.prompt:
        refuse_unused(args, "only used with --prompts-file (a PROMPT's clip is written to --out)", "out_dir", "format")
        jobs = [ClipJob(args.prompt, args.seed, Path(args.out or "out.mp4"))]
        if jobs[0].path.suffix.lower() not in (".mp4", ".gif"):
            raise UserError(f"--out: {args.out} must end in .mp4 or .gif")
    else:
        raise UserError("give a PROMPT (or --prompts-file); see --help")
    jobs, args.device = for_this_process(jobs, args.device)  # under accelerate launch / torchrun: a share each
    image = None
    if args.image is not None:
        if args.frames is not None and args.frames < 2:
            raise UserError(f"--frames: --image is the first frame: make at least 2, got {args.frames}")
        image = read_image(args.image)

    with loading_without_gc():
        pipe = cascade_from_args(args)
    settings = {**pipeline_settings(args), **stage_settings(args, pipe),
                **image_and_context_settings(args, pipe.keyframes, image)}
    warning = pipe.fps_warning(args.fps, interpolate=settings.get("interpolate", False))
    if warning:
        print(f"magicvideo generate: warning: --fps: {warning}", file=sys.stderr)
    if len(jobs) > 1:
        pipe.set_progress_bar_config(disable=True)  # one bar over the clips, not one per clip
    for job, written in generate_clips(pipe, jobs, fps=args.fps, **settings):
        print(f"wrote {job.path} ({written.frames} frames, {written.width}x{written.height}, seed {job.seed})")
    return 0
