"""One denoising step of MagicVideoUNet3D: against diffusers' UNet3DConditionModel, compiled, or profiled.

    python benchmarks/unet_step.py [--widths two-level|sd15|small|tiny] [--frames 16] [--size 32] [--repeats 5]
        [--threads N] [--batch 1] [--generation-steps N] [--no-memory] [--json]
    python benchmarks/unet_step.py --device cuda --dtype fp16 --widths sd15 --batch 2 --generation-steps 25
    python benchmarks/unet_step.py --compile --widths sd15 --threads 2 [--repeats 3] [--no-freezing]
    python benchmarks/unet_step.py --profile --widths sd15 [--ops 15]

Comparison (default): both U-Nets get equal widths, depth, attention heads, text width and input;
they differ in their temporal layers: MagicVideo has frame-wise adaptors and directed temporal
attention only, diffusers' UNet3DConditionModel (ModelScope's) has temporal convolutions (4 Conv3d
(3,1,1) per res-block) plus temporal attention. Forward pass only, `torch.no_grad`, median of
--repeats after one warm-up; both models are timed in the same run, alternating, so machine load hits
both alike, and so is the device's matmul rate (a 2048 x 2048 matmul in --dtype, best of 3, before
every round): each model's achieved GFLOP/s (its FLOPs over its fastest step) is reported as a
fraction of the best matmul rate. Peak memory of one step above the weights: on the CPU the peak
resident set, in a fresh process per model (the high-water mark reset first on Linux); on CUDA the
peak allocated memory. `--batch 2` is a classifier-free-guidance batch; `--generation-steps N` also
times a whole generation of N steps (DDIM, guidance 7.5, through `magicvideo.sampling.denoise`, the
loop every pipeline uses). Random weights: speed and memory do not depend on their values.

`--compile`: MagicVideoUNet3D eager vs `torch.compile` (inductor, weights frozen unless
--no-freezing): two eager steps after a warm-up, the compile time (the compiled model's first call),
the largest difference of the compiled output from the eager one, then eager and compiled steps
interleaved (--repeats).

`--profile`: where one step of MagicVideoUNet3D spends its time, by module kind and by op
(torch.profiler). Module kinds are timed with `record_function` ranges opened by forward hooks
(inclusive of their children, so the kinds are chosen not to nest: a spatial transformer's time is
split into its spatial attention blocks, its temporal attention and the rest).

Widths: `two-level` (default): block_out_channels (64, 128), one cross-attention level, cross-attention
dim 64; the four-level U-Nets `sd15` (Stable Diffusion 1.5's widths, 320-1280, cross-attention dim
768), `small` (64-256) and `tiny` (32-64, the tests' size).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from diffusers import DDIMScheduler, UNet3DConditionModel

from magicvideo import MagicVideoUNet3D
from magicvideo.flops import count_flops
from magicvideo.sampling import denoise

OURS, THEIRS = "MagicVideoUNet3D", "diffusers UNet3DConditionModel"
FOUR_LEVEL = {"sd15": (320, 640, 1280, 1280), "small": (64, 128, 256, 256), "tiny": (32, 32, 64, 64)}
TEXT = {"two-level": 64, "sd15": 768, "small": 256, "tiny": 32}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
TEXT_TOKENS = 77
EXTRA = {OURS: {"fps": 8.0}, THEIRS: {}}  # ours embeds the fps


def build(frames: int, widths: str = "two-level", names=(OURS, THEIRS)) -> dict[str, torch.nn.Module]:
    """The U-Nets named in `names` at `widths`, random weights (seed 0), in eval mode."""
    if widths == "two-level":
        shared = dict(block_out_channels=(64, 128), norm_num_groups=32)
        ours = dict(temporal_attention_heads=8, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
        theirs = dict(down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"), up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"))
    else:
        shared = dict(block_out_channels=FOUR_LEVEL[widths], norm_num_groups=32 if widths != "tiny" else 8)
        ours = {}
        theirs = dict(down_block_types=("CrossAttnDownBlock3D",) * 3 + ("DownBlock3D",),
                      up_block_types=("UpBlock3D",) + ("CrossAttnUpBlock3D",) * 3)
    shared.update(layers_per_block=2, cross_attention_dim=TEXT[widths], attention_head_dim=8, in_channels=4, out_channels=4)
    builders = {OURS: lambda: MagicVideoUNet3D(**shared, **ours, num_frames=frames),
                THEIRS: lambda: UNet3DConditionModel(**shared, **theirs)}
    models = {}
    for name in names:
        torch.manual_seed(0)
        models[name] = builders[name]().eval()
    return models


def inputs(args, cross_attention_dim: int, device="cpu", dtype=torch.float32):
    """Latents (batch, 4, frames, size, size), timestep 500 and text context, seeded."""
    torch.manual_seed(1)
    return (torch.randn(args.batch, 4, args.frames, args.size, args.size).to(device, dtype),
            torch.tensor([500], device=device),
            torch.randn(args.batch, TEXT_TOKENS, cross_attention_dim).to(device, dtype))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device = torch.device("cpu")) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def matmul_gflops(device: torch.device, dtype: torch.dtype, size: int = 2048, repeats: int = 3) -> float:
    """The device's matmul rate now: 2 n^3 FLOPs over the fastest of `repeats` n x n matmuls."""
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b), device) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


# -- peak memory ------------------------------------------------------------------------------------
def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def cpu_step_peak_mib(name: str, args) -> float:
    """Peak resident set of one step of model `name` above its weights, in a fresh interpreter (`_peak_of`)."""
    command = [sys.executable, __file__, "--peak-of", name, "--widths", args.widths, "--frames", str(args.frames),
               "--size", str(args.size), "--batch", str(args.batch)] + (["--threads", str(args.threads)] if args.threads else [])
    return json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)["peak_mib"]


def _peak_of(args) -> None:
    """Peak resident set above the resident set before the step. On Linux the high-water mark is reset
    first (/proc/self/clear_refs), so building the model does not hide the step's own peak; elsewhere
    the process's maxrss growth is a lower bound."""
    model = build(args.frames, args.widths, [args.peak_of])[args.peak_of]
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


def cuda_step_peak_mib(model, sample, timestep, context, extra, device) -> float:
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    with torch.no_grad():
        model(sample, timestep, context, **extra)
    synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - before) / 2**20


# -- the comparison ---------------------------------------------------------------------------------
def prepare(model: torch.nn.Module, device: torch.device, dtype: torch.dtype, args) -> torch.nn.Module:
    model.to(device=device, dtype=dtype)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    if args.slicing and hasattr(model, "set_attention_slice"):
        model.set_attention_slice("auto")
    return model


def generation_seconds(model, name: str, sample, context, device, args) -> float:
    """A whole generation of --generation-steps DDIM steps with guidance 7.5 (a batch of 2 per call)."""
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False)
    scheduler.set_timesteps(args.generation_steps, device=device)
    pair = torch.cat([context[:1], context[:1]])
    with torch.no_grad():
        return _timed(lambda: denoise(lambda x, t: model(x, t, pair, **EXTRA[name]).sample, scheduler, sample[:1],
                                      guidance_scale=7.5), device)


def compare(args, device: torch.device, dtype: torch.dtype) -> dict:
    models = {name: prepare(model, device, dtype, args) for name, model in build(args.frames, args.widths).items()}
    sample, timestep, context = inputs(args, models[OURS].config.cross_attention_dim, device, dtype)
    times, rates = {name: [] for name in models}, []
    with torch.no_grad():
        for name, model in models.items():  # warm-up (kernels, allocator)
            model(sample, timestep, context, **EXTRA[name])
        for _ in range(args.repeats):
            rates.append(matmul_gflops(device, dtype))
            for name, model in models.items():
                times[name].append(_timed(lambda: model(sample, timestep, context, **EXTRA[name]), device))
    matmul = max(rates)

    widths = models[OURS].config.block_out_channels
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} thread(s)"
    print(f"one denoising step, batch {args.batch}, latents 4x{args.frames}x{args.size}x{args.size}, {TEXT_TOKENS} text "
          f"tokens; widths {tuple(widths)}, 2 layers/block, cross-attn dim {context.shape[-1]}, 8 heads")
    print(f"torch {torch.__version__}, {where}, {args.dtype}, no_grad, median of {args.repeats} after 1 warm-up; "
          f"{args.dtype} matmul rate {matmul:.1f} GFLOP/s (best of the {len(rates)} rounds, range {min(rates):.1f}-{matmul:.1f})")
    generation = f"{args.generation_steps} steps s" if args.generation_steps else ""
    print(f"{'model':<32} {'params (M)':>10} {'GFLOPs':>8} {'median s':>9} {'min s':>7} {'GFLOP/s':>8} "
          f"{'of matmul':>9} {'peak MiB':>9} {generation:>12}")
    report = {"device": str(device), "dtype": args.dtype, "batch": args.batch, "widths": list(widths),
              "threads": torch.get_num_threads(), "matmul_gflops": matmul, "models": {}}
    for name, model in models.items():
        params = sum(p.numel() for p in model.parameters())
        flops = count_flops(model, sample, timestep, context, **EXTRA[name])
        achieved = flops / min(times[name]) / 1e9
        if args.no_memory:
            peak = float("nan")
        elif device.type == "cuda":
            peak = cuda_step_peak_mib(model, sample, timestep, context, EXTRA[name], device)
        else:
            peak = cpu_step_peak_mib(name, args)
        figures = {"params_m": params / 1e6, "gflops": flops / 1e9, "median_s": statistics.median(times[name]),
                   "min_s": min(times[name]), "gflop_per_s": achieved, "fraction_of_matmul": achieved / matmul,
                   "peak_mib": peak}
        if args.generation_steps:
            figures["generation_s"] = generation_seconds(model, name, sample, context, device, args)
        report["models"][name] = figures
        print(f"{name:<32} {params / 1e6:>10.2f} {flops / 1e9:>8.1f} {figures['median_s']:>9.3f} "
              f"{figures['min_s']:>7.3f} {achieved:>8.1f} {achieved / matmul:>9.0%} {peak:>9.0f} "
              + (f"{figures['generation_s']:>12.2f}" if args.generation_steps else ""))
    ours, theirs = (report["models"][name]["median_s"] for name in models)
    report["time_ratio_ours_over_theirs"] = ours / theirs
    print(f"time ratio MagicVideoUNet3D / UNet3DConditionModel: {ours / theirs:.2f}x "
          f"(UNet3DConditionModel / MagicVideoUNet3D: {theirs / ours:.2f}x)")
    if args.json:
        print(json.dumps(report))
    return report


# -- torch.compile ----------------------------------------------------------------------------------
def compile_step(args, device: torch.device, dtype: torch.dtype) -> None:
    import torch._inductor.config as inductor_config

    inductor_config.freezing = not args.no_freezing
    inductor_config.cpp.threads = torch.get_num_threads()
    model = prepare(build(args.frames, args.widths, [OURS])[OURS], device, dtype, args)
    sample, timestep, context = inputs(args, model.config.cross_attention_dim, device, dtype)
    with torch.no_grad():
        compiled = torch.compile(model)
        step = lambda unet: unet(sample, timestep, context, **EXTRA[OURS]).sample  # noqa: E731
        reference = step(model)  # the eager warm-up
        print("eager steps", [round(_timed(lambda: step(model), device), 3) for _ in range(2)], flush=True)
        first = _timed(lambda: step(compiled), device)
        difference = (step(compiled) - reference).abs().max().item()
        print("compile + first call", round(first, 1), "s; max |compiled - eager|", difference,
              "of values up to", reference.abs().max().item(), flush=True)
        for _ in range(args.repeats):
            eager, fast = _timed(lambda: step(model), device), _timed(lambda: step(compiled), device)
            print("eager", round(eager, 3), "compiled", round(fast, 3), flush=True)


# -- torch.profiler ---------------------------------------------------------------------------------
RESBLOCK = "res-block (group norms, convs, adaptors inside)"
ADAPTORS = "frame-wise adaptors"


def profile_step(args, device: torch.device, dtype: torch.dtype) -> None:
    from diffusers.models.attention import BasicTransformerBlock
    from torch.profiler import ProfilerActivity, profile, record_function

    import magicvideo.models.unet_3d_blocks as blocks
    from magicvideo.models.adaptor import FrameAdaptor
    from magicvideo.models.temporal_attention import DirectedTemporalAttention

    kinds = {"spatial transformer block (self-attn, cross-attn, FF)": BasicTransformerBlock,
             "directed temporal attention": DirectedTemporalAttention, ADAPTORS: FrameAdaptor}
    model = prepare(build(args.frames, args.widths, [OURS])[OURS], device, dtype, args)
    resnet = blocks.resnet  # res-blocks are run by the block walk's function, not by module calls

    def timed_resnet(*a, **kw):
        with record_function(RESBLOCK):
            return resnet(*a, **kw)

    blocks.resnet = timed_resnet
    for module in model.modules():
        for name, kind in kinds.items():  # adaptors nest inside res-blocks: reported separately as well
            if isinstance(module, kind):
                ranges = []
                module.register_forward_pre_hook(lambda m, a, name=name, ranges=ranges: ranges.append(
                    record_function(name).__enter__()))
                module.register_forward_hook(lambda m, a, o, ranges=ranges: ranges.pop().__exit__(None, None, None))
    sample, timestep, context = inputs(args, model.config.cross_attention_dim, device, dtype)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch.no_grad():
        model(sample, timestep, context, **EXTRA[OURS])  # warm-up
        synchronize(device)
        start = time.perf_counter()
        with profile(activities=activities) as prof:
            model(sample, timestep, context, **EXTRA[OURS])
            synchronize(device)
        total = time.perf_counter() - start
    blocks.resnet = resnet
    events = prof.key_averages()
    by_kind = defaultdict(float)
    for event in events:
        if event.key in kinds or event.key == RESBLOCK:
            by_kind[event.key] += event.cpu_time_total / 1e6
    print(f"MagicVideoUNet3D, {args.widths} widths, {args.batch} x 4 x {args.frames} x {args.size} x {args.size}, "
          f"{args.dtype}, {torch.get_num_threads()} threads: one step {total:.2f} s under the profiler")
    print(f"{'module kind':<56} {'s':>7} {'share':>6}")
    for name, seconds in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        print(f"{name:<56} {seconds:>7.2f} {seconds / total:>6.1%}")
    rest = total - sum(seconds for name, seconds in by_kind.items() if name != ADAPTORS)
    print(f"{'the rest (conv_in/out, down/upsampling, embeddings, rearranges)':<56} {rest:>7.2f} {rest / total:>6.1%}")
    print("(frame-wise adaptors are inside the res-blocks' and transformers' times)\n")
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.ops))


def main(argv=None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--compile", action="store_true", help="MagicVideoUNet3D eager vs torch.compile")
    mode.add_argument("--profile", action="store_true", help="MagicVideoUNet3D's step by module kind and op")
    parser.add_argument("--widths", choices=("two-level", *FOUR_LEVEL), default="two-level")
    parser.add_argument("--frames", type=int, default=16, help="frames per clip (default: 16)")
    parser.add_argument("--size", type=int, default=32, help="latent height and width (default: 32)")
    parser.add_argument("--batch", type=int, default=1, help="clips per step (default: 1; 2: a guidance batch)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="fp32")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats after one warm-up (default: 5)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--generation-steps", type=int, default=0, help="also time a whole generation of N steps")
    parser.add_argument("--channels-last", action="store_true", help="channels-last memory format")
    parser.add_argument("--slicing", action="store_true", help="attention slicing of the spatial attention")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    parser.add_argument("--json", action="store_true", help="also print the comparison as one JSON line")
    parser.add_argument("--no-freezing", action="store_true", help="--compile without inductor's weight freezing")
    parser.add_argument("--ops", type=int, default=15, help="--profile: rows of the by-op table")
    parser.add_argument("--peak-of", help=argparse.SUPPRESS)  # the child process of cpu_step_peak_mib
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.peak_of:
        return _peak_of(args)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU here")
    if args.compile:
        return compile_step(args, device, dtype)
    if args.profile:
        return profile_step(args, device, dtype)
    return compare(args, device, dtype)


if __name__ == "__main__":
    main()
