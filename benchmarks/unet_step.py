"""CPU time of one denoising step: MagicVideoUNet3D vs diffusers' UNet3DConditionModel (ModelScope's).

Both U-Nets get equal widths, depth, attention heads, text width and input; they differ in their
temporal layers: MagicVideo has frame-wise adaptors and directed temporal attention only, diffusers'
UNet3DConditionModel has temporal convolutions (4 Conv3d (3,1,1) per res-block) plus temporal
attention. Forward pass only, fp32, torch.no_grad, median of --repeats after one warm-up; both models
are timed in the same run, alternating, so machine load hits both alike, and so is this machine's
fp32 matmul rate (a 2048 x 2048 matmul, best of 3, before every round): each model's achieved
GFLOP/s (its FLOPs over its fastest step) is reported as a fraction of the best matmul rate. Peak
memory: the peak resident set of one step above the resident set before it (the model's weights),
measured in a fresh process per model.

    PYTHONPATH=src python benchmarks/unet_step.py [--widths two-level|sd15|small|tiny] [--frames 16] [--size 32]
        [--repeats 5] [--threads N]

`two-level` (default): block_out_channels (64, 128), one cross-attention level; the others are
`benchmarks/gpu.py`'s four-level U-Nets (sd15: Stable Diffusion 1.5's widths, 320-1280).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from diffusers import UNet3DConditionModel

from magicvideo import MagicVideoUNet3D
from magicvideo.flops import count_flops

from gpu import WIDTHS as FOUR_LEVEL_WIDTHS, build as build_four_level  # noqa: E402  (benchmarks/gpu.py)

WIDTHS = (64, 128)
SHARED = dict(block_out_channels=WIDTHS, layers_per_block=2, cross_attention_dim=64, attention_head_dim=8,
              norm_num_groups=32, in_channels=4, out_channels=4)
TEXT_TOKENS = 77


def build(frames: int, widths: str = "two-level", only: str | None = None) -> dict[str, torch.nn.Module]:
    """Both U-Nets (or only the one named `only`)."""
    if widths != "two-level":
        theirs = "diffusers UNet3DConditionModel"
        names = {"MagicVideoUNet3D": "MagicVideoUNet3D", theirs: "UNet3DConditionModel"}
        wanted = [only] if only else list(names)
        models = build_four_level(widths, frames, [names[name] for name in wanted])
        return {name: models[names[name]] for name in wanted}
    builders = {
        "MagicVideoUNet3D": lambda: MagicVideoUNet3D(**SHARED, num_frames=frames, temporal_attention_heads=8,
                                                     down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                                     up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")),
        "diffusers UNet3DConditionModel": lambda: UNet3DConditionModel(
            **SHARED, down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
            up_block_types=("UpBlock3D", "CrossAttnUpBlock3D")),
    }
    models = {}
    for name in [only] if only else builders:
        torch.manual_seed(0)
        models[name] = builders[name]().eval()
    return models


def matmul_gflops(size: int = 2048, repeats: int = 3) -> float:
    """This machine's fp32 matmul rate now: 2 n^3 FLOPs over the fastest of `repeats` n x n matmuls."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def inputs(args, cross_attention_dim: int):
    torch.manual_seed(1)
    return (torch.randn(1, 4, args.frames, args.size, args.size), torch.tensor([500]),
            torch.randn(1, TEXT_TOKENS, cross_attention_dim))


EXTRA = {"MagicVideoUNet3D": {"fps": 8.0}, "diffusers UNet3DConditionModel": {}}  # ours embeds the fps


def step_peak_mib(name: str, args) -> float:
    """Peak resident set of one step of model `name` above its weights, in a fresh interpreter (`_peak_of`)."""
    command = [sys.executable, __file__, "--peak-of", name, "--widths", args.widths, "--frames", str(args.frames),
               "--size", str(args.size)] + (["--threads", str(args.threads)] if args.threads else [])
    return json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)["peak_mib"]


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _peak_of(args) -> None:
    """Peak resident set above the resident set before the step. On Linux the high-water mark is reset
    first (/proc/self/clear_refs), so building the model does not hide the step's own peak; elsewhere
    the process's maxrss growth is a lower bound."""
    model = build(args.frames, args.widths, only=args.peak_of)[args.peak_of]
    sample, timestep, context = inputs(args, model.config.cross_attention_dim)
    try:
        before = _status_kib("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        peak = lambda: _status_kib("VmHWM")  # noqa: E731
    except OSError:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # noqa: E731
    with torch.no_grad():
        model(sample, timestep, context, **EXTRA[args.peak_of])
    print(json.dumps({"peak_mib": (peak() - before) / 1024}))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--widths", choices=("two-level", *FOUR_LEVEL_WIDTHS), default="two-level",
                        help="two-level (default): (64, 128); sd15, small, tiny: benchmarks/gpu.py's four-level U-Nets")
    parser.add_argument("--frames", type=int, default=16, help="frames per clip (default: 16)")
    parser.add_argument("--size", type=int, default=32, help="latent height and width (default: 32)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats after one warm-up (default: 5)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--no-memory", action="store_true", help="skip the per-model peak-memory processes")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    parser.add_argument("--peak-of", help=argparse.SUPPRESS)  # the child process of step_peak_mib
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.peak_of:
        return _peak_of(args)

    models = build(args.frames, args.widths)
    sample, timestep, context = inputs(args, models["MagicVideoUNet3D"].config.cross_attention_dim)
    times, rates = {name: [] for name in models}, []
    with torch.no_grad():
        for name, model in models.items():  # warm-up
            model(sample, timestep, context, **EXTRA[name])
        for _ in range(args.repeats):
            rates.append(matmul_gflops())
            for name, model in models.items():
                times[name].append(_timed(lambda: model(sample, timestep, context, **EXTRA[name])))
    matmul = max(rates)

    widths = models["MagicVideoUNet3D"].config.block_out_channels
    print(f"one denoising step, batch 1, latents 4x{args.frames}x{args.size}x{args.size}, {TEXT_TOKENS} text tokens; "
          f"widths {tuple(widths)}, 2 layers/block, cross-attn dim {context.shape[-1]}, 8 heads")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), fp32, no_grad, "
          f"median of {args.repeats} after 1 warm-up; fp32 matmul rate {matmul:.1f} GFLOP/s "
          f"(best of the {len(rates)} rounds, range {min(rates):.1f}-{matmul:.1f})")
    print(f"{'model':<32} {'params (M)':>10} {'GFLOPs':>8} {'median s':>9} {'min s':>7} {'GFLOP/s':>8} "
          f"{'of matmul':>9} {'peak MiB':>9}")
    report = {"widths": list(widths), "threads": torch.get_num_threads(), "matmul_gflops": matmul, "models": {}}
    for name, model in models.items():
        params = sum(p.numel() for p in model.parameters())
        flops = count_flops(model, sample, timestep, context, **EXTRA[name])
        achieved = flops / min(times[name]) / 1e9
        peak = float("nan") if args.no_memory else step_peak_mib(name, args)
        report["models"][name] = {"params_m": params / 1e6, "gflops": flops / 1e9, "median_s": statistics.median(times[name]),
                                  "min_s": min(times[name]), "gflop_per_s": achieved,
                                  "fraction_of_matmul": achieved / matmul, "peak_mib": peak}
        print(f"{name:<32} {params / 1e6:>10.2f} {flops / 1e9:>8.1f} {statistics.median(times[name]):>9.3f} "
              f"{min(times[name]):>7.3f} {achieved:>8.1f} {achieved / matmul:>9.0%} {peak:>9.0f}")
    ours, theirs = (report["models"][name]["median_s"] for name in models)
    report["time_ratio_ours_over_theirs"] = ours / theirs
    print(f"time ratio MagicVideoUNet3D / UNet3DConditionModel: {ours / theirs:.2f}x "
          f"(UNet3DConditionModel / MagicVideoUNet3D: {theirs / ours:.2f}x)")
    if args.json:
        print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
