"""Rank keyframe models and samplers in minutes: rollouts and teacher-forced continuations.

For every model (a keyframe pipeline folder) and every sampler (chunk size; 16 = the synchronous
sampler), the model's own rollout of a fixed subset of the canonical eval-digits jobs is scored
(coherence of frame 15 to frame 0, consecutive frames, digit and direction accuracy, sharpness). Then
teacher-forced continuations: held-out real clips (test-split digits, never trained on) are encoded and
their first k frames given as context; the model makes the rest. High coherence with k given and low
coherence in the rollout means the model drifts on its own output; low coherence with k given means it
cannot copy a moving digit (issue #41's diagnosis).

    python scripts/causal_diagnostics.py --model src/magicvideo/weights/digits --model runs/x/final \\
        --samplers 16 4 4@20 1 --given 1 4 --jobs 24 --json runs/diagnostics.json
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from magicvideo.digits.evaluate import (evaluate_generator, evaluation_jobs, pipeline_generator,
                                        real_clip_generator)
from magicvideo.pipelines.keyframes import load_pipeline
from magicvideo.vae import encode_video


def summary(metrics: dict, seconds: float, clips: int, bounce: bool = False) -> dict:
    return {
        "coherence_first_last": round(metrics["coherence_first_last"], 4),
        "consecutive": round(metrics["coherence_consecutive"], 4),
        "per_fps_first_last": {fps: round(m["coherence_first_last"], 4) for fps, m in metrics["per_fps"].items()},
        "displacement_rel_error": round(metrics["displacement_rel_error"], 4),
        "digit_accuracy": metrics["digit_accuracy"],
        # clips of bouncing digits: the direction of the first frames' motion (the classifier's reads the whole clip)
        "direction_accuracy": metrics["motion_direction_accuracy"] if bounce else metrics["direction_accuracy"],
        "sharpness": round(metrics["sharpness"], 3),
        "seconds_per_clip": round(seconds / clips, 3),
    }


def scored(generate, jobs, batch_size, bounce=False):
    started = time.perf_counter()
    metrics = evaluate_generator(generate, jobs, batch_size=batch_size, progress=False, bounce=bounce)
    return summary(metrics, time.perf_counter() - started, len(jobs), bounce)


def continuation_generator(pipe, given: int, steps: int, guidance: float, chunk_size: int | None):
    """Real held-out clips, their first `given` frames encoded and given; the model makes the rest."""
    real = real_clip_generator("test")

    def generate(prompts, fps, seed):
        clips = torch.from_numpy(real(prompts, fps, seed)).float()  # (B, F, H, W, 3) in [0, 1]
        video = clips.permute(0, 4, 1, 2, 3) * 2 - 1
        with torch.no_grad():
            latents = encode_video(pipe.vae, video[:, :, :given])
        return pipe(prompts, fps=fps, num_inference_steps=steps, guidance_scale=guidance, chunk_size=chunk_size,
                    generator=torch.Generator().manual_seed(seed), context_latents=latents, output_type="np").frames

    return generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, help="keyframe pipeline folder (repeatable)")
    parser.add_argument("--samplers", nargs="+", default=["16", "4", "1"],
                        help="samplers of the rollouts: CHUNK[/LAG][@T]: chunk size, the steps each chunk starts after the "
                             "one before (default: when it is finished), finished frames shown at timestep T")
    parser.add_argument("--given", type=int, nargs="*", default=[1, 4], help="frames given in the continuations")
    parser.add_argument("--given-chunk-size", type=int, default=None,
                        help="sampler of the continuations (default: the model's own)")
    parser.add_argument("--jobs", type=int, default=24, help="canonical eval-digits jobs, a fixed subset (0: all 240)")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--bounce", action="store_true",
                        help="bouncing digits (a model trained on `digits data --bounce`): the prompts say so, the "
                             "real clips bounce, and the direction is that of the first frames' motion")
    parser.add_argument("--json", help="write the table here as JSON")
    args = parser.parse_args()
    jobs = evaluation_jobs(limit=args.jobs or None, bounce=args.bounce)
    table = {}
    for model in args.model:
        pipe = load_pipeline(model, progress_bar=False)
        rows = table[model] = {}
        for sampler in args.samplers:
            schedule, _, t = sampler.partition("@")
            chunk, _, lag = schedule.partition("/")
            generate = pipeline_generator(pipe, args.steps, args.guidance, "video", chunk_size=int(chunk),
                                          frame_lag=int(lag) if lag else None, context_timestep=int(t or 0))
            rows[f"rollout {sampler}"] = scored(generate, jobs, args.batch_size, args.bounce)
            print(model, f"rollout {sampler}", rows[f"rollout {sampler}"], flush=True)
        for given in args.given:
            generate = continuation_generator(pipe, given, args.steps, args.guidance, args.given_chunk_size)
            rows[f"given {given}"] = scored(generate, jobs, args.batch_size, args.bounce)
            print(model, f"given {given}", rows[f"given {given}"], flush=True)
    real = scored(real_clip_generator("test"), jobs, args.batch_size, args.bounce)
    table["real clips"] = {"ceiling": real}
    print("real clips", real)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"jobs": len(jobs), "bounce": args.bounce, "steps": args.steps, "guidance": args.guidance,
                       "table": table}, f, indent=2)


if __name__ == "__main__":
    main()
