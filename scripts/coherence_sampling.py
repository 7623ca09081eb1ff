"""Sampling-only experiments on the bundled model's coherence (docs/digits-model.md): initial noise
shared across frames, and the guidance scale, on a fixed subset of the canonical jobs.

    PYTHONPATH=src python scripts/coherence_sampling.py --shared 0 0.5 0.8 --guidance 7.5 [--limit 24]
    PYTHONPATH=src python scripts/coherence_sampling.py --shared 0 --guidance 3 5 10

eps_f = sqrt(a) * eps_shared + sqrt(1 - a) * eps_f per frame f (a = 0: the default independent noise;
the pipeline's `noise_sharing`, set here on a model trained without it).
"""

import argparse
import json

import torch

from magicvideo.digits.evaluate import evaluate_generator, evaluation_jobs
from magicvideo.loading import load_pipeline

KEYS = ("digit_accuracy", "direction_accuracy", "displacement_rel_error", "coherence_first_last", "coherence_consecutive")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="pipeline folder (default: the bundled model)")
    parser.add_argument("--shared", type=float, nargs="+", default=[0.0])
    parser.add_argument("--guidance", type=float, nargs="+", default=[7.5])
    parser.add_argument("--limit", type=int, default=24)
    parser.add_argument("--steps", type=int, default=25)
    args = parser.parse_args()
    pipe = load_pipeline(args.model, device="cpu", progress_bar=False)
    jobs = evaluation_jobs(limit=args.limit)
    for a in args.shared:
        pipe.register_to_config(noise_sharing=a)  # the pipeline's own initial noise mixing
        for guidance in args.guidance:
            def generate(prompts, fps, seed):
                return pipe(prompts, fps=fps, num_inference_steps=args.steps, guidance_scale=guidance,
                            generator=torch.Generator().manual_seed(seed)).frames

            metrics = evaluate_generator(generate, jobs, progress=False)
            print(json.dumps({"shared": a, "guidance": guidance, **{k: metrics[k] for k in KEYS}}), flush=True)


if __name__ == "__main__":
    main()
