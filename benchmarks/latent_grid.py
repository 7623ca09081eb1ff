"""What a finer latent grid costs the keyframe U-Net: a training step and a sampling call at 8 x 8 latents
(the bundled factor-8 VAE on 64 px frames) against 16 x 16 (a factor-4 VAE), same U-Net config, one run.

Issue #41 asks whether a finer latent keeps a moving digit better, "with its cost". This script measures the
cost: the 3D U-Net of a training config (default: the bundled model's, configs/digits-causal.yaml) with random
weights, a training step (forward, v-prediction MSE, backward; the config's batch, 16 frames) and one sampling
call (forward, the classifier-free-guidance batch of 2, no gradient), interleaved over repeats, medians; and
prints the 16 x 16 / 8 x 8 ratios. Random weights: the cost does not depend on their values.

    OMP_NUM_THREADS=1 python benchmarks/latent_grid.py [--config configs/digits-causal.yaml] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from magicvideo.models.unet_3d import MagicVideoUNet3D
from magicvideo.training.config import load_config


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/digits-causal.yaml", help="training config with model.unet")
    parser.add_argument("--grids", type=int, nargs="+", default=[8, 16], help="latent sizes; the first is the baseline")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = load_config(args.config)
    torch.manual_seed(0)
    unet = MagicVideoUNet3D(**config.model.unet)
    channels, frames = unet.config.in_channels, unet.config.num_frames
    batch, tokens = config.train.batch_size, config.model.text_max_length or 77
    text_width = unet.config.cross_attention_dim
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4)

    def inputs(size: int, clips: int):
        return (torch.randn(clips, channels, frames, size, size), torch.randint(0, 1000, (clips,)),
                torch.randn(clips, tokens, text_width), torch.full((clips,), 8.0))

    def train_step(size: int) -> float:
        x, t, text, fps = inputs(size, batch)
        started = time.perf_counter()
        loss = (unet(x, t, text, fps=fps).sample - x).pow(2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - started

    @torch.no_grad()
    def sample_call(size: int) -> float:
        x, t, text, fps = inputs(size, 2)
        started = time.perf_counter()
        unet(x, t, text, fps=fps)
        return time.perf_counter() - started

    times = {size: {"train_step": [], "sample_call": []} for size in args.grids}
    for size in args.grids:  # warm-up
        train_step(size), sample_call(size)
    for _ in range(args.repeats):
        for size in args.grids:
            times[size]["train_step"].append(train_step(size))
            times[size]["sample_call"].append(sample_call(size))
    base = args.grids[0]
    result = {}
    for size in args.grids:
        medians = {kind: statistics.median(values) for kind, values in times[size].items()}
        result[f"{size}x{size}"] = {**{f"{kind}_s": round(v, 4) for kind, v in medians.items()},
                                    **{f"{kind}_ratio": round(v / statistics.median(times[base][kind]), 2)
                                       for kind, v in medians.items()}}
    print(json.dumps({"config": args.config, "batch": batch, "frames": frames, "threads": torch.get_num_threads(),
                      "grids": result}, indent=2))
    return result


if __name__ == "__main__":
    main()
