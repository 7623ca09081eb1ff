"""I3D forward time on one 16x224x224 clip on this CPU (fp32), 1 thread vs all threads.

    PYTHONPATH=src python benchmarks/i3d_speed.py
"""

import time

import torch

from magicvideo.evaluation.fvd import preprocess
from magicvideo.evaluation.i3d import I3D


def seconds_per_clip(model, clip, threads, repeats=3):
    torch.set_num_threads(threads)
    with torch.no_grad():
        model(clip)  # warm-up
        start = time.perf_counter()
        for _ in range(repeats):
            model(clip)
    return (time.perf_counter() - start) / repeats


def main():
    model = I3D.from_pretrained()
    frames = torch.randint(0, 256, (1, 16, 256, 256, 3), dtype=torch.uint8)
    start = time.perf_counter()
    clip = preprocess(frames)
    prep = time.perf_counter() - start
    all_threads = torch.get_num_threads()
    one = seconds_per_clip(model, clip, 1)
    many = seconds_per_clip(model, clip, all_threads)
    print(f"preprocess 256->224: {prep:.3f} s/clip")
    print(f"I3D 1 thread:  {one:.3f} s/clip")
    print(f"I3D {all_threads} threads: {many:.3f} s/clip  (speed-up x{one / many:.2f})")


if __name__ == "__main__":
    main()
