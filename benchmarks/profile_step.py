"""Where one denoising step of MagicVideoUNet3D spends its time, by module kind and by op
(torch.profiler), at SD 1.5 widths by default: 16 frames of 32x32 latents, 77 text tokens, fp32.

    python benchmarks/profile_step.py [--widths sd15|small|tiny] [--frames 16] [--size 32]

Module kinds are timed with `record_function` ranges opened by forward hooks (inclusive of their
children, so the kinds are chosen not to nest: a spatial transformer's time is split into its
spatial attention blocks, its temporal attention and the rest). Also prints the FLOP count
(torch's counter) so the achieved GFLOP/s of each kind can be read against the whole.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import torch
from diffusers.models.attention import BasicTransformerBlock
from torch.profiler import ProfilerActivity, profile, record_function

from gpu import TEXT, build  # noqa: E402  (benchmarks/gpu.py: the same models at the same widths)
import magicvideo.models.unet_3d_blocks as blocks
from magicvideo.models.adaptor import FrameAdaptor
from magicvideo.models.temporal_attention import DirectedTemporalAttention

KINDS = {
    "spatial transformer block (self-attn, cross-attn, FF)": BasicTransformerBlock,
    "directed temporal attention": DirectedTemporalAttention,
}
RESBLOCK = "res-block (group norms, convs, adaptors inside)"


def add_ranges(model: torch.nn.Module) -> None:
    resnet = blocks.resnet  # res-blocks are run by the block walk's function, not by module calls

    def timed_resnet(*args, **kwargs):
        with record_function(RESBLOCK):
            return resnet(*args, **kwargs)

    blocks.resnet = timed_resnet
    adaptor_owner = set()
    for module in model.modules():
        for name, kind in KINDS.items():
            if isinstance(module, kind):
                ranges = []
                module.register_forward_pre_hook(lambda m, a, name=name, ranges=ranges: ranges.append(
                    record_function(name).__enter__()))
                module.register_forward_hook(lambda m, a, o, ranges=ranges: ranges.pop().__exit__(None, None, None))
        if isinstance(module, FrameAdaptor):
            adaptor_owner.add(module)
    for adaptor in adaptor_owner:  # nested inside res-blocks: reported separately as well
        ranges = []
        adaptor.register_forward_pre_hook(lambda m, a, ranges=ranges: ranges.append(record_function("frame-wise adaptors").__enter__()))
        adaptor.register_forward_hook(lambda m, a, o, ranges=ranges: ranges.pop().__exit__(None, None, None))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--widths", default="sd15", choices=("sd15", "small", "tiny"))
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--ops", type=int, default=15, help="rows of the by-op table")
    args = parser.parse_args()
    model = build(args.widths, args.frames)["MagicVideoUNet3D"]
    add_ranges(model)
    sample = torch.randn(1, 4, args.frames, args.size, args.size)
    context = torch.randn(1, 77, TEXT[args.widths])
    with torch.no_grad():
        model(sample, 500, context, fps=8.0)  # warm-up
        start = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            model(sample, 500, context, fps=8.0)
        total = time.perf_counter() - start
    events = prof.key_averages()
    by_kind = defaultdict(float)
    for event in events:
        if event.key in KINDS or event.key in (RESBLOCK, "frame-wise adaptors"):
            by_kind[event.key] += event.cpu_time_total / 1e6
    print(f"MagicVideoUNet3D, {args.widths} widths, 1 x 4 x {args.frames} x {args.size} x {args.size}, fp32, "
          f"{torch.get_num_threads()} threads: one step {total:.2f} s under the profiler")
    print(f"{'module kind':<56} {'s':>7} {'share':>6}")
    for name, seconds in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        print(f"{name:<56} {seconds:>7.2f} {seconds / total:>6.1%}")
    rest = total - sum(seconds for name, seconds in by_kind.items() if name != "frame-wise adaptors")
    print(f"{'the rest (conv_in/out, down/upsampling, embeddings, rearranges)':<56} {rest:>7.2f} {rest / total:>6.1%}")
    print("(frame-wise adaptors are inside the res-blocks' and transformers' times)\n")
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.ops))


if __name__ == "__main__":
    main()
