"""Measure the frame-interpolation model on Moving MNIST, where the true in-between frames are known.

    python scripts/measure_interpolation.py --clips 96 --generated 48 --out docs/interpolation-metrics.json \
        --sheet docs/interpolation-contact-sheet.png

1. Held-out real clips (test-split digits, `--test-data`, videos of one frame rate f: 46 frames = 16
   keyframes at f / 3 (every 3rd frame) + 30 in-between frames; `digits data --fps 36` or `--fps 72`
   writes the true in-between frames of 12 and 24 fps keyframes):
   PSNR and SSIM of the interpolated in-between frames against the real ones, beside, in the same
   run: repeating the nearest keyframe, linear blending of the two keyframes in pixels, linear
   blending of their latents decoded by the VAE, and (the ceiling of any latent model) the VAE's
   reconstruction of the true frames. PSNR / SSIM are per clip over its in-between frames (frames
   in [0, 1], grayscale for SSIM: 11x11 Gaussian window, sigma 1.5), then averaged over clips.
2. Motion: the digit's centre of mass per frame (`digits.evaluate.centre_of_mass`); the per-frame
   displacement |c(i+1) - c(i)| over the 46 frames; its mean and its spread (standard deviation
   within a clip, averaged over clips) for the real clips, the interpolated ones and the baselines.
3. Generated keyframes: the bundled keyframe model makes 16 keyframes at 8 fps for canonical
   prompts; digit and direction accuracy (the digits classifier) of the keyframe clips and of the
   46-frame interpolated clips.
4. A contact sheet PNG: keyframes (held) | interpolated | truth for one test clip.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from magicvideo.video_io import read_video

FACTOR = 3
KEYFRAMES = 16


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / max(np.mean((a.astype(np.float64) - b) ** 2), 1e-12)))


def _gaussian(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of frames (F, H, W, 3) in [0, 1], on grayscale (Wang et al. 2004 constants)."""
    x = torch.from_numpy(np.asarray(a, np.float64).mean(-1))[:, None]
    y = torch.from_numpy(np.asarray(b, np.float64).mean(-1))[:, None]
    w = _gaussian()
    mu_x, mu_y = F.conv2d(x, w), F.conv2d(y, w)
    sxx = F.conv2d(x * x, w) - mu_x**2
    syy = F.conv2d(y * y, w) - mu_y**2
    sxy = F.conv2d(x * y, w) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return float(s.mean())


def blend(keys: np.ndarray | torch.Tensor, length: int, axis: int):
    """Linear blend of consecutive keyframes along `axis` onto (K - 1) * k + 1 frames."""
    out = []
    for i in range(length):
        left, w = i // FACTOR, (i % FACTOR) / FACTOR
        right = min(left + 1, keys.shape[axis] - 1)
        a = keys.take(left, axis) if isinstance(keys, np.ndarray) else keys.select(axis, left)
        b = keys.take(right, axis) if isinstance(keys, np.ndarray) else keys.select(axis, right)
        out.append(a * (1 - w) + b * w)
    return np.stack(out, axis) if isinstance(keys, np.ndarray) else torch.stack(out, axis)


def motion(clips: np.ndarray) -> dict:
    from magicvideo.digits.evaluate import centre_of_mass

    track = centre_of_mass(clips)  # (N, F, 2)
    step = np.linalg.norm(np.diff(track, axis=1), axis=-1)  # (N, F - 1)
    ok = np.isfinite(step).all(1)
    step = step[ok]
    return {"mean_px_per_frame": float(step.mean()), "spread_px": float(step.std(axis=1).mean()),
            "clips_tracked": int(ok.sum())}


def real_clip_benchmark(pipe, rows, root: Path, steps: int, guidance: float, seed: int, batch: int,
                        strength: float = 1.0, fps: float = 24.0):
    from magicvideo.vae import decode_video, encode_video

    length = (KEYFRAMES - 1) * FACTOR + 1
    between = np.array([i for i in range(length) if i % FACTOR])
    methods = ("model", "nearest_keyframe", "pixel_blend", "latent_blend", "vae_reconstruction")
    scores = {m: {"psnr": [], "ssim": []} for m in methods}
    clips = {m: [] for m in ("real", *methods)}
    example = None
    seconds = 0.0
    for start in range(0, len(rows), batch):
        chunk = rows[start : start + batch]
        truth = []
        for row in chunk:
            frames, _ = read_video(root / row["path"])
            truth.append(frames[:length].astype(np.float32) / 255.0)
        truth = np.stack(truth)  # (B, 46, H, W, 3)
        keys = truth[:, ::FACTOR]
        tic = time.perf_counter()
        out = pipe(video=(keys * 255).round().astype(np.uint8), fps=fps / FACTOR, num_inference_steps=steps,
                   guidance_scale=guidance, strength=strength, generator=torch.Generator().manual_seed(seed + start)).frames
        seconds += time.perf_counter() - tic
        nearest = np.stack([keys[:, min(round(i / FACTOR), KEYFRAMES - 1)] for i in range(length)], 1)
        pixel = blend(keys, length, 1)
        with torch.no_grad():
            video = torch.from_numpy(truth).permute(0, 4, 1, 2, 3) * 2 - 1
            z = encode_video(pipe.vae, video)
            as_np = lambda v: ((v.permute(0, 2, 3, 4, 1).float().numpy() + 1) / 2).clip(0, 1)  # noqa: E731
            recon = as_np(decode_video(pipe.vae, z))
            latent = as_np(decode_video(pipe.vae, blend(z[:, :, ::FACTOR], length, 2)))
        results = {"model": out, "nearest_keyframe": nearest, "pixel_blend": pixel, "latent_blend": latent,
                   "vae_reconstruction": recon}
        for name, clip_batch in results.items():
            for clip, real in zip(clip_batch, truth):
                scores[name]["psnr"].append(psnr(clip[between], real[between]))
                scores[name]["ssim"].append(ssim(clip[between], real[between]))
            clips[name].append(np.asarray(clip_batch))
        clips["real"].append(truth)
        if example is None:
            example = (keys[0], out[0], truth[0])
        print(f"{start + len(chunk)}/{len(rows)} clips: model PSNR {np.mean(scores['model']['psnr']):.2f} "
              f"latent blend {np.mean(scores['latent_blend']['psnr']):.2f}", flush=True)
    table = {m: {"psnr": float(np.mean(v["psnr"])), "ssim": float(np.mean(v["ssim"])),
                 "psnr_sem": float(np.std(v["psnr"]) / np.sqrt(len(v["psnr"])))} for m, v in scores.items()}
    wins = {m: float(np.mean(np.array(scores["model"]["psnr"]) > np.array(scores[m]["psnr"])))
            for m in methods if m != "model"}
    # paired: the per-clip difference model - method, its mean and standard error, for PSNR and SSIM
    for m in methods:
        if m != "model":
            for key in ("psnr", "ssim"):
                diff = np.array(scores["model"][key]) - np.array(scores[m][key])
                table[m][f"model_minus_{key}"] = float(diff.mean())
                table[m][f"model_minus_{key}_sem"] = float(diff.std() / np.sqrt(len(diff)))
    moves = {m: motion(np.concatenate(v)) for m, v in clips.items()}
    return table, wins, moves, example, seconds


def contact_sheet(example, path: Path, columns: int = 16) -> None:
    """Three rows of the first `columns` frames: keyframes held (in-between columns dimmed) |
    interpolated | truth; keyframe columns get a white bar above them."""
    from PIL import Image

    keys, out, truth = example
    size = truth.shape[1]
    held = np.stack([keys[i // FACTOR] * (1.0 if i % FACTOR == 0 else 0.35) for i in range(columns)])
    rows = [held, out[:columns], truth[:columns]]
    gap, bar = 2, 3
    sheet = np.zeros((bar + 3 * size + 2 * gap, columns * (size + gap) - gap, 3), np.float32) + 0.2
    for c in range(columns):
        x = c * (size + gap)
        if c % FACTOR == 0:
            sheet[:bar, x : x + size] = 1.0
        for r, frames in enumerate(rows):
            y = bar + r * (size + gap)
            sheet[y : y + size, x : x + size] = frames[c]
    image = Image.fromarray((sheet.clip(0, 1) * 255).round().astype(np.uint8))
    image = image.resize((image.width * 2, image.height * 2), Image.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def generated_benchmark(pipe, count: int, steps: int, guidance: float, keyframe_steps: int, seed: int, batch: int,
                        strength: float = 1.0):
    from magicvideo.digits.evaluate import canonical_prompts, evaluate_clips
    from magicvideo.pipelines.keyframes import load_pipeline

    keyframe_pipe = load_pipeline(None, device="cpu", progress_bar=False)
    prompts = canonical_prompts()
    jobs = [prompts[i] for i in sorted(random.Random(seed).sample(range(len(prompts)), min(count, len(prompts))))]
    keyframe_clips, interpolated = [], []
    for start in range(0, len(jobs), batch):
        chunk = jobs[start : start + batch]
        with torch.no_grad():
            latents = keyframe_pipe([p for p, _, _ in chunk], num_frames=KEYFRAMES, fps=24 / FACTOR,
                                    num_inference_steps=keyframe_steps, generator=torch.Generator().manual_seed(seed + start),
                                    output_type="latent").frames
            keyframe_clips.append(keyframe_pipe.video_processor.postprocess_video(keyframe_pipe.decode_latents(latents), "np"))
        interpolated.append(pipe(keyframe_latents=latents, prompt=[p for p, _, _ in chunk], fps=24 / FACTOR,
                                 num_inference_steps=steps, guidance_scale=guidance, strength=strength,
                                 generator=torch.Generator().manual_seed(seed + start)).frames)
        print(f"{start + len(chunk)}/{len(jobs)} generated clips", flush=True)
    digits, directions = [d for _, d, _ in jobs], [r for _, _, r in jobs]
    keys = evaluate_clips(np.concatenate(keyframe_clips), digits, directions, [24 / FACTOR] * len(jobs))
    full = evaluate_clips(np.concatenate(interpolated), digits, directions, [24.0] * len(jobs))
    pick = ("clips", "digit_accuracy", "direction_accuracy", "motion_direction_accuracy", "displacement")
    return {"keyframes_8fps": {k: keys[k] for k in pick},
            "interpolated_24fps": {k: full[k] for k in pick},
            "interpolated_motion": motion(np.concatenate(interpolated)),
            "settings": {"keyframe_steps": keyframe_steps, "keyframe_guidance": 7.5}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="interpolation pipeline folder (default: the bundled one)")
    parser.add_argument("--test-data", default="data/digits-test/captions.csv",
                        help="captions.csv of held-out videos of one frame rate (`magicvideo digits data --split test`)")
    parser.add_argument("--clips", type=int, default=96, help="held-out real clips (default: 96)")
    parser.add_argument("--generated", type=int, default=48, help="generated keyframe clips (0: skip; default: 48)")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, default=1.0)
    parser.add_argument("--strength", type=float, default=1.0, help="start from the noised latent blend (< 1)")
    parser.add_argument("--scheduler", help="swap the sampler: ddim, dpm++, ...")
    parser.add_argument("--keyframe-steps", type=int, default=25)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, help="write the metrics as JSON")
    parser.add_argument("--sheet", type=Path, help="write a contact sheet PNG (keyframes | interpolated | truth)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from magicvideo.pipelines.interpolation import load_interpolation_pipeline

    pipe = load_interpolation_pipeline(args.model, device="cpu", progress_bar=False)
    if args.scheduler:
        pipe.set_scheduler(args.scheduler)
    test = Path(args.test_data)
    with open(test, newline="") as f:
        rows = list(csv.DictReader(f))
    fps_values = sorted({float(r["fps"]) for r in rows})
    if len(fps_values) != 1:
        parser.error(f"--test-data: videos of one frame rate expected, found {fps_values}")
    rows = rows[: args.clips]
    table, wins, moves, example, seconds = real_clip_benchmark(pipe, rows, test.parent, args.steps, args.guidance,
                                                               args.seed, args.batch, args.strength, fps_values[0])
    result = {"settings": {"model": str(args.model or "bundled"), "clips": len(rows), "data_fps": fps_values,
                           "factor": FACTOR, "keyframes": KEYFRAMES, "steps": args.steps, "guidance": args.guidance,
                           "strength": args.strength,
                           "scheduler": type(pipe.scheduler).__name__},
              "real_clips": table, "model_psnr_wins_per_clip": wins, "motion": moves,
              "seconds_per_clip": seconds / len(rows)}
    print(f"\n{'method':>20}  {'PSNR':>6}  {'SSIM':>6}   motion: mean px/frame, spread")
    for name, row in table.items():
        m = moves[name]
        print(f"{name:>20}  {row['psnr']:6.2f}  {row['ssim']:6.4f}   {m['mean_px_per_frame']:.3f}  {m['spread_px']:.3f}")
    m = moves["real"]
    print(f"{'real':>20}  {'':>6}  {'':>6}   {m['mean_px_per_frame']:.3f}  {m['spread_px']:.3f}")
    if args.sheet:
        contact_sheet(example, args.sheet)
    if args.generated:
        result["generated"] = generated_benchmark(pipe, args.generated, args.steps, args.guidance, args.keyframe_steps,
                                                  args.seed, args.batch, args.strength)
        print(json.dumps(result["generated"], indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
