"""Speed of the x4 super-resolution stage on this machine: one 64x64 frame and a 46-frame clip
(the cascade's 46 frames) to 256x256, for a few step counts and batch sizes.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/upscale_speed.py [--model DIR] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from magicvideo.digits.hires import test_frames
from magicvideo.pipelines.upscale import load_upscale_pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=None, help="SR pipeline folder (default: the bundled digits SR model)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--frames", type=int, default=46)
    parser.add_argument("--steps", type=int, nargs="+", default=[4, 2, 8])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    pipe = load_upscale_pipeline(args.model)
    pipe.set_progress_bar_config(disable=True)
    load_s = time.perf_counter() - started
    _, lr, _ = test_frames(args.frames, seed=7, num_clips=1, stride=1)  # 46 native frames of motion
    clip = (np.round(lr[0] * 255)).astype(np.uint8)  # (F, 64, 64): a moving held-out digit
    pipe(clip[:1], num_inference_steps=1)  # warm-up
    rows = []
    for steps in args.steps:
        for batch_size in args.batch_sizes:
            t = time.perf_counter()
            pipe(clip[:1], num_inference_steps=steps, generator=torch.Generator().manual_seed(0))
            one = time.perf_counter() - t
            t = time.perf_counter()
            out = pipe(clip, num_inference_steps=steps, generator=torch.Generator().manual_seed(0), batch_size=batch_size).frames
            whole = time.perf_counter() - t
            assert out.shape == (args.frames, 256, 256, 3)
            rows.append({"steps": steps, "batch_size": batch_size, "one_frame_s": round(one, 3),
                         "clip_s": round(whole, 2), "per_frame_s": round(whole / args.frames, 3)})
            print(f"steps {steps} batch {batch_size}: 1 frame {one:.2f} s; {args.frames} frames {whole:.1f} s "
                  f"({whole / args.frames:.2f} s/frame)", flush=True)
    print(json.dumps({"threads": args.threads, "load_s": round(load_s, 2), "runs": rows}, indent=2))


if __name__ == "__main__":
    main()
