"""Two bounds on what a VideoVAE can gain on the round-trip flicker measure of held-out digits.

The round-trip flicker of scripts/measure_video_vae.py is mean |(D[f+1] - D[f]) - (X[f+1] - X[f])|
(8-bit levels) with X the real clip as stored (H.264, crf 12, as `magicvideo digits data` writes
it) and D its decoded round trip. This renders held-out clips exactly (test-split MNIST digits, the
true positions known), stores them through H.264 as the dataset writer does, decodes their latents
with the image decoder and prints, on the same clips (flicker, PSNR in dB against the stored clips):

- ``codec_floor``: a decoder that returned the clean rendering: the part no decoder can remove;
- ``image_decoder``: the image decoder's round trip (the measure of the issue);
- ``aligned_average_W``: each decoded frame replaced by the mean of itself and its W - 1 previous
  decoded frames, each moved onto it by the TRUE motion (Fourier shift): an oracle of what a
  directed temporal layer gains by mixing earlier frames of the same rigidly moving digit;
- ``aligned_average_clean_W``: the same applied to the clean renderings: the error of the
  alignment itself (the renderer interpolates bilinearly, the shift is band-limited);
- ``aligned_average_estimated_W``: the decoded frames averaged with the motion *estimated* on them
  (`motion.global_shifts`, as the VideoVAE's `temporal_alignment` does), and
  ``motion_error_px``: that estimate against the true motion (mean and median length of the error).

With ``--generated N``: the bundled keyframe model's clips for the first N canonical evaluation jobs
(25 steps, guidance 7.5, as scripts/measure_video_vae.py draws them), decoded by the image decoder,
and the same aligned averages with the motion the prompt asks for (direction x 0.75 px per native
frame): their motion-compensated flicker (no truth exists for generated clips).

    python scripts/video_vae_bounds.py --clips 64 --stride 1 [--generated 24] [--vae src/magicvideo/weights/digits/vae]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "scripts"))

from measure_video_vae import difference_flicker, generated_latents, sharpness, to_unit  # noqa: E402

from magicvideo.digits.data import DIRECTIONS, NATIVE_FPS, SPEED, render, sample_digit_clip  # noqa: E402
from magicvideo.motion import fourier_shift, global_shifts, motion_compensated_flicker  # noqa: E402
from magicvideo.vae import decode_latents_video, encode_video, load_vae  # noqa: E402
from magicvideo.video_io import read_video, to_uint8, write_video  # noqa: E402

FRAMES = 16


def held_out(count: int, stride: int, seed: int) -> tuple[np.ndarray, torch.Tensor]:
    """Clean clips (N, F, 64, 64) uint8 of test-split digits and their true positions (N, F, 2) as (x, y)."""
    rng, clips, positions = random.Random(seed), [], []
    times = np.arange(FRAMES) * stride
    for _ in range(count):
        spec = sample_digit_clip(rng, "test", span=(FRAMES - 1) * stride, canonical=True)
        clips.append(to_uint8(render(spec, times)))
        positions.append([spec.sprites[0].position(t) for t in times])
    return np.stack(clips), torch.tensor(positions, dtype=torch.float32)


def stored(clips: np.ndarray, fps: float, crf: int) -> torch.Tensor:
    """The clips written to H.264 and read back: (N, 3, F, H, W) in [-1, 1]."""
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, frames in enumerate(clips):
            path = Path(tmp) / f"{i}.mp4"
            write_video(path, np.repeat(frames[..., None], 3, axis=-1), fps=fps, crf=crf)
            out.append(torch.from_numpy(read_video(path)[0]).float() / 127.5 - 1)
    return rearrange(torch.stack(out), "b f h w c -> b c f h w")


def aligned_average(frames: torch.Tensor, positions: torch.Tensor, window: int) -> torch.Tensor:
    """Frames (N, F, H, W): frame f -> mean of frames f-window+1..f moved onto f by the true motion."""
    out = torch.empty_like(frames)
    for f in range(frames.shape[1]):
        moved = []
        for g in range(max(0, f - window + 1), f + 1):
            dx, dy = (positions[:, f] - positions[:, g]).unbind(-1)
            moved.append(fourier_shift(frames[:, g], torch.stack([dy, dx], -1)[:, None])[:, 0])
        out[:, f] = torch.stack(moved).mean(0)
    return out.clamp(0, 1)


def generated(count: int, windows: list[int], cache: Path | None = None) -> dict:
    """Motion-compensated flicker and sharpness of the bundled model's image-decoded clips and of
    their aligned averages."""
    from magicvideo.pipelines.keyframes import load_pipeline

    jobs, latents = generated_latents(None, count, 25, cache)
    vae = load_pipeline(None, device="cpu", dtype="fp32", progress_bar=False).vae
    with torch.no_grad():
        decoded = to_unit(decode_latents_video(vae, latents, chunk_size=16, decoder="image"))
    steps = torch.arange(decoded.shape[1], dtype=torch.float32)[None, :, None]
    velocity = torch.tensor([DIRECTIONS[job["direction"]] for job in jobs], dtype=torch.float32)
    velocity = velocity * SPEED * NATIVE_FPS / torch.tensor([job["fps"] for job in jobs])[:, None]
    positions = velocity[:, None] * steps  # (N, F, 2) as (x, y), the motion the prompt asks for

    def score(frames: torch.Tensor) -> dict:
        return {"flicker": round(float(motion_compensated_flicker(frames).mean()), 4),
                "sharpness": round(float(sharpness(frames).mean()), 4)}

    out = {"clips": count, "image_decoder": score(decoded)}
    for w in windows:
        out[f"aligned_average_{w}"] = score(aligned_average(decoded, positions, w))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--stride", type=int, default=1,
                        help="temporal stride of the 24 fps videos (1: 16 consecutive frames, as measure_video_vae.py takes)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--crf", type=int, default=12, help="the dataset writer's H.264 quality")
    parser.add_argument("--windows", type=int, nargs="+", default=[2, 4, 16])
    parser.add_argument("--generated", type=int, default=0, help="also N generated clips (bundled model)")
    parser.add_argument("--latents-cache", type=Path, help="measure_video_vae.py's cache of the generated latents")
    parser.add_argument("--vae", default=str(REPO / "src/magicvideo/weights/digits/vae"))
    args = parser.parse_args()

    clean_u8, positions = held_out(args.clips, args.stride, args.seed)
    real = stored(clean_u8, NATIVE_FPS / args.stride, args.crf)
    vae = load_vae(args.vae).eval()  # a VideoVAE folder: its image decoder (decode())
    with torch.no_grad():
        latents = torch.cat([encode_video(vae, clip) for clip in real.split(8)])
        decoded = torch.cat([decode_latents_video(vae, z, chunk_size=16, decoder="image") for z in latents.split(8)])
    real_g, decoded_g = to_unit(real), to_unit(decoded)
    clean = torch.from_numpy(clean_u8).float() / 255

    def score(frames: torch.Tensor) -> dict:
        mse = (frames - real_g).pow(2).flatten(1).mean(1)
        return {"flicker": round(float(difference_flicker(frames, real_g).mean()), 4),
                "psnr_db": round(float((10 * torch.log10(1 / mse.clamp_min(1e-10))).mean()), 2),
                "sharpness": round(float(sharpness(frames).mean()), 4)}

    out = {"clips": args.clips, "stride": args.stride, "codec_floor": score(clean), "image_decoder": score(decoded_g)}
    steps = global_shifts(decoded_g)[1]  # (N, F - 1, 2) as (dy, dx)
    error = (steps - (positions[:, 1:] - positions[:, :-1]).flip(-1)).norm(dim=-1)
    out["motion_error_px"] = {"mean": round(float(error.mean()), 4), "median": round(float(error.median()), 4)}
    estimated = torch.cat([torch.zeros_like(steps[:, :1]), steps.cumsum(1)], 1).flip(-1)  # positions as (x, y)
    for w in args.windows:
        out[f"aligned_average_{w}"] = score(aligned_average(decoded_g, positions, w))
        out[f"aligned_average_estimated_{w}"] = score(aligned_average(decoded_g, estimated, w))
        out[f"aligned_average_clean_{w}"] = score(aligned_average(clean, positions, w))
    if args.generated:
        out["generated_motion_compensated_flicker"] = generated(args.generated, args.windows, args.latents_cache)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
