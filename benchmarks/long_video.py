"""Long clips: keyframe generation of 64 frames against 16, time and peak memory (targets: <= 4.4x, <= 1.2x).

A clip longer than the keyframe model's window (16) is made by causal extension, window after window
(`MagicVideoPipeline`: each window holds the last `context_frames` finished frames and makes the next
ones), decoded and written to disk as it is made (`MagicVideoCascadePipeline(..., frame_sink=)` into a
`video_io.VideoWriter`), so its time should grow linearly with the length and its memory not at all.
Each length runs in a fresh process: the keyframe stage of the model (default: the bundled digits
model) is loaded, then one `generate --keyframes-only`-like run is timed (imports and loading excluded)
and the process's peak resident set is read (Linux VmHWM, whole process: libraries and weights
included). Printed: both runs and the ratios of the long run to the baseline measured in the same run.

    PYTHONPATH=src python benchmarks/long_video.py [--frames 16 64] [--steps 25] [--threads 1] [--json]
"""

from __future__ import annotations

import argparse
import json
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
        start = time.perf_counter()
        with VideoWriter(Path(folder) / "clip.mp4", args.fps) as writer:
            cascade(PROMPT, num_frames=args.one, fps=args.fps, num_inference_steps=args.steps, seed=0,
                    interpolate=False, frame_sink=writer.write)
        seconds = time.perf_counter() - start
    assert writer.frames == args.one, writer.frames
    return {"frames": args.one, "seconds": seconds, "loaded_mib": loaded, "peak_mib": _status_mib("VmHWM")}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="a cascade or keyframe pipeline folder (default: the bundled digits model)")
    parser.add_argument("--frames", type=int, nargs=2, default=[16, 64], metavar=("BASE", "LONG"),
                        help="keyframes of the baseline and of the long clip (default: 16 64)")
    parser.add_argument("--steps", type=int, default=25, help="denoising steps (default: 25)")
    parser.add_argument("--fps", type=float, default=8, help="keyframe rate (default: 8)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--json", action="store_true", help="also print the report as JSON")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # the child process's length
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args)))
        return {}
    common = ["--steps", str(args.steps), "--fps", str(args.fps)] + (["--model", args.model] if args.model else []) + (
        ["--threads", str(args.threads)] if args.threads else [])
    rows = []
    for frames in args.frames:
        out = subprocess.run([sys.executable, __file__, "--one", str(frames), *common], check=True, capture_output=True,
                             text=True).stdout
        rows.append(json.loads(out.splitlines()[-1]))
    base, long = rows
    report = {"runs": rows, "time_ratio": long["seconds"] / base["seconds"],
              "peak_rss_ratio": long["peak_mib"] / base["peak_mib"], "frames_ratio": long["frames"] / base["frames"]}
    print(f"keyframes only, CPU, {args.steps} steps, decoded and written as made; each length in a fresh process")
    print(f"{'frames':>6} {'seconds':>8} {'s/frame':>8} {'loaded MiB':>11} {'peak MiB':>9}")
    for r in rows:
        print(f"{r['frames']:>6} {r['seconds']:>8.2f} {r['seconds'] / r['frames']:>8.3f} {r['loaded_mib']:>11.0f} "
              f"{r['peak_mib']:>9.0f}")
    print(f"{long['frames']} vs {base['frames']} frames ({report['frames_ratio']:g}x): time {report['time_ratio']:.2f}x "
          f"(target <= 4.4x), peak resident set {report['peak_rss_ratio']:.3f}x (target <= 1.2x)")
    if args.json:
        print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
