"""Experiment: staggered (pyramid) DDIM sampling of a directed-attention model: frame f runs
`lag * f` steps behind frame 0, so every frame is denoised while the frames before it are cleaner.

    PYTHONPATH=src python scripts/stagger_test.py --lag 0 1 2 4 --limit 24
"""

import argparse
import json

import torch

from magicvideo.digits.evaluate import evaluate_generator, evaluation_jobs
from magicvideo.loading import load_pipeline

KEYS = ("digit_accuracy", "direction_accuracy", "displacement_rel_error", "coherence_first_last", "coherence_consecutive")


@torch.no_grad()
def staggered_ddim(unet, context, fps, latents, alphas_cumprod, steps, lag, guidance):
    b, c, f, h, w = latents.shape
    grid = torch.linspace(999, 0, steps + 1).round().long()[:-1]  # trailing spacing: 999 ... 40
    ab = lambda j: torch.where(j < steps, alphas_cumprod[grid[j.clamp(max=steps - 1)]], torch.ones(()))  # noqa: E731
    t_of = lambda j: torch.where(j < steps, grid[j.clamp(max=steps - 1)], torch.zeros((), dtype=torch.long))  # noqa: E731
    offsets = torch.arange(f) * lag
    x = latents
    for k in range(steps + lag * (f - 1)):
        j, j_next = (k - offsets).clamp(0, steps), (k + 1 - offsets).clamp(0, steps)
        moving = j_next > j
        t = t_of(j)
        inp = torch.cat([x, x]) if guidance > 1 else x
        tt = t.expand(inp.shape[0], f)
        v = unet(inp, tt, context, fps=fps).sample
        if guidance > 1:
            u, cnd = v.chunk(2)
            v = u + guidance * (cnd - u)
        a, a_next = ab(j).view(1, 1, f, 1, 1), ab(j_next).view(1, 1, f, 1, 1)
        x0 = a.sqrt() * x - (1 - a).sqrt() * v
        eps = (1 - a).sqrt() * x + a.sqrt() * v
        new = a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps
        x = torch.where(moving.view(1, 1, f, 1, 1), new, x)
    return x


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model")
    parser.add_argument("--lag", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--limit", type=int, default=24)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, default=7.5)
    args = parser.parse_args()
    pipe = load_pipeline(args.model, device="cpu", progress_bar=False)
    ac = pipe.scheduler.alphas_cumprod.float()
    jobs = evaluation_jobs(limit=args.limit)
    for lag in args.lag:
        @torch.no_grad()
        def generate(prompts, fps, seed):
            pe, ne = pipe.encode_prompt(prompts, "cpu", 1, True)
            context = torch.cat([ne, pe])
            g = torch.Generator().manual_seed(seed)
            lat = pipe.prepare_latents(len(prompts), 16, 64, 64, context.dtype, "cpu", g)
            fps_in = torch.full((len(context),), float(fps))
            lat = staggered_ddim(pipe.unet, context, fps_in, lat, ac, args.steps, lag, args.guidance)
            return pipe.video_processor.postprocess_video(pipe.decode_latents(lat), "np")

        metrics = evaluate_generator(generate, jobs, progress=False)
        print(json.dumps({"lag": lag, **{k: metrics[k] for k in KEYS}}), flush=True)


if __name__ == "__main__":
    main()
