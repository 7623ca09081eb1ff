"""`magicvideo data ...`: data set preparation."""

from __future__ import annotations

from pathlib import Path

from . import UserError


def register(subparsers) -> None:
    p = subparsers.add_parser("data", help="prepare training data", description="Prepare training data sets.")
    commands = p.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    commands.required = True
    s = commands.add_parser(
        "synthetic",
        help="write a small captioned data set of moving coloured shapes",
        description="Write OUT/videos/*.mp4 (moving coloured shapes) and OUT/captions.csv (path,caption,fps): "
        "a data set to try a whole training run on a laptop.",
    )
    s.add_argument("out", type=Path, metavar="OUT", help="output folder (created)")
    s.add_argument("--clips", type=int, default=256, help="number of clips (default: 256)")
    s.add_argument("--frames", type=int, default=32, help="frames per clip (default: 32)")
    s.add_argument("--size", type=int, default=64, help="frame width and height in pixels, even (default: 64)")
    s.add_argument("--fps", type=float, default=8.0, help="frame rate of the clips (default: 8)")
    s.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    s.set_defaults(func=run_synthetic)


def run_synthetic(args) -> int:
    from ..training.synthetic import write_synthetic_dataset

    if args.clips < 1:
        raise UserError(f"--clips must be at least 1, got {args.clips}")
    if args.size < 8 or args.size % 2:
        raise UserError(f"--size must be an even number >= 8, got {args.size}")
    if args.frames < 1 or args.fps <= 0:
        raise UserError("--frames and --fps must be positive")
    manifest = write_synthetic_dataset(args.out, args.clips, args.frames, args.size, args.fps, args.seed)
    print(f"wrote {args.clips} clips and {manifest}")
    return 0
