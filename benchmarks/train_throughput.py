"""Training throughput (clips/s) and peak memory of a small config on this machine, with and
without the latent cache; prints both figures and their ratio.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/train_throughput.py [--steps 12] [--threads 1]

Model: configs/tiny.yaml's 3D U-Net (8 frames, 64 px, 16x16 latents), a randomly initialised VAE
of configs/tiny-vae.yaml's architecture and the bundled MiniLM text encoder; batch 4, synthetic
shapes data. Each mode runs in its own process (peak RSS = that process's maximum resident set);
clips/s is the median over the steps after the first two.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def make_config(tmp: Path, steps: int) -> Path:
    from diffusers import AutoencoderKL

    from magicvideo.training.synthetic import write_synthetic_dataset

    manifest = write_synthetic_dataset(tmp / "data", 32, num_frames=24, size=64)
    tiny_vae = yaml.safe_load((ROOT / "configs" / "tiny-vae.yaml").read_text())["vae"]
    AutoencoderKL(block_out_channels=tiny_vae["block_out_channels"], latent_channels=4,
                  down_block_types=["DownEncoderBlock2D"] * 3, up_block_types=["UpDecoderBlock2D"] * 3,
                  norm_num_groups=tiny_vae["norm_num_groups"], layers_per_block=1).save_pretrained(tmp / "vae")
    config = yaml.safe_load((ROOT / "configs" / "tiny.yaml").read_text())
    config["model"]["vae"] = str(tmp / "vae")
    config["data"].update(manifest=str(manifest), cache_dir=str(tmp / "cache"), cache_dtype="float16")
    config["train"].update(max_steps=steps, warmup_steps=1)
    config["output"].update(output_dir=str(tmp / "run"), checkpoint_every=0, sample_every=0, validation_prompts=[])
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def worker(config_path: str, output_dir: str, threads: int) -> None:
    import torch

    from magicvideo.training import load_config, train

    torch.set_num_threads(threads)
    config = load_config(config_path)
    config.output.output_dir = output_dir
    train(config)
    rows = (Path(output_dir) / "metrics.csv").read_text().splitlines()[1:]
    rates = [float(row.split(",")[3]) for row in rows[2:]]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps({"clips_per_s": statistics.median(rates), "peak_rss_mb": peak_mb}))


def run_worker(config: Path, output_dir: Path, threads: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", str(config), str(output_dir), "--threads", str(threads)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12, help="training steps per mode (default: 12)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(*args.worker, args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        config = make_config(tmp, args.steps)
        uncached = run_worker(config, tmp / "uncached", args.threads)  # cache folder still empty: decodes videos
        from magicvideo.training import load_config
        from magicvideo.training.cache import build_cache_from_config

        started = time.perf_counter()
        index = build_cache_from_config(load_config(config))
        cache_s = time.perf_counter() - started
        cached = run_worker(config, tmp / "cached", args.threads)
        size_mb = sum(p.stat().st_size for p in (tmp / "cache").iterdir()) / 2**20
    print(f"config: configs/tiny.yaml (8 frames, 64 px, batch 4), {args.steps} steps, {args.threads} thread(s)")
    print(f"without cache: {uncached['clips_per_s']:.2f} clips/s, peak RSS {uncached['peak_rss_mb']:.0f} MiB")
    print(f"with cache:    {cached['clips_per_s']:.2f} clips/s, peak RSS {cached['peak_rss_mb']:.0f} MiB")
    print(f"speed-up with cache: {cached['clips_per_s'] / uncached['clips_per_s']:.2f}x; "
          f"memory ratio {cached['peak_rss_mb'] / uncached['peak_rss_mb']:.2f}")
    print(f"cache build: {len(index['videos'])} videos in {cache_s:.1f} s, {size_mb:.1f} MiB on disk")


if __name__ == "__main__":
    main()
