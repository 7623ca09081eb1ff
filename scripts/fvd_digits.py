"""FVD of a digits text-to-video model against real held-out clips, with its floor and ceilings.

    python scripts/fvd_digits.py runs/fvd-digits                     # the bundled model, 500 clips a set
    python scripts/fvd_digits.py runs/fvd-digits --models runs/digits/final runs/digits-none/final
    python scripts/fvd_digits.py runs/fvd-digits --models                # only the reference sets
    python scripts/fvd_digits.py runs/fvd-cascade --fps 24 --frames 46 --models src/magicvideo/weights

Every set is N 16-frame 64x64 clips at 8 fps (`--fps`, `--frames`), written as mp4 the same way
(so compression is the same for all), embedded by I3D and compared with the reference set. A
model folder may be a cascade: its keyframes are made at fps / its interpolation factor and
interpolated (e.g. 16 keyframes at 8 fps -> 46 frames at 24 fps, against real 46-frame clips).

- ``real-a``: the reference, real clips of held-out test digits (seed 1);
- ``real-b``: other real clips of held-out digits (seed 2): FVD(real-b, real-a) is the *floor*,
  what a perfect generator scores with this many clips;
- ``model-PARENT-NAME``: each model's clips for the captions of ``real-b`` (seed i for clip i);
- ``shuffled``: the clips of ``real-b`` with their frames in a random order: every frame real, the
  motion destroyed (how much FVD sees of time);
- ``noise``: the bundled model's VAE decoding Gaussian latents: a generator that learned nothing
  (the ceiling).

Every step is resumable: clips already written and I3D features already cached are reused (a
model's clips only while its weights and the sampling settings are unchanged).
Prints a markdown table and writes ``OUT/fvd.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from magicvideo.digits.data import digit_clips as real_clips
from magicvideo.evaluation.fvd import cached_features, fvd_from_features
from magicvideo.evaluation.i3d import I3D
from magicvideo.evaluation.videos import list_videos
from magicvideo.generation import generate_clips, job_records, pipeline_fingerprint, plan_clips
from magicvideo.manifest import VideoRecord, write_manifest
from magicvideo.loading import BUNDLED_MODEL
from magicvideo.pipelines.cascade import MagicVideoCascadePipeline
from magicvideo.vae import decode_video, load_vae
from magicvideo.video_io import to_uint8, write_video

NATIVE_FPS = 24  # the digits videos' rate: a set at fps f takes every (24 / f)-th frame


def write_set(folder: Path, clips: np.ndarray, captions, fps: float) -> None:
    """Clips (N, F, H, W[, 3]) uint8 as numbered mp4s plus captions.csv; existing files are kept."""
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for i, (frames, caption) in enumerate(zip(clips, captions)):
        path = folder / f"{i:05d}.mp4"
        if not path.is_file():
            rgb = frames if frames.ndim == 4 else np.repeat(frames[..., None], 3, axis=-1)
            write_video(path, rgb, fps=fps)
        records.append(VideoRecord(path.name, caption, fps))
    write_manifest(folder / "captions.csv", records)


def clear_if_stale(folder: Path, fingerprint: str) -> None:
    """Delete the clips in ``folder`` unless they were made by the model and settings of ``fingerprint``."""
    stamp = folder / "generation.txt"
    if stamp.is_file() and stamp.read_text().strip() == fingerprint:
        return
    if folder.is_dir():
        stale = sorted(folder.glob("*.mp4"))
        if stale:
            print(f"{folder}: the model or the sampling settings changed; regenerating {len(stale)} clips")
        for path in stale:
            path.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    stamp.write_text(fingerprint + "\n")


def noise_clips(vae, n: int, frames: int, size: int) -> np.ndarray:
    """The VAE decoding Gaussian latents (scaled, as the U-Net produces them): (n, F, H, W, 3) uint8."""
    generator, clips = torch.Generator().manual_seed(0), []
    latent_size = size // 2 ** (len(vae.config.block_out_channels) - 1)
    for _ in range(n):
        latents = torch.randn(1, vae.config.latent_channels, frames, latent_size, latent_size, generator=generator)
        with torch.no_grad():
            video = decode_video(vae, latents)[0].clamp(-1, 1)
        clips.append(to_uint8((video.permute(1, 2, 3, 0).numpy() + 1) / 2))
    return np.stack(clips)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="working folder (clips, feature cache, fvd.json)")
    parser.add_argument("--models", type=Path, nargs="*", default=[BUNDLED_MODEL],
                        help="pipeline folders to score, each in OUT/model-PARENT-NAME (default: the bundled model; "
                             "none: only build and embed the reference sets)")
    parser.add_argument("--clips", type=int, default=500,
                        help="clips per set (default: 500; more than the 400 I3D dimensions, for full-rank covariances)")
    parser.add_argument("--steps", type=int, default=25, help="denoising steps (default: 25)")
    parser.add_argument("--guidance", type=float, default=7.5, help="guidance scale (default: 7.5)")
    parser.add_argument("--fps", type=float, default=8.0, choices=(8.0, 12.0, 24.0),
                        help="frame rate of every set (default: 8, the keyframe model's default)")
    parser.add_argument("--frames", type=int, default=16,
                        help="frames per clip (default: 16; a cascade interpolating x3 from 16 keyframes: 46)")
    parser.add_argument("--chunk-size", type=int, default=None,
                        help="causal sampling of the keyframes in chunks of this many frames (default: each model's "
                             "saved default); each chunk size makes its own set, OUT/model-...-chunkC")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    n, out, fps = args.clips, args.out, args.fps
    chunk = "" if args.chunk_size is None else f"-chunk{args.chunk_size}"  # each chunk size its own set
    stride = int(NATIVE_FPS / fps)
    real_a = real_clips(n, split="test", stride=stride, seed=1, num_frames=args.frames)
    real_b = real_clips(n, split="test", stride=stride, seed=2, num_frames=args.frames)
    captions = list(real_b["caption"])
    write_set(out / "real-a", real_a["frames"], real_a["caption"], fps)
    write_set(out / "real-b", real_b["frames"], captions, fps)
    rng = np.random.default_rng(0)
    write_set(out / "shuffled", np.stack([clip[rng.permutation(len(clip))] for clip in real_b["frames"]]), captions,
              fps)
    if not (out / "noise" / "captions.csv").is_file():
        vae = load_vae(BUNDLED_MODEL / "vae")
        write_set(out / "noise", noise_clips(vae, n, *real_a["frames"].shape[1:3]), captions, fps)

    sets = {"real-b (floor)": "real-b"}
    for model in args.models:
        cascade = MagicVideoCascadePipeline.from_pretrained(model, progress_bar=False,
                                                            stages=("keyframes", "interpolation"))
        stages = [stage for stage in (cascade.keyframes, cascade.interpolation) if stage is not None]
        keyframe_fps = fps / (cascade.interpolation_factor or 1)
        folder = out / ("model-" + "-".join(model.resolve().parts[-2:]) + chunk)  # runs/x/final -> model-x-final
        clear_if_stale(folder, " ".join(map(pipeline_fingerprint, stages))
                       + f" steps={args.steps} guidance={args.guidance} fps={keyframe_fps:g}" + chunk)
        jobs = plan_clips(captions, folder, seed=0)
        for job, written in generate_clips(cascade, jobs, fps=keyframe_fps, skip_existing=True,
                                           num_inference_steps=args.steps, guidance_scale=args.guidance,
                                           chunk_size=args.chunk_size):
            if written is not None and written.frames != args.frames:
                job.path.unlink()
                raise SystemExit(f"{model} makes clips of {written.frames} frames, not --frames {args.frames}")
        write_manifest(folder / "captions.csv", job_records(jobs, fps))
        sets[f"model {model}{chunk}"] = folder.name
    sets.update({"real-b, frames shuffled": "shuffled", "VAE-decoded noise (ceiling)": "noise"})

    i3d = I3D.from_pretrained()
    features = {
        name: cached_features([item.path for item in list_videos(out / name / "captions.csv")], i3d,
                              out / "features", desc=f"I3D {name}")
        for name in ("real-a", *sets.values())
    }
    results = {label: fvd_from_features(features["real-a"], features[name]) for label, name in sets.items()}
    report = {"models": [str(m) for m in args.models], "clips_per_set": n, "fps": fps, "frames": args.frames,
              "steps": args.steps, "chunk_size": args.chunk_size,
              "guidance": args.guidance, "fvd_vs_real_a": results}
    (out / "fvd.json").write_text(json.dumps(report, indent=2))
    print(f"FVD against {n} real held-out clips (real-a), {n} clips a set, {args.frames} frames at {fps:g} fps:\n")
    print("| set | FVD |\n| --- | ---: |")
    for label, value in results.items():
        print(f"| {label} | {value:.1f} |")


if __name__ == "__main__":
    main()
