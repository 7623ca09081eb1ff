"""Teacher-forced continuation on real held-out clips: does a keyframe model keep the digit it is given?

For the canonical evaluation jobs (`evaluation_jobs(limit=N)`), the real held-out clips of those
prompts and fps (`real_clip_generator`) are encoded by the pipeline's VAE. The model then samples
from pure noise (the pipeline's scheduler, `--steps` steps, guidance `--guidance`) with frames
0 .. k-1 held to the real clip's latents (`sampling.KnownFrames`), for each k of `--given` (k = 0:
plain sampling from the same noise). Coherence (`digits.evaluate.coherence`) is measured on the
decoded clips, with the real clips' VAE round trip as the reference (docs/digits-model.md#limits,
docs/experiments.md#where-is-the-shape-lost).

    PYTHONPATH=src python scripts/coherence_diagnostics.py [--model DIR] [--given 0 1] [--limit 24]

Prints one JSON line per setting: clips, coherence to the first frame at the last frame, and
consecutive-frame coherence.
"""

import argparse
import json

import numpy as np
import torch

from magicvideo.digits.evaluate import coherence, evaluation_jobs, real_clip_generator
from magicvideo.pipelines.keyframes import load_pipeline
from magicvideo.sampling import KnownFrames, denoise
from magicvideo.vae import decode_video, encode_video


def to_clips(vae, latents: torch.Tensor) -> np.ndarray:
    return ((decode_video(vae, latents).clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 4, 1).numpy()


def setting(k: int) -> str:
    return "none held (plain sampling)" if k == 0 else "real frame 0 held" if k == 1 else f"real frames 0-{k - 1} held"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="pipeline folder (default: the bundled model)")
    parser.add_argument("--given", type=int, nargs="+", default=[0, 1],
                        help="numbers of leading real frames held (default: 0 1)")
    parser.add_argument("--limit", type=int, default=24, help="evaluation jobs (default: 24)")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, default=7.5)
    args = parser.parse_args()
    pipe = load_pipeline(args.model, device="cpu", progress_bar=False)
    frames = pipe.unet.config.num_frames
    if any(not 0 <= k < frames for k in args.given):
        parser.error(f"--given: each must be between 0 and {frames - 1}")
    jobs = evaluation_jobs(limit=args.limit)
    real = real_clip_generator()
    results: dict[tuple, list] = {}

    def record(key, clips):
        c = coherence(clips)
        results.setdefault(key, []).append((len(clips), c["to_first_last"], c["consecutive"]))

    for fps in sorted({j["fps"] for j in jobs}):
        prompts = [j["prompt"] for j in jobs if j["fps"] == fps]
        video = torch.from_numpy(real(prompts, fps, 0)).permute(0, 4, 1, 2, 3).float() * 2 - 1
        with torch.no_grad():
            latents = encode_video(pipe.vae, video)
            record(("real", "vae round trip"), to_clips(pipe.vae, latents))
            noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(0))
            embeds, negative = pipe.encode_prompt(prompts, "cpu", 1, True)
            context = torch.cat([negative, embeds])
            fps_cfg = torch.full((len(context),), fps)

            def model(x, t):
                return pipe.unet(x, t, context, fps=fps_cfg).sample

            for k in args.given:
                pipe.scheduler.set_timesteps(args.steps)
                mask = torch.zeros(1, 1, latents.shape[2], 1, 1)
                mask[:, :, :k] = 1
                known = KnownFrames(latents, mask) if k else None
                x = denoise(model, pipe.scheduler, noise.clone(), guidance_scale=args.guidance, known=known,
                            generator=torch.Generator().manual_seed(1))
                record(("known", setting(k)), to_clips(pipe.vae, x))
    for (part, name), rows in results.items():
        n = sum(r[0] for r in rows)
        first, consecutive = (sum(r[0] * r[i] for r in rows) / n for i in (1, 2))
        print(json.dumps({"part": part, "setting": name, "clips": n, "coherence_first_last": round(first, 4),
                          "coherence_consecutive": round(consecutive, 4)}), flush=True)


if __name__ == "__main__":
    main()
