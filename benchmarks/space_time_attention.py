"""Directed space-time attention: one call with a block-causal (L, L) mask against the frame-by-frame
calls `temporal_attention(..., tokens_per_frame=h * w)` makes (same result, tested in
tests/test_unet_3d.py), forward + backward, on this machine (CPU, fp32).

    python benchmarks/space_time_attention.py --threads 2 --repeats 5

Default shape: the digits model's first level (batch 8, 4 heads of 8 channels, 16 frames of 8 x 8
tokens), the level where `temporal_attention_scope=space_time` costs most. The two are timed
alternately (the machine may be shared) and the medians are reported.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=8)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--tokens-per-frame", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from magicvideo.models.temporal_attention import temporal_attention

    length = args.frames * args.tokens_per_frame
    q, k, v = (torch.randn(args.batch, args.heads, length, args.head_dim, requires_grad=True) for _ in range(3))
    frame = torch.arange(length) // args.tokens_per_frame
    mask = frame[None] <= frame[:, None]
    variants = {
        "one call, (L, L) mask": lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask),
        "frame by frame": lambda: temporal_attention(q, k, v, "directed", args.tokens_per_frame),
    }
    times = {name: [] for name in variants}
    for repeat in range(args.repeats + 1):  # the first round warms up
        for name, attend in variants.items():
            start = time.perf_counter()
            attend().square().sum().backward()
            if repeat:
                times[name].append(time.perf_counter() - start)
    base = statistics.median(times["one call, (L, L) mask"])
    print(f"{args.batch} x {args.heads} heads x {length} tokens ({args.frames} frames), d = {args.head_dim}, "
          f"{args.threads} threads, forward + backward, median of {args.repeats}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:24s} {median * 1000:8.1f} ms   {median / base:5.2f}x the masked call")


if __name__ == "__main__":
    main()
