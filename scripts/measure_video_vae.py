"""Measure a VideoVAE against the image decoder it was built from, in one run.

1. Round trips of held-out real clips (e.g. data/digits-test): every frame encoded (posterior
   mode), decoded by the image decoder and by the VideoVAE.
   - flicker: mean |(D[f+1] - D[f]) - (X[f+1] - X[f])| in 8-bit levels: the error of the decoded
     clip's frame differences against the real clip's (real motion is not punished);
   - PSNR of the reconstruction (dB, per clip, averaged);
   - motion-compensated flicker (below) of real and decoded clips, for reference.
2. Generated clips (the keyframe pipeline of --pipeline, default the bundled one; canonical digit
   prompts at a fixed random subset of (prompt, fps) jobs): the same latents decoded both ways.
   - motion-compensated flicker: for each consecutive pair, the mean |frame[f+1] - shift(frame[f])|
     (8-bit levels, interior pixels) at the best integer shift within +-radius pixels (digits move
     rigidly, so what remains after the best shift is flicker and deformation); no truth needed;
   - digit and direction accuracy of the decoded clips (the shipped digits classifier).
   Both parts also report *sharpness* (mean |neighbour difference|, 8-bit levels) of every decoding:
   the flicker measures reward blur, and a decoder that smooths by blurring shows it here.
3. Cost: decode time (median of runs) and peak resident memory increase for 16 and 64 frames:
   image decoder (16-frame chunks), VideoVAE whole clip and in 16-frame chunks; each in a fresh
   subprocess (one torch thread unless --threads); memory is the resident-set high-water mark of
   one decode above the resident set before it (Linux /proc).

Writes a JSON of all numbers and a contact sheet PNG (rows: real, image decoder, VideoVAE,
4 x |flicker| of both, for one held-out clip; image decoder and VideoVAE for one generated clip).

    python scripts/measure_video_vae.py --video-vae runs/digits-video-vae/final \\
        --test-data data/digits-test/captions.csv --out docs/video-vae-metrics.json \\
        --sheet docs/video-vae-contact-sheet.png
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import ctypes
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from magicvideo.motion import motion_compensated_flicker  # noqa: E402
from magicvideo.models.video_vae import VideoAutoencoderKL  # noqa: E402
from magicvideo.vae import decode_latents_video, encode_video, load_vae  # noqa: E402
from magicvideo.video_io import read_video  # noqa: E402


# -- measures ---------------------------------------------------------------------------------
def to_unit(video: torch.Tensor) -> torch.Tensor:
    """(B, 3, F, H, W) in [-1, 1] -> (B, F, H, W) grayscale in [0, 1]."""
    return (video.clamp(-1, 1) * 0.5 + 0.5).mean(dim=1)


def difference_flicker(decoded: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Per clip: mean |diff(decoded) - diff(real)| over frames, in 8-bit levels; inputs (B, F, H, W)."""
    d = (decoded[:, 1:] - decoded[:, :-1]) - (real[:, 1:] - real[:, :-1])
    return d.abs().flatten(1).mean(1) * 255


def psnr(decoded: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Per clip PSNR in dB, RGB in [0, 1]; inputs (B, 3, F, H, W) in [-1, 1]."""
    a, b = decoded.clamp(-1, 1) * 0.5 + 0.5, real.clamp(-1, 1) * 0.5 + 0.5
    mse = (a - b).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))


def sharpness(clips: torch.Tensor) -> torch.Tensor:
    """Per clip: mean |horizontal| + |vertical| neighbour difference in 8-bit levels; clips
    (B, F, H, W) in [0, 1]. The flicker measures reward blur (a blurred digit changes less between
    frames), so every flicker number comes with this: a decoder that smooths flicker by blurring
    shows a lower sharpness than the image decoder (and than the real clips)."""
    dy = (clips[..., 1:, :] - clips[..., :-1, :]).abs().flatten(1).mean(1)
    dx = (clips[..., :, 1:] - clips[..., :, :-1]).abs().flatten(1).mean(1)
    return (dx + dy) * 255


def summary(values: torch.Tensor) -> dict:
    v = values.double()
    return {"mean": round(float(v.mean()), 4), "sem": round(float(v.std() / max(1, len(v)) ** 0.5), 4) if len(v) > 1 else 0.0}


# -- data -------------------------------------------------------------------------------------
def held_out_clips(manifest: Path, count: int, frames: int) -> torch.Tensor:
    root = manifest.parent
    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f))[:count]
    clips = []
    for row in rows:
        video, _ = read_video(root / row["path"])
        clips.append(torch.from_numpy(video[:frames]).float() / 127.5 - 1)
    return rearrange(torch.stack(clips), "b f h w c -> b c f h w")


def decode_all(vae: VideoAutoencoderKL, image_vae, latents: torch.Tensor, batch: int = 8) -> dict[str, torch.Tensor]:
    """Scaled latents -> {decoder name: decoded clips}, in batches of clips. `image_decoder` is `image_vae`
    frame by frame (the baseline); when that is another VAE than the VideoVAE (whose whole decoder was
    fine-tuned), `own_image_decoder` is the VideoVAE's decoder without its temporal layers."""
    settings = {"image_decoder": (image_vae, "image"), "video_vae": (vae, "video")}
    if image_vae is not vae:
        settings["own_image_decoder"] = (vae, "image")
    out = {name: [] for name in settings}
    with torch.no_grad():
        for chunk in latents.split(batch):
            for name, (model, decoder) in settings.items():
                out[name].append(decode_latents_video(model, chunk, chunk_size=16, decoder=decoder))
    return {name: torch.cat(parts) for name, parts in out.items()}


def round_trips(vae, image_vae, clips: torch.Tensor, radius: int, mc_clips: int) -> tuple[dict, tuple]:
    with torch.no_grad():
        latents = torch.cat([encode_video(vae, c) for c in clips.split(8)])
    decoded_by = decode_all(vae, image_vae, latents)
    real_g = to_unit(clips)
    result = {"clips": len(clips), "frames": clips.shape[2], "motion_compensated_clips": min(mc_clips, len(clips))}
    for name, decoded in decoded_by.items():
        gray = to_unit(decoded)
        result[name] = {"flicker": summary(difference_flicker(gray, real_g)), "psnr_db": summary(psnr(decoded, clips)),
                        "sharpness": summary(sharpness(gray)),
                        "motion_compensated_flicker": summary(motion_compensated_flicker(gray[:mc_clips], radius)),
                        "integer_shift_flicker": summary(motion_compensated_flicker(gray[:mc_clips], radius, False))}
    result["real"] = {"sharpness": summary(sharpness(real_g)),
                      "motion_compensated_flicker": summary(motion_compensated_flicker(real_g[:mc_clips], radius)),
                      "integer_shift_flicker": summary(motion_compensated_flicker(real_g[:mc_clips], radius, False))}
    result["flicker_reduction"] = round(1 - result["video_vae"]["flicker"]["mean"] / result["image_decoder"]["flicker"]["mean"], 4)
    result["sharpness_change"] = round(result["video_vae"]["sharpness"]["mean"] / result["image_decoder"]["sharpness"]["mean"] - 1, 4)
    result["psnr_change_db"] = round(result["video_vae"]["psnr_db"]["mean"] - result["image_decoder"]["psnr_db"]["mean"], 4)
    return result, (clips, decoded_by["image_decoder"], decoded_by["video_vae"])


def generated_latents(pipeline: str | None, count: int, steps: int, cache: Path | None = None) -> tuple[list, torch.Tensor]:
    """The first `count` canonical digit jobs and the keyframe latents (scaled) that `pipeline`
    (default: bundled) samples for them; kept in / reused from `cache` when given."""
    from magicvideo.digits.evaluate import evaluation_jobs
    from magicvideo.loading import BUNDLED_MODEL
    from magicvideo.pipelines.keyframes import load_pipeline

    jobs = evaluation_jobs(limit=count)
    key = {"pipeline": str(pipeline or BUNDLED_MODEL), "jobs": jobs, "steps": steps}
    if cache is not None and cache.is_file() and torch.load(cache)["key"] == key:
        return jobs, torch.load(cache)["latents"]
    pipe = load_pipeline(pipeline, device="cpu", dtype="fp32", progress_bar=False)
    with torch.no_grad():
        latents = torch.cat([pipe(job["prompt"], fps=job["fps"], num_inference_steps=steps,
                                  generator=torch.Generator().manual_seed(job["seed"]), output_type="latent").frames
                             for job in jobs])
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"key": key, "latents": latents}, cache)
    return jobs, latents


def generated(vae, image_vae, pipeline: str | None, count: int, radius: int, steps: int,
              cache: Path | None = None) -> tuple[dict, tuple]:
    from magicvideo.digits.classifier import classify, load_classifier
    from magicvideo.digits.evaluate import _direction_indices

    jobs, latents = generated_latents(pipeline, count, steps, cache)
    decoded_by = decode_all(vae, image_vae, latents)
    classifier = load_classifier()
    result = {"clips": len(jobs), "frames": latents.shape[2], "steps": steps,
              "prompts": sorted({j["prompt"] for j in jobs})[:5] + ["..."]}
    digits = np.array([j["digit"] for j in jobs])
    directions = _direction_indices([j["direction"] for j in jobs])
    for name, decoded in decoded_by.items():
        unit = (decoded.clamp(-1, 1) * 0.5 + 0.5)
        clips_np = rearrange(unit, "b c f h w -> b f h w c").numpy()
        pred_digit, pred_direction = classify(classifier, clips_np)
        result[name] = {"sharpness": summary(sharpness(to_unit(decoded))),
                        "motion_compensated_flicker": summary(motion_compensated_flicker(to_unit(decoded), radius)),
                        "integer_shift_flicker": summary(motion_compensated_flicker(to_unit(decoded), radius, False)),
                        "digit_accuracy": round(float((pred_digit == digits).mean()), 4),
                        "direction_accuracy": round(float((pred_direction == directions).mean()), 4)}
    result["flicker_reduction"] = round(1 - result["video_vae"]["motion_compensated_flicker"]["mean"]
                                        / result["image_decoder"]["motion_compensated_flicker"]["mean"], 4)
    result["sharpness_change"] = round(result["video_vae"]["sharpness"]["mean"] / result["image_decoder"]["sharpness"]["mean"] - 1, 4)
    result["integer_shift_flicker_reduction"] = round(1 - result["video_vae"]["integer_shift_flicker"]["mean"]
                                                      / result["image_decoder"]["integer_shift_flicker"]["mean"], 4)
    return result, (decoded_by["image_decoder"], decoded_by["video_vae"])


# -- cost -------------------------------------------------------------------------------------
def cost_child(vae_dir: str, decoder: str, frames: int, chunk: int, runs: int) -> dict:
    vae = VideoAutoencoderKL.from_pretrained(vae_dir).eval()
    z = torch.randn(1, vae.config.latent_channels, frames, vae.config.sample_size // 8, vae.config.sample_size // 8)
    with torch.no_grad():
        decode_latents_video(vae, z[:, :, :2], chunk_size=2, decoder=decoder)  # warm-up
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            decode_latents_video(vae, z, chunk_size=chunk or None, decoder=decoder)
            times.append(time.perf_counter() - started)
        # peak memory of one more decode: resident set high-water mark above the resident set before
        # it (freed heap returned to the system first, the kernel's high-water mark reset)
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
        before = _status_kib("VmRSS")
        decode_latents_video(vae, z, chunk_size=chunk or None, decoder=decoder)
        peak = _status_kib("VmHWM")
    return {"seconds": round(statistics.median(times), 4), "peak_memory_mib": round((peak - before) / 1024, 1)}


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def cost(vae_dir: str, runs: int, threads: int) -> list[dict]:
    rows = []
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO / "src")}
    for frames in (16, 64):
        for decoder, chunk in (("image", 16), ("video", 0), ("video", 16)):
            out = subprocess.run([sys.executable, __file__, "--cost-child", vae_dir, decoder, str(frames), str(chunk),
                                  str(runs), str(threads)], capture_output=True, text=True, env=env, check=True)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append({"frames": frames, "decoder": decoder, "chunk_size": chunk or None, **row})
            print(rows[-1], flush=True)
    return rows


# -- contact sheet ----------------------------------------------------------------------------
def sheet(real_trip: tuple, gen: tuple | None, path: Path, frames: int = 12) -> None:
    from PIL import Image

    from magicvideo.video_io import contact_sheet

    def rgb(x):  # (3, F, H, W) in [-1, 1] -> (F, H, W, 3) in [0, 1]
        return rearrange(x.clamp(-1, 1) * 0.5 + 0.5, "c f h w -> f h w c").numpy()

    real, image, video = (t[0] for t in real_trip)
    rows = [rgb(real), rgb(image), rgb(video)]
    for decoded in (image, video):  # 4 x |diff(decoded) - diff(real)|, frame 0 blank
        err = ((decoded[:, 1:] - decoded[:, :-1]) - (real[:, 1:] - real[:, :-1])).abs().mean(0, keepdim=True) * 0.5 * 4
        err = torch.cat([torch.zeros_like(err[:, :1]), err], dim=1).expand(3, -1, -1, -1) * 2 - 1  # rgb() maps [-1, 1] to [0, 1]
        rows.append(rgb(err))
    if gen is not None:
        rows += [rgb(gen[0][0]), rgb(gen[1][0])]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(contact_sheet(rows, frames)).save(path)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--cost-child":
        vae_dir, decoder, frames, chunk, runs, threads = sys.argv[2:8]
        torch.set_num_threads(int(threads))
        print(json.dumps(cost_child(vae_dir, decoder, int(frames), int(chunk), int(runs))))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--video-vae", required=True, help="a VideoAutoencoderKL folder (or a pipeline folder with one)")
    p.add_argument("--image-vae", help="the image VAE (AutoencoderKL folder, or a pipeline folder) to compare with "
                   "(default: the VideoVAE's own decoder without its temporal layers, which is that image VAE "
                   "when only the temporal layers were trained)")
    p.add_argument("--test-data", type=Path, required=True, help="held-out clips: a captions.csv manifest")
    p.add_argument("--clips", type=int, default=64, help="held-out clips for the round trips")
    p.add_argument("--frames", type=int, default=16, help="frames of each held-out clip (from its start)")
    p.add_argument("--generated", type=int, default=24, help="generated clips (0: skip)")
    p.add_argument("--pipeline", help="keyframe pipeline folder for the generated clips (default: bundled)")
    p.add_argument("--steps", type=int, default=25, help="denoising steps of the generated clips")
    p.add_argument("--latents-cache", type=Path, help="keep the generated latents in this file and reuse them "
                   "(same pipeline, jobs and steps) when measuring another VideoVAE")
    p.add_argument("--radius", type=int, default=6, help="largest shift (pixels) of the motion compensation")
    p.add_argument("--mc-clips", type=int, default=16, help="held-out clips whose motion-compensated flicker is measured too")
    p.add_argument("--cost-runs", type=int, default=3, help="timed decodes per cost setting (0: skip the cost)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, help="write the numbers as JSON here")
    p.add_argument("--sheet", type=Path, help="write a contact sheet PNG here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    vae_dir = Path(args.video_vae)
    if (vae_dir / "vae" / "config.json").is_file():
        vae_dir = vae_dir / "vae"
    vae = VideoAutoencoderKL.from_pretrained(vae_dir).eval()
    image_vae = vae
    if args.image_vae:
        image_dir = Path(args.image_vae)
        if (image_dir / "vae" / "config.json").is_file():
            image_dir = image_dir / "vae"
        image_vae = load_vae(image_dir).eval()  # a VideoVAE folder: used through decode(), its image decoder
    results = {"video_vae": str(args.video_vae), "image_vae": args.image_vae, "test_data": str(args.test_data), "threads": args.threads,
               "temporal_layers": list(vae.config.temporal_layers), "temporal_window": vae.config.temporal_window}
    started = time.perf_counter()
    results["round_trip"], trip = round_trips(vae, image_vae, held_out_clips(args.test_data, args.clips, args.frames), args.radius,
                                                   args.mc_clips)
    print("round trip:", json.dumps(results["round_trip"]), flush=True)
    gen = None
    if args.generated:
        results["generated"], gen = generated(vae, image_vae, args.pipeline, args.generated, args.radius, args.steps,
                                               args.latents_cache)
        print("generated:", json.dumps(results["generated"]), flush=True)
    if args.cost_runs:
        results["cost"] = cost(str(vae_dir), args.cost_runs, args.threads)
    results["seconds"] = round(time.perf_counter() - started, 1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    if args.sheet:
        sheet(trip, gen, args.sheet)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
