"""GPU benchmark at Stable Diffusion widths: MagicVideoUNet3D vs diffusers' UNet3DConditionModel (ModelScope's).

For each model, in one run and on the same input: the time of one denoising step (classifier-free
guidance batch of 2, median of --repeats after a warm-up, synchronised), the peak memory of that
step, and a whole generation of --steps steps (DDIM, guidance 7.5, through magicvideo.sampling.denoise,
the loop every pipeline uses). Random weights: speed and memory do not depend on their values.

    python benchmarks/gpu.py                                 # CUDA, fp16, SD 1.5 widths, 16 x 32 x 32 latents
    python benchmarks/gpu.py --device cpu --widths tiny --dtype fp32 --steps 2   # the CPU check (its test)

Options for memory on small GPUs: --channels-last, --sdpa (default) or --slicing (attention slicing
of the spatial attention processors). Prints a table and, with --json, one JSON object per model.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
from diffusers import DDIMScheduler, UNet3DConditionModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from magicvideo import MagicVideoUNet3D  # noqa: E402
from magicvideo.sampling import denoise  # noqa: E402

WIDTHS = {"sd15": (320, 640, 1280, 1280), "small": (64, 128, 256, 256), "tiny": (32, 32, 64, 64)}
TEXT = {"sd15": 768, "small": 256, "tiny": 32}
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def build(widths: str, frames: int, names=("MagicVideoUNet3D", "UNet3DConditionModel")) -> dict[str, torch.nn.Module]:
    """The two U-Nets at `widths` (or only those in `names`), random weights."""
    shared = dict(block_out_channels=WIDTHS[widths], layers_per_block=2, cross_attention_dim=TEXT[widths],
                  attention_head_dim=8, norm_num_groups=32 if widths != "tiny" else 8, in_channels=4, out_channels=4)
    builders = {
        "MagicVideoUNet3D": lambda: MagicVideoUNet3D(**shared, num_frames=frames),
        "UNet3DConditionModel": lambda: UNet3DConditionModel(
            **shared, down_block_types=("CrossAttnDownBlock3D",) * 3 + ("DownBlock3D",),
            up_block_types=("UpBlock3D",) + ("CrossAttnUpBlock3D",) * 3),
    }
    models = {}
    for name in names:
        torch.manual_seed(0)
        models[name] = builders[name]().eval()
    return models


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # the process's high-water mark


def measure(name, model, device, dtype, args) -> dict:
    model.to(device=device, dtype=dtype)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    if args.slicing and hasattr(model, "set_attention_slice"):
        model.set_attention_slice("auto")
    fps = {"fps": 8.0} if name == "MagicVideoUNet3D" else {}
    latents = torch.randn(1, 4, args.frames, args.size, args.size, device=device, dtype=dtype)
    context = torch.randn(2, 77, model.config.cross_attention_dim, device=device, dtype=dtype)
    pair, t = torch.cat([latents] * 2), torch.tensor([500], device=device)
    times = []
    with torch.no_grad():
        model(pair, t, context, **fps)  # warm-up (kernels, allocator)
        reset_peak(device)
        for _ in range(args.repeats):
            synchronize(device)
            start = time.perf_counter()
            model(pair, t, context, **fps)
            synchronize(device)
            times.append(time.perf_counter() - start)
        step_peak = peak_bytes(device)
        scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False)
        scheduler.set_timesteps(args.steps, device=device)
        synchronize(device)
        start = time.perf_counter()
        denoise(lambda x, t: model(x, t, context, **fps).sample, scheduler, latents, guidance_scale=7.5)
        synchronize(device)
        generation = time.perf_counter() - start
    model.to("cpu")
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"model": name, "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
            "step_s": statistics.median(times), "step_min_s": min(times), "peak_gib": step_peak / 2**30,
            f"generation_{args.steps}_steps_s": generation, "device": str(device), "dtype": args.dtype,
            "widths": list(WIDTHS[args.widths]), "latents": [4, args.frames, args.size, args.size]}


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--widths", choices=tuple(WIDTHS), default="sd15")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="fp16")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=32, help="latent height and width (32 = 256 px)")
    parser.add_argument("--steps", type=int, default=25, help="steps of the whole generation")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--slicing", action="store_true", help="attention slicing")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU here (use --device cpu for the CPU check)")
    results = [measure(name, model, device, DTYPES[args.dtype], args)
               for name, model in build(args.widths, args.frames).items()]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"{name}, torch {torch.__version__}, {args.dtype}, widths {args.widths}, latents 4x{args.frames}x"
          f"{args.size}x{args.size}, CFG batch 2, median of {args.repeats}")
    print(f"{'model':<22} {'params M':>9} {'step s':>8} {'peak GiB':>9} {f'{args.steps} steps s':>12}")
    for r in results:
        print(f"{r['model']:<22} {r['params_m']:>9.1f} {r['step_s']:>8.3f} {r['peak_gib']:>9.2f} "
              f"{r[f'generation_{args.steps}_steps_s']:>12.2f}")
    ours, theirs = results
    print(f"time ratio MagicVideoUNet3D / UNet3DConditionModel: {ours['step_s'] / theirs['step_s']:.2f}x; "
          f"peak memory ratio {ours['peak_gib'] / theirs['peak_gib']:.2f}x")
    if args.json:
        for r in results:
            print(json.dumps(r))
    return results


if __name__ == "__main__":
    main()
