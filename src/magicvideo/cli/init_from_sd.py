"""`magicvideo init-from-sd SRC OUT`: a MagicVideo pipeline folder initialised from Stable Diffusion."""

from __future__ import annotations

import argparse
import textwrap

from . import UserError


DTYPES = ("float32", "float16", "bfloat16")
# Spelled out, not imported: importing the library's tables pulls in torch and diffusers, and
# `magicvideo --help` must stay fast. The library validates the values; tests/test_cli.py checks
# that these lists equal its tables.
TEMPORAL_ATTENTION_MODES = ("directed", "bidirectional", "none")
SCHEDULERS = ("ddim", "ddpm", "dpm++", "euler")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "init-from-sd",
        help="initialise a MagicVideo pipeline from Stable Diffusion 1.x/2.x weights",
        description=textwrap.fill(
            "Inflate a Stable Diffusion model into a MagicVideo pipeline folder. The SD U-Net's weights are "
            "copied into the 3D U-Net; frame-wise adaptors start at identity and temporal attention and the "
            "FPS embedding at zero, so the new model equals SD applied frame by frame until trained. The VAE, "
            "CLIP text encoder and tokenizer are copied unchanged; the scheduler keeps SD's noise schedule. "
            "Works offline.",
            width=100,
        ),
        epilog=(
            "examples:\n"
            "  magicvideo init-from-sd ./stable-diffusion-v1-5 ./magicvideo-init\n"
            "  magicvideo init-from-sd v1-5-pruned-emaonly.safetensors ./magicvideo-init --config ./stable-diffusion-v1-5"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("src", metavar="SRC",
                   help="Stable Diffusion as a diffusers folder (unet/, vae/, text_encoder/, tokenizer/, scheduler/) "
                        "or as one original-format (CompVis/LDM) .safetensors or .ckpt file")
    p.add_argument("out", metavar="OUT", help="output pipeline folder (must not exist or be empty, see --overwrite)")
    p.add_argument("--config", metavar="DIR", default=None,
                   help="for a single-file SRC: a local diffusers-format SD folder of the same architecture "
                        "(e.g. a stable-diffusion-v1-5 checkout); only its json configs and tokenizer are read, "
                        "its weights are not needed")
    p.add_argument("--num-frames", type=int, default=16, metavar="N",
                   help="frames per clip the model is built for (length of the frame-wise adaptors; default: 16)")
    p.add_argument("--temporal-attention", default="directed", metavar="MODE",
                   help=f"temporal attention: {', '.join(TEMPORAL_ATTENTION_MODES)} (default: directed, "
                        "causal mask before the softmax)")
    p.add_argument("--scheduler", default="ddim", metavar="NAME",
                   help=f"sampler saved with the pipeline, built from SD's scheduler config: "
                        f"{', '.join(sorted(SCHEDULERS))} (default: ddim)")
    p.add_argument("--dtype", default="float32", choices=DTYPES,
                   help="dtype of the saved weights (default: float32, also for fp16 checkpoints)")
    p.add_argument("--extract-ema", action="store_true",
                   help="single-file SRC with both EMA and non-EMA U-Net weights (e.g. v1-5-pruned.ckpt): "
                        "use the EMA weights (default: the non-EMA ones)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists and is not empty")
    p.set_defaults(func=run, argument_flags={"src": "SRC", "out": "OUT"})


def run(args) -> int:
    from pathlib import Path

    if args.extract_ema and Path(args.src).is_dir():
        raise UserError("--extract-ema: only used with a single-file SRC; a diffusers folder holds one U-Net")
    import torch

    from ..init_from_sd import init_from_sd

    out = init_from_sd(
        args.src, args.out, num_frames=args.num_frames, temporal_attention=args.temporal_attention,
        config=args.config, scheduler=args.scheduler, dtype=getattr(torch, args.dtype),
        extract_ema=args.extract_ema, overwrite=args.overwrite,
    )
    print(f"wrote {out}")
    return 0
