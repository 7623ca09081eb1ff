"""Long clips: keyframe generation of 64 frames against 16, time and peak memory (targets: <= 4.4x, <= 1.2x).

The time target is linear growth with 10% to spare (1.1x the ratio of the lengths), the memory target flat.

A clip longer than the keyframe model's window (16) is made by causal extension, window after window
(`MagicVideoPipeline`: each window holds the last `context_frames` finished frames and makes the next
ones), decoded and written to disk as it is made (`MagicVideoCascadePipeline(..., frame_sink=)` into a
`video_io.VideoWriter`), so its time should grow linearly with the length and its memory not at all.
Each length runs in a fresh process: the keyframe stage of the model (default: the bundled digits
model) is loaded, then one `generate --keyframes-only`-like run is timed (imports and loading excluded;
wall time, and the process's CPU time, which other work on a shared machine disturbs less) and the
process's peak resident set is read (Linux VmHWM, whole process: libraries and weights included).
Printed: every run and the ratios of the long runs to the baselines measured in the same invocation
(with `--repeats N`, baseline and long runs alternate N times and the medians are compared, which
steadies the figures on a machine shared with other work).

    PYTHONPATH=src python benchmarks/long_video.py [--frames 16 64] [--steps 25] [--threads 1] [--repeats 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

PROMPT = "the digit 7 moves to the right"


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def measure(args) -> dict:
    """One run in this process (the child of `main`)."""
    import torch

    from magicvideo.loading import BUNDLED_CASCADE
    from magicvideo.pipelines.cascade import MagicVideoCascadePipeline
    from magicvideo.video_io import VideoWriter

    if args.threads:
        torch.set_num_threads(args.threads)
    cascade = MagicVideoCascadePipeline.from_pretrained(args.model or BUNDLED_CASCADE, "cpu", progress_bar=False,
                                                        stages=("keyframes",))
    cascade.set_progress_bar_config(disable=True)
    loaded = _status_mib("VmRSS")
    with tempfile.TemporaryDirectory() as folder:
        start, cpu = time.perf_counter(), time.process_time()
        with VideoWriter(Path(folder) / "clip.mp4", args.fps) as writer:
            cascade(PROMPT, num_frames=args.one, fps=args.fps, num_inference_steps=args.steps, seed=0,
                    interpolate=False, frame_sink=writer.write)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    assert writer.frames == args.one, writer.frames
    return {"frames": args.one, "seconds": seconds, "cpu_seconds": cpu_seconds, "loaded_mib": loaded,
            "peak_mib": _status_mib("VmHWM")}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="a cascade or keyframe pipeline folder (default: the bundled digits model)")
    parser.add_argument("--frames", type=int, nargs=2, default=[16, 64], metavar=("BASE", "LONG"),
                        help="keyframes of the baseline and of the long clip (default: 16 64)")
    parser.add_argument("--steps", type=int, default=25, help="denoising steps (default: 25)")
    parser.add_argument("--fps", type=float, default=8, help="keyframe rate (default: 8)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=1, help="baseline and long runs, alternating; medians compared "
                        "(default: 1)")
    parser.add_argument("--json", action="store_true", help="also print the report as JSON")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # the child process's length
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args)))
        return {}
    common = ["--steps", str(args.steps), "--fps", str(args.fps)] + (["--model", args.model] if args.model else []) + (
        ["--threads", str(args.threads)] if args.threads else [])
    rows = []
    for _ in range(args.repeats):
        for frames in args.frames:
            out = subprocess.run([sys.executable, __file__, "--one", str(frames), *common], check=True,
                                 capture_output=True, text=True).stdout
            rows.append(json.loads(out.splitlines()[-1]))
    median = lambda frames, key: statistics.median(r[key] for r in rows if r["frames"] == frames)  # noqa: E731
    base, long = args.frames
    report = {"runs": rows, "time_ratio": median(long, "seconds") / median(base, "seconds"),
              "cpu_time_ratio": median(long, "cpu_seconds") / median(base, "cpu_seconds"),
              "peak_rss_ratio": median(long, "peak_mib") / median(base, "peak_mib"), "frames_ratio": long / base}
    print(f"keyframes only, CPU, {args.steps} steps, decoded and written as made; each length in a fresh process")
    print(f"{'frames':>6} {'seconds':>8} {'CPU s':>8} {'CPU s/frame':>12} {'loaded MiB':>11} {'peak MiB':>9}")
    for r in rows:
        print(f"{r['frames']:>6} {r['seconds']:>8.2f} {r['cpu_seconds']:>8.2f} {r['cpu_seconds'] / r['frames']:>12.3f} "
              f"{r['loaded_mib']:>11.0f} {r['peak_mib']:>9.0f}")
    print(f"{long} vs {base} frames ({report['frames_ratio']:g}x, medians of {args.repeats}): time {report['time_ratio']:.2f}x, "
          f"CPU time {report['cpu_time_ratio']:.2f}x (target <= {1.1 * report['frames_ratio']:g}x), peak resident set "
          f"{report['peak_rss_ratio']:.3f}x (target <= 1.2x)")
    if args.json:
        print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
