"""Staggered sampling (`frame_lag`, `sampling.denoise_staggered`) of a keyframe model on a fixed subset
of the canonical jobs, one line of metrics per lag (lag 0 here is synchronous DDIM, the same
update as the lags > 0; the pipeline's own lag-0 sampler may be another scheduler).

    PYTHONPATH=src python scripts/stagger_test.py [--model DIR] --lag 0 1 2 4 --limit 24

The numbers of docs/coherence/staggered-sampling-*-24.jsonl came from this script's first version
(commit 5605e02), whose own DDIM grid ended at t = 40 instead of diffusers' 39.
"""

import argparse
import json

import torch

from magicvideo.digits.evaluate import evaluate_generator, evaluation_jobs, pipeline_generator
from magicvideo.loading import load_pipeline

KEYS = ("digit_accuracy", "direction_accuracy", "displacement_rel_error", "coherence_first_last", "coherence_consecutive")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="pipeline folder (default: the bundled model)")
    parser.add_argument("--lag", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--limit", type=int, default=24)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, default=7.5)
    args = parser.parse_args()
    pipe = load_pipeline(args.model, device="cpu", progress_bar=False)
    pipe.set_scheduler("ddim")
    jobs = evaluation_jobs(limit=args.limit)
    for lag in args.lag:
        generate = pipeline_generator(pipe, args.steps, args.guidance, frame_lag=lag)
        metrics = evaluate_generator(generate, jobs, progress=False)
        print(json.dumps({"lag": lag, **{k: metrics[k] for k in KEYS}}), flush=True)


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
