"""Peak memory of a full-size generation on the CPU: Stable Diffusion 1.5 widths, 16 frames of 256x256, CFG.

The whole `MagicVideoPipeline.__call__` (denoising with classifier-free guidance, then VAE decoding)
with random weights of the real architectures: `MagicVideoUNet3D` at SD 1.5's widths (its default
configuration), an `AutoencoderKL` with SD's KL-f8 configuration, 77-token prompt embeddings
of CLIP ViT-L/14's width (768; the text encoder itself, 123M parameters, 0.5 GiB in fp32, is not
built: its output is passed as `prompt_embeds`). Each setting runs in a fresh process; reported are
the resident set after building the models (the weights), the peak resident set of the generation
(Linux VmHWM, reset after building) and the wall time. Settings: the decode chunk size (frames the
VAE decodes at once; 16 = the whole clip) and attention slicing of the spatial attention.

    PYTHONPATH=src python benchmarks/cpu_memory.py [--steps 2] [--chunks 16 4 1] [--threads N]
    PYTHONPATH=src python benchmarks/cpu_memory.py --widths tiny --frames 4 --size 64    # quick check

The peak of a step does not depend on the number of steps (memory is freed between steps), so 2
steps measure a 25-step generation's peak at a twelfth of its time.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from magicvideo import MagicVideoPipeline, MagicVideoUNet3D  # noqa: E402

UNET = {  # SD 1.5's U-Net (MagicVideoUNet3D's defaults); "tiny": the same layout, narrow (as benchmarks/unet_step.py)
    "sd15": dict(block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, norm_num_groups=32),
    "tiny": dict(block_out_channels=(32, 32, 64, 64), cross_attention_dim=32, norm_num_groups=8),
}
VAE = {  # SD's KL-f8 autoencoder (stable-diffusion-v1-5/vae/config.json); "tiny": the same layout, narrow
    "sd15": dict(block_out_channels=(128, 256, 512, 512), norm_num_groups=32),
    "tiny": dict(block_out_channels=(32, 32, 64, 64), norm_num_groups=8),
}


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def pipeline(widths: str, frames: int) -> MagicVideoPipeline:
    torch.manual_seed(0)
    unet = MagicVideoUNet3D(**UNET[widths], layers_per_block=2, attention_head_dim=8, num_frames=frames).eval()
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        **VAE["tiny" if widths == "tiny" else "sd15"]).eval()
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False)
    return MagicVideoPipeline(unet=unet, vae=vae, text_encoder=None, tokenizer=None, scheduler=scheduler)


def measure(args) -> dict:
    """One generation in this process (the child of `main`)."""
    pipe = pipeline(args.widths, args.frames)
    pipe.set_progress_bar_config(disable=True)
    if args.slicing:
        pipe.unet.set_attention_slice("auto")
    text = UNET[args.widths]["cross_attention_dim"]
    embeds = torch.randn(1, 77, text, generator=torch.Generator().manual_seed(0))
    weights = _status_mib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident set
    start = time.perf_counter()
    video = pipe(prompt_embeds=embeds, negative_prompt_embeds=torch.zeros_like(embeds), num_frames=args.frames,
                 height=args.size, width=args.size, num_inference_steps=args.steps, guidance_scale=7.5,
                 decode_chunk_size=args.chunk, generator=torch.Generator().manual_seed(0)).frames
    seconds = time.perf_counter() - start
    assert video.shape[1:4] == (args.frames, args.size, args.size), video.shape
    return {"chunk": args.chunk, "slicing": args.slicing, "weights_mib": weights, "peak_mib": _status_mib("VmHWM"),
            "seconds": seconds}


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--widths", choices=("sd15", "tiny"), default="sd15")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=256, help="frame height and width in pixels (default: 256)")
    parser.add_argument("--steps", type=int, default=2, help="denoising steps (default: 2; the peak does not grow)")
    parser.add_argument("--chunks", type=int, nargs="+", default=[16, 4, 1],
                        help="decode chunk sizes to compare (default: 16 4 1)")
    parser.add_argument("--slicing", action="store_true", help="also each chunk size with attention slicing")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--json", action="store_true", help="also print one JSON object per setting")
    parser.add_argument("--chunk", type=int, help=argparse.SUPPRESS)  # the child process's setting
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.one:
        print(json.dumps(measure(args)))
        return []
    common = ["--widths", args.widths, "--frames", str(args.frames), "--size", str(args.size), "--steps",
              str(args.steps)] + (["--threads", str(args.threads)] if args.threads else [])
    rows = []
    for slicing in (False, True) if args.slicing else (False,):
        for chunk in args.chunks:
            command = [sys.executable, __file__, "--one", "--chunk", str(chunk), *common] + (["--slicing"] * slicing)
            out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(out.splitlines()[-1]))
    print(f"CPU, torch {torch.__version__}, fp32, widths {args.widths}, {args.frames} frames of {args.size}x{args.size}, "
          f"CFG, {args.steps} steps; resident set in MiB, each setting in a fresh process")
    print(f"{'decode chunk':>12} {'slicing':>8} {'weights':>9} {'peak':>9} {'above weights':>14} {'seconds':>8}")
    for r in rows:
        print(f"{r['chunk']:>12} {str(r['slicing']):>8} {r['weights_mib']:>9.0f} {r['peak_mib']:>9.0f} "
              f"{r['peak_mib'] - r['weights_mib']:>14.0f} {r['seconds']:>8.1f}")
    if args.json:
        for r in rows:
            print(json.dumps(r))
    return rows


if __name__ == "__main__":
    main()
