"""Decode time of a VideoVAE against its own image decoder (the same weights without the temporal
layers), in one process: random latents, the clip decoded in chunks as the cascade decodes it and
a 16-frame clip whole; best of --repeats after a warm-up.

    PYTHONPATH=src python benchmarks/video_vae_decode.py [--vae DIR] [--threads 2] [--frames 46] [--chunk 16]

To compare two versions of the code, run it from each checkout (`git worktree add /tmp/before REV`,
then `cd /tmp/before && PYTHONPATH=src python /path/to/benchmarks/video_vae_decode.py`), alternating.
"""

from __future__ import annotations

import argparse
import time

import torch

from magicvideo.vae import is_video_vae, load_vae


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vae", default="src/magicvideo/weights/digits/vae", help="a VideoAutoencoderKL folder")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--frames", type=int, default=46, help="frames of the chunked clip (the cascade's 46)")
    parser.add_argument("--chunk", type=int, default=16, help="frames decoded at a time (the pipeline's 16)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    vae = load_vae(args.vae).eval()
    if not is_video_vae(vae):
        parser.error(f"{args.vae} is an image VAE: nothing to compare")
    size = vae.config.sample_size // 2 ** (len(vae.config.block_out_channels) - 1)
    cases = {f"{args.frames} frames, chunks of {args.chunk}": (args.frames, args.chunk), "16 frames, whole": (16, None)}
    print(f"{args.vae}: {args.threads} thread(s), fp32, best of {args.repeats} after a warm-up")
    print(f"{'clip':<28} {'VideoVAE s':>11} {'image decoder s':>16} {'ratio':>7}")
    with torch.no_grad():
        for name, (frames, chunk) in cases.items():
            latents = torch.randn(1, vae.config.latent_channels, frames, size, size)
            video = best_time(lambda: vae.decode_video(latents, chunk), args.repeats)
            image = best_time(lambda: vae.decode_video(latents, chunk, temporal=False), args.repeats)
            print(f"{name:<28} {video:>11.3f} {image:>16.3f} {video / image:>6.2f}x")


if __name__ == "__main__":
    main()
