"""Cost of causal sampling against the synchronous sampler, same model, steps and guidance, one run.

Times the keyframe pipeline (latents out, no decoding) for each sampler (chunk 16 = every frame at once,
the synchronous sampler; smaller chunks are made one after another beside the cached finished frames, or
overlapping with a lag), interleaved over repeats, and prints each one's median time and its ratio to
the first sampler's (the synchronous one by default).
The issue #41 budget: the shipped sampler at most 1.2x the synchronous one.

    python benchmarks/causal_sampling.py --model src/magicvideo/weights/digits --samplers 16 8 4 4/12 2 1
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from magicvideo.pipelines.keyframes import load_pipeline


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="keyframe pipeline folder (default: the bundled model)")
    parser.add_argument("--samplers", nargs="+", default=["16", "8", "4", "4/12", "2", "1"],
                        help="CHUNK (each chunk when the one before is finished) or CHUNK/LAG (each chunk LAG steps "
                             "after the one before); the first is the baseline of the ratios")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = load_pipeline(args.model, progress_bar=False)
    frames = pipe.unet.config.num_frames
    samplers = {}
    for spec in args.samplers:
        chunk, _, lag = spec.partition("/")
        samplers[f"chunk {chunk}" + (f" lag {lag}" if lag else "")] = {"chunk_size": int(chunk),
                                                                        "frame_lag": int(lag) if lag else None}

    def run(kwargs):
        started = time.perf_counter()
        pipe("the digit 7 moves to the right", num_frames=frames, num_inference_steps=args.steps,
             guidance_scale=args.guidance, generator=torch.Generator().manual_seed(0), output_type="latent", **kwargs)
        return time.perf_counter() - started

    for kwargs in samplers.values():  # warm-up
        run(kwargs)
    times = {name: [] for name in samplers}
    for _ in range(args.repeats):
        for name, kwargs in samplers.items():
            times[name].append(run(kwargs))
    base = statistics.median(next(iter(times.values())))
    result = {}
    print(f"{args.steps} steps, guidance {args.guidance}, {frames} frames, {torch.get_num_threads()} threads")
    for name, values in times.items():
        median = statistics.median(values)
        calls = pipe.num_sampling_calls(frames, args.steps, **samplers[name])
        ratio = median / base
        result[name] = {"seconds": round(median, 3), "calls": calls, "ratio": round(ratio, 3)}
        print(f"{name:>20}: {median:7.3f} s  {calls:4d} U-Net calls  {ratio:5.2f}x the first")
    return result


if __name__ == "__main__":
    main()
