"""CPU time of one denoising step: MagicVideoUNet3D vs diffusers' UNet3DConditionModel (ModelScope's).

Both U-Nets get equal widths, depth, attention heads, text width and input; they differ in their
temporal layers: MagicVideo has frame-wise adaptors and directed temporal attention only, diffusers'
UNet3DConditionModel has temporal convolutions (4 Conv3d (3,1,1) per res-block) plus temporal
attention. Forward pass only, fp32, torch.no_grad, median of --repeats after one warm-up; both models
are timed in the same run, alternating, so machine load hits both alike.

    PYTHONPATH=src python benchmarks/unet_step.py [--frames 16] [--size 32] [--repeats 5] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from diffusers import UNet3DConditionModel

from magicvideo import MagicVideoUNet3D
from magicvideo.flops import count_flops

WIDTHS = (64, 128)
SHARED = dict(block_out_channels=WIDTHS, layers_per_block=2, cross_attention_dim=64, attention_head_dim=8,
              norm_num_groups=32, in_channels=4, out_channels=4)
TEXT_TOKENS = 77


def build(frames: int) -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    ours = MagicVideoUNet3D(**SHARED, num_frames=frames, temporal_attention_heads=8,
                            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
    theirs = UNet3DConditionModel(**SHARED, down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
                                  up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"))
    return {"MagicVideoUNet3D": ours.eval(), "diffusers UNet3DConditionModel": theirs.eval()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=16, help="frames per clip (default: 16)")
    parser.add_argument("--size", type=int, default=32, help="latent height and width (default: 32)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats after one warm-up (default: 5)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    models = build(args.frames)
    sample = torch.randn(1, 4, args.frames, args.size, args.size)
    context = torch.randn(1, TEXT_TOKENS, SHARED["cross_attention_dim"])
    timestep = torch.tensor([500])
    # MagicVideo's step includes its FPS embedding; UNet3DConditionModel has none.
    extra = {"MagicVideoUNet3D": {"fps": 8.0}, "diffusers UNet3DConditionModel": {}}
    times = {name: [] for name in models}
    with torch.no_grad():
        for name, model in models.items():  # warm-up
            model(sample, timestep, context, **extra[name])
        for _ in range(args.repeats):
            for name, model in models.items():
                start = time.perf_counter()
                model(sample, timestep, context, **extra[name])
                times[name].append(time.perf_counter() - start)

    print(f"one denoising step, batch 1, latents 4x{args.frames}x{args.size}x{args.size}, {TEXT_TOKENS} text tokens; "
          f"widths {WIDTHS}, 2 layers/block, cross-attn dim {SHARED['cross_attention_dim']}, 8 heads")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), fp32, no_grad, "
          f"median of {args.repeats} after 1 warm-up")
    print(f"{'model':<32} {'params (M)':>10} {'GFLOPs':>8} {'median s':>9} {'min s':>7}")
    medians = {}
    for name, model in models.items():
        params = sum(p.numel() for p in model.parameters())
        flops = count_flops(model, sample, timestep, context, **extra[name])
        medians[name] = statistics.median(times[name])
        print(f"{name:<32} {params / 1e6:>10.2f} {flops / 1e9:>8.1f} {medians[name]:>9.3f} {min(times[name]):>7.3f}")
    ours, theirs = medians.values()
    print(f"time ratio UNet3DConditionModel / MagicVideoUNet3D: {theirs / ours:.2f}x")


if __name__ == "__main__":
    main()
