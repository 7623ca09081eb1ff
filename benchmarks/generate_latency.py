"""Wall time of the `magicvideo generate` command with the bundled cascade, against its peer: a Python
that only imports what the command imports (torch, diffusers, transformers, the pipelines and the
CLI). The difference is our own work: loading the weights, encoding the prompt, the denoising steps
of every stage, decoding and writing the mp4. Each stage setting is timed: --keyframes-only (goal
4 s), the default cascade (keyframes, interpolation, VideoVAE; goal 10 s) and --upscale 4 (goal
60 s). All are fresh processes, run alternately, median of --repeats.

    PYTHONPATH=src python benchmarks/generate_latency.py [--repeats 3] [--steps 25 15] [--model DIR]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROMPT = "the digit 7 moves to the right"
# ... as the command does them, with the garbage collector paused (magicvideo.cli.loading_without_gc),
# and exits as the `magicvideo` executable does, with the garbage collector frozen (magicvideo.cli.run)
IMPORTS = ("import gc; gc.disable(); import magicvideo.pipelines.cascade, magicvideo.pipelines.keyframes, "
           "magicvideo.loading, magicvideo.generation, magicvideo.video_io, magicvideo.cli.generate; gc.freeze()")
STAGES = {"keyframes only": ["--keyframes-only"], "cascade": [], "cascade + upscale x4": ["--upscale", "4"]}


def wall(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, nargs="+", default=[25], help="denoising steps to time (--steps)")
    parser.add_argument("--model", help="a cascade or pipeline folder (default: the bundled cascade)")
    parser.add_argument("--stages", nargs="+", choices=tuple(STAGES), default=list(STAGES), help="settings to time")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        commands = {"imports only": [sys.executable, "-c", IMPORTS]}
        for stage in args.stages:
            for steps in args.steps:
                commands[f"{stage}, {steps} steps"] = [
                    sys.executable, "-m", "magicvideo", "generate", PROMPT, "--out", str(Path(tmp) / "out.mp4"),
                    "--steps", str(steps), *STAGES[stage], *(["--model", args.model] if args.model else [])]
        wall(commands["imports only"])  # warm the file cache
        times = {name: [] for name in commands}
        for _ in range(args.repeats):
            for name, command in commands.items():
                times[name].append(wall(command))
    peer = statistics.median(times["imports only"])
    print(f"{'command':<34} {'median s':>9} {'x imports':>10} {'minus imports s':>16}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<34} {median:>9.2f} {median / peer:>10.2f} {median - peer:>16.2f}")


if __name__ == "__main__":
    main()
