"""`magicvideo train`, `magicvideo train-vae` and `magicvideo cache`: training from one YAML config."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from . import UserError, refuse_unused


def _common(p) -> None:
    p.add_argument("config", type=Path, metavar="CONFIG.yaml", help="experiment config (see configs/*.yaml)")
    p.add_argument("--data", metavar="MANIFEST_OR_SHARDS",
                   help="overrides data.manifest (a .csv) or data.shards (.tar, brace pattern or folder of .tar)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override any config value, e.g. --set model.unet.temporal_attention=bidirectional "
                   "--set train.learning_rate=1e-4 (repeatable; values are read as YAML)")


def register(subparsers) -> None:
    for name, help_text in (("train", "train the 3D U-Net (or any task a config names)"),
                            ("train-vae", "train a KL autoencoder (AutoencoderKL) from scratch on video frames")):
        p = subparsers.add_parser(name, help=help_text, description=help_text.capitalize() + ". Run it under "
                                  "`accelerate launch` or `torchrun` for several processes or GPUs.")
        _common(p)
        p.add_argument("--output-dir", help="overrides output.output_dir")
        p.add_argument("--max-steps", type=int, help="overrides train.max_steps")
        p.add_argument("--checkpoint-every", type=int, help="overrides output.checkpoint_every")
        p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in the output dir")
        p.add_argument("--export", type=Path, metavar="DIR", help="train nothing: write the model of a checkpoint "
                       "(EMA weights if the run keeps an EMA) to DIR as final/ would be, e.g. to evaluate a run "
                       "while it trains")
        p.add_argument("--checkpoint", type=Path, metavar="CHECKPOINT_DIR",
                       help="with --export: the checkpoint folder (default: the newest in the output dir)")
        p.set_defaults(func=run_train, task=None if name == "train" else "vae")
    p = subparsers.add_parser("cache", help="encode a data set into a latent cache (data.cache_dir)",
                              description="Encode every video (all frames, VAE) and caption (text encoder) of the "
                              "config's data once into safetensors shards under data.cache_dir; `train` then reads "
                              "them instead of decoding videos.")
    _common(p)
    p.add_argument("--cache-dir", help="overrides data.cache_dir")
    p.set_defaults(func=run_cache)


# flags that are shorthands for --set KEY=VALUE (checked like the config itself)
SHORTHANDS = {"output_dir": "output.output_dir", "max_steps": "train.max_steps",
              "checkpoint_every": "output.checkpoint_every", "cache_dir": "data.cache_dir"}


def _load(args):
    from ..training.config import ConfigError, load_config

    overrides = list(args.overrides)
    for name, key in SHORTHANDS.items():
        if getattr(args, name, None) is not None:
            overrides.append(f"{key}={json.dumps(getattr(args, name))}")  # JSON is YAML: "123" stays a string
    try:
        config = load_config(args.config, overrides)
    except ConfigError as err:
        raise UserError(str(err)) from None
    if args.data:
        is_manifest = args.data.endswith(".csv")
        config.data.manifest = args.data if is_manifest else None
        config.data.shards = None if is_manifest else args.data
        if is_manifest and not Path(args.data).is_file():
            raise UserError(f"--data: no such manifest {args.data}")
    return config


def _logging() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("magicvideo").setLevel(logging.INFO)


def run_train(args) -> int:
    _logging()
    config = _load(args)
    if args.task:
        config.task = args.task
    if args.checkpoint and not args.export:
        raise UserError("--checkpoint names the checkpoint to --export; pass --export DIR too")
    if args.export:
        refuse_unused(args, "not used with --export, which trains nothing", "resume", "max_steps", "checkpoint_every",
                      "data")
    from ..training import train

    try:
        train(config, resume=args.resume, export_to=args.export, checkpoint=args.checkpoint)
    except (FileNotFoundError, ValueError) as err:
        raise UserError(str(err)) from None
    return 0


def run_cache(args) -> int:
    _logging()
    config = _load(args)
    if not config.data.cache_dir:
        raise UserError("no cache folder: set data.cache_dir in the config or pass --cache-dir")
    if not config.data.manifest:
        raise UserError("the latent cache reads a CSV manifest: set data.manifest or pass --data MANIFEST.csv")
    from ..training.cache import build_cache_from_config

    try:
        index = build_cache_from_config(config)
    except (FileNotFoundError, ValueError) as err:
        raise UserError(str(err)) from None
    print(f"cached {len(index['videos'])} videos in {config.data.cache_dir}; "
          f"{len(index['skipped'])} unreadable videos skipped")
    return 0
