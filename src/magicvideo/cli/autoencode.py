"""`magicvideo autoencode IN.mp4 --out OUT.mp4`: a clip's round trip through a VAE.

Frames are encoded one at a time (posterior mode) and decoded either by the VideoVAE's temporal
decoder (`--decoder video`) or frame by frame by the image decoder (`--decoder image`). Useful for
inspecting a VAE and for measuring flicker (docs/video-vae.md).
"""

from __future__ import annotations

import json
from pathlib import Path

from . import ALLOW_LARGE_HELP, UserError

VAE_CLASSES = ("AutoencoderKL", "VideoAutoencoderKL")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "autoencode", help="encode a clip with a VAE and decode it again (round trip)",
        description="Encode every frame of a clip with a model's VAE and decode the latents again: with the "
        "VideoVAE's temporal decoder (--decoder video) or frame by frame with the image decoder (--decoder image).")
    p.add_argument("input", type=Path, metavar="IN.mp4", help="the clip to round-trip (.mp4 or .gif)")
    p.add_argument("--out", type=Path, required=True, metavar="OUT.mp4", help="where to write the decoded clip")
    p.add_argument("--model", metavar="DIR",
                   help="a pipeline folder (its vae/) or a VAE folder (default: the bundled digits model)")
    p.add_argument("--decoder", choices=("image", "video"),
                   help="video: the temporal decoder (default when the VAE is a VideoVAE); image: frame by frame")
    p.add_argument("--chunk-size", type=int, default=16, metavar="N",
                   help="frames decoded at a time (bounded memory; the VideoVAE's result does not depend on it)")
    p.add_argument("--allow-large", action="store_true", help=ALLOW_LARGE_HELP)
    p.add_argument("--device", help="torch device, e.g. cpu or cuda (default: cuda if available, else cpu)")
    p.set_defaults(func=run_autoencode)


def vae_folder(model: str | None) -> Path:
    """The VAE folder of `--model` (a pipeline folder or a VAE folder); UserError if it holds no VAE."""
    if model is None:
        from ..loading import BUNDLED_MODEL

        root = Path(BUNDLED_MODEL)
    else:
        root = Path(model)
        if not root.is_dir():
            raise UserError(f"--model: {root} is not a folder")
    folder = root / "vae" if (root / "model_index.json").is_file() or (root / "vae").is_dir() else root
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise UserError(f"--model: {root} holds no VAE (expected a pipeline folder with vae/ or a folder with a "
                        "VAE's config.json)")
    try:
        kind = json.loads(config_file.read_text()).get("_class_name")
    except (OSError, ValueError) as err:
        raise UserError(f"--model: cannot read {config_file}: {err}") from None
    if kind not in VAE_CLASSES:
        raise UserError(f"--model: {folder} holds a {kind or 'model of unknown kind'}, not a VAE "
                        f"({' or '.join(VAE_CLASSES)})")
    return folder


def load_vae(folder: Path):
    from ..vae import load_vae as load

    try:
        return load(folder).eval()
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as err:
        raise UserError(f"--model: cannot load the VAE in {folder}: {err}") from None


def run_autoencode(args) -> int:
    if args.chunk_size < 1:
        raise UserError(f"--chunk-size: must be at least 1, got {args.chunk_size}")
    if args.out.suffix.lower() not in (".mp4", ".gif"):
        raise UserError(f"--out: {args.out} must end in .mp4 or .gif")
    if not args.input.is_file():
        raise UserError(f"{args.input}: no such file")
    folder = vae_folder(args.model)

    import numpy as np
    import torch
    from einops import rearrange

    from ..devices import resolve_device
    from ..errors import InvalidArgumentError
    from ..limits import check_size
    from ..models.video_vae import VideoAutoencoderKL
    from ..vae import decode_latents_video, encode_video
    from ..video_io import probe_video, read_video, write_video

    device = resolve_device(args.device)
    try:
        clip = probe_video(args.input)
    except Exception as err:  # PyAV raises its own error types for unreadable or non-video files
        raise UserError(f"{args.input}: cannot read a video from it ({err})") from None
    vae = load_vae(folder).to(device)
    trained = vae.config.sample_size
    trained_height, trained_width = (trained, trained) if isinstance(trained, int) else trained
    try:
        check_size(clip.height, clip.width, trained_height, trained_width, allow_large=args.allow_large)
    except InvalidArgumentError as err:
        raise UserError(f"{args.input}: {err.message}") from None
    try:
        frames, fps = read_video(args.input)
    except Exception as err:  # PyAV raises its own error types for unreadable or non-video files
        raise UserError(f"{args.input}: cannot read a video from it ({err})") from None
    decoder = args.decoder or ("video" if isinstance(vae, VideoAutoencoderKL) else "image")
    if decoder == "video" and not isinstance(vae, VideoAutoencoderKL):
        raise UserError(f"--decoder video: the VAE in {folder} is an image VAE (AutoencoderKL) without a temporal "
                        "decoder; use --decoder image or a model with a VideoVAE")
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    height, width = frames.shape[1:3]
    if height % factor or width % factor:
        raise UserError(f"{args.input}: frames are {width}x{height}; this VAE needs sides that are multiples of {factor}")
    with torch.no_grad():
        video = torch.from_numpy(frames).to(device).float().div(127.5).sub(1.0)
        video = rearrange(video, "f h w c -> 1 c f h w")
        latents = encode_video(vae, video, chunk_size=args.chunk_size)
        decoded = decode_latents_video(vae, latents, chunk_size=args.chunk_size, decoder=decoder)
    out = (rearrange(decoded[0].clamp(-1, 1), "c f h w -> f h w c").cpu().numpy() * 0.5 + 0.5).astype(np.float32)
    try:
        write_video(args.out, out, fps)
    except (OSError, ValueError) as err:
        raise UserError(f"--out: cannot write {args.out}: {err}") from None
    print(f"wrote {args.out}: {len(out)} frames, {width}x{height}, {fps:g} fps, decoder {decoder} ({folder})")
    return 0
