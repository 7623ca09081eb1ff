"""Measure the x4 super-resolution stage on held-out real digits (64 px -> 256 px).

Held-out clips: test-split MNIST digits (never seen in training) moving as Moving MNIST clips do
(16 frames, stride 3), rendered at 256 px by `magicvideo.digits.hires`; the input is the truth
area-downsampled to 64 px and quantised to uint8 (as a decoded video frame is). Reported, in the
same run, for bicubic, Lanczos and the SR model (shared noise and independent noise):

* PSNR and SSIM (Gaussian 11x11, sigma 1.5, data range 1) against the 256 px truth, mean over frames;
* digit accuracy: the bundled digit classifier on the upscaled clips area-downsampled to 64 px
  (and on the truth's own 64 px clips, for reference);
* consistency: PSNR of the upscaled frame area-downsampled to 64 px against the input frame;
* flicker: mean absolute change between consecutive frames of the *error* (output - truth), so the
  true motion cancels (x255, grey levels); and on static clips (one frame repeated) the mean
  absolute difference of consecutive output frames (VBench's temporal flickering, x255).

    PYTHONPATH=src python scripts/measure_super_resolution.py --model runs/digits-sr/final --clips 10 \
        --json docs/super-resolution-metrics.json --sheet docs/super-resolution-contact-sheet.png
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from magicvideo.digits.classifier import classify, load_classifier
from magicvideo.digits.hires import downsample, test_frames
from magicvideo.pipelines.upscale import load_upscale_pipeline


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over frames of the PSNR (data range 1) of (N, H, W) arrays."""
    mse = ((a - b) ** 2).reshape(len(a), -1).mean(1)
    return float(np.mean(10 * np.log10(1.0 / np.maximum(mse, 1e-10))))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM (Wang et al. 2004: Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03, range 1) of (N, H, W)."""
    x, y = torch.from_numpy(a).double()[:, None], torch.from_numpy(b).double()[:, None]
    g = torch.exp(-((torch.arange(11) - 5.0) ** 2) / (2 * 1.5**2)).double()
    g = (g / g.sum())
    window = (g[:, None] * g[None, :])[None, None]
    def blur(t):
        return F.conv2d(t, window)  # valid region only, as scikit-image's default
    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return float(s.mean(dim=(1, 2, 3)).mean())


def bicubic(lr: np.ndarray, scale: int) -> np.ndarray:
    t = torch.from_numpy(lr)[:, None]
    return F.interpolate(t, scale_factor=scale, mode="bicubic", align_corners=False)[:, 0].clamp(0, 1).numpy()


def lanczos(lr: np.ndarray, scale: int) -> np.ndarray:
    out = []
    for frame in lr:
        image = Image.fromarray(frame.astype(np.float32), mode="F")
        out.append(np.asarray(image.resize((frame.shape[1] * scale, frame.shape[0] * scale), Image.LANCZOS)))
    return np.clip(np.stack(out), 0, 1).astype(np.float32)


def error_flicker(out: np.ndarray, truth: np.ndarray) -> float:
    """(C, F, H, W): mean |(out_t - truth_t) - (out_{t-1} - truth_{t-1})| x 255."""
    err = out - truth
    return float(np.abs(np.diff(err, axis=1)).mean() * 255)


def static_flicker(out: np.ndarray) -> float:
    """(C, F, H, W) of static clips: mean |out_t - out_{t-1}| x 255."""
    return float(np.abs(np.diff(out, axis=1)).mean() * 255)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="SR pipeline folder (default: the bundled digits SR model)")
    parser.add_argument("--clips", type=int, default=10)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--static-clips", type=int, default=4, help="static clips (one frame x 8) for flicker")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--noise-level", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1234, help="which held-out clips (test split)")
    parser.add_argument("--no-independent", action="store_true", help="skip the independent-noise run")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--sheet", type=Path, default=None, help="contact sheet PNG: LR | bicubic | SR | truth")
    args = parser.parse_args()
    torch.set_num_threads(1)

    pipe = load_upscale_pipeline(args.model)
    pipe.set_progress_bar_config(disable=True)
    s = pipe.scale
    hr, lr, digits = test_frames(args.frames, seed=args.seed, num_clips=args.clips)
    lr = np.round(lr * 255) / 255  # the input as a decoded uint8 video frame
    lr = lr.astype(np.float32)
    c, f = lr.shape[:2]
    flat_hr, flat_lr = hr.reshape(c * f, *hr.shape[2:]), lr.reshape(c * f, *lr.shape[2:])

    outputs = {"bicubic": bicubic(flat_lr, s), "lanczos": lanczos(flat_lr, s)}
    timings = {}

    def run_sr(video_clips: np.ndarray, shared: bool) -> np.ndarray:
        out = []
        for i, frames in enumerate(video_clips):
            res = pipe(frames[..., None].repeat(3, -1), num_inference_steps=args.steps, noise_level=args.noise_level,
                       generator=torch.Generator().manual_seed(i), shared_noise=shared).frames
            out.append(res.mean(-1))
        return np.stack(out)

    modes = [("sr_shared", True)] + ([] if args.no_independent else [("sr_independent", False)])
    for name, shared in modes:
        started = time.perf_counter()
        outputs[name] = run_sr(lr, shared).reshape(c * f, *hr.shape[2:])
        timings[name] = (time.perf_counter() - started) / (c * f)
        print(f"{name}: {timings[name]:.2f} s/frame", flush=True)

    classifier = load_classifier()
    truth_digits, _ = classify(classifier, lr)
    results = {"clips": c, "frames_per_clip": f, "steps": args.steps, "noise_level": args.noise_level,
               "truth_64px_digit_accuracy": float((truth_digits == digits).mean()), "methods": {}}
    for name, out in outputs.items():
        clips_out = out.reshape(c, f, *out.shape[1:])
        back = downsample(out)
        predicted, _ = classify(classifier, back.reshape(c, f, *back.shape[1:]))
        results["methods"][name] = {
            "psnr": psnr(out, flat_hr), "ssim": ssim(out, flat_hr),
            "digit_accuracy": float((predicted == digits).mean()),
            "consistency_psnr_64px": psnr(back, flat_lr),
            "error_flicker_x255": error_flicker(clips_out, hr),
            **({"seconds_per_frame": timings[name]} if name in timings else {}),
        }

    # static clips: one held-out frame repeated, shared vs independent noise
    if args.static_clips:
        _, static_lr, _ = test_frames(1, seed=args.seed + 1, num_clips=args.static_clips)
        static_lr = np.repeat(np.round(static_lr * 255) / 255, 8, axis=1).astype(np.float32)
        results["static_flicker_x255"] = {name: static_flicker(run_sr(static_lr, shared)) for name, shared in modes}
        results["static_flicker_x255"]["bicubic"] = 0.0

    print(json.dumps(results, indent=2))
    header = f"{'method':16s} {'PSNR':>7s} {'SSIM':>7s} {'digit acc':>9s} {'consist.':>8s} {'err-flicker':>11s}"
    print(header)
    for name, m in results["methods"].items():
        print(f"{name:16s} {m['psnr']:7.2f} {m['ssim']:7.4f} {m['digit_accuracy']:9.3f} {m['consistency_psnr_64px']:8.2f} "
              f"{m['error_flicker_x255']:11.3f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if args.sheet:
        rows = []
        for k in (0, c // 2, c - 1):
            i = k * f + f // 2
            nearest = np.kron(flat_lr[i], np.ones((s, s)))
            rows.append(np.concatenate([nearest, outputs["bicubic"][i], outputs["sr_shared"][i], flat_hr[i]], axis=1))
        args.sheet.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((np.clip(np.concatenate(rows), 0, 1) * 255).round().astype(np.uint8)).save(args.sheet)


if __name__ == "__main__":
    main()
