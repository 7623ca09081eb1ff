"""Where a keyframe model loses its digit's shape (issue #13, docs/digits-model.md), measured on real
held-out clips of the canonical evaluation jobs (`evaluation_jobs(limit=N)`, rendered by
`real_clip_generator`, encoded by the pipeline's VAE; coherence = `digits.evaluate.coherence`):

- `x0`: the one-step clean estimate x0 = sqrt(a_t) z_t - sqrt(1 - a_t) v of the real clip noised to t
  (independent noise per frame, no guidance): does the denoiser keep the frames' shared digit, at each
  noise level? `--no-temporal` adds the same with every temporal attention's output zeroed.
- `sdedit`: the real clip noised to the t of step k of 25 (DDIM, trailing spacing) and denoised from
  there (guidance 7.5): how much of the shape survives sampling from each noise level.
- `known`: sampling from pure noise (the pipeline's scheduler, 25 steps, guidance 7.5) with frame 0
  held to the real clip's (sampling.KnownFrames): do later frames keep a given first frame's digit?
- `frames`: the digit classifier's accuracy on each frame index shown alone (the frame repeated 16
  times), for generated clips (25 steps, guidance 7.5, seed 0) and the real ones: are some frames bad,
  or do good frames disagree?

    PYTHONPATH=src python scripts/coherence_diagnostics.py [--model DIR] [--parts x0 sdedit known frames] [--limit 24]

Prints one JSON line per measurement: part, setting, coherence to the first frame at the last frame,
consecutive-frame coherence, and for x0 the latent MSE of the estimate (`frames`: accuracy per frame).
"""

import argparse
import json

import numpy as np
import torch
from diffusers import DDIMScheduler

from magicvideo.digits.classifier import classify, load_classifier
from magicvideo.digits.evaluate import coherence, evaluation_jobs, real_clip_generator
from magicvideo.loading import load_pipeline
from magicvideo.models.temporal_attention import DirectedTemporalAttention
from magicvideo.sampling import KnownFrames, denoise
from magicvideo.vae import decode_video, encode_video


def to_clips(vae, latents: torch.Tensor) -> np.ndarray:
    return ((decode_video(vae, latents).clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 4, 1).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="pipeline folder (default: the bundled model)")
    parser.add_argument("--parts", nargs="+", default=["x0", "sdedit", "known"], choices=["x0", "sdedit", "known", "frames"])
    parser.add_argument("--timesteps", type=int, nargs="+", default=[50, 100, 200, 400, 600, 800])
    parser.add_argument("--sdedit-steps", type=int, nargs="+", default=[0, 5, 10, 15, 20])
    parser.add_argument("--no-temporal", action="store_true", help="x0 also with the temporal attention off")
    parser.add_argument("--limit", type=int, default=24)
    args = parser.parse_args()
    pipe = load_pipeline(args.model, device="cpu", progress_bar=False)
    jobs = evaluation_jobs(limit=args.limit)
    real = real_clip_generator()
    results: dict[tuple, list] = {}
    classifier = load_classifier()
    per_frame: dict[str, list] = {"generated": [], "real": []}

    def frame_accuracy(clips: np.ndarray, digits: np.ndarray) -> np.ndarray:
        return np.array([(classify(classifier, np.repeat(clips[:, f : f + 1], 16, axis=1))[0] == digits).sum()
                         for f in range(clips.shape[1])])

    def record(key, clips, mse=float("nan")):
        c = coherence(clips)
        results.setdefault(key, []).append((len(clips), c["to_first_last"], c["consecutive"], mse))

    for fps in sorted({j["fps"] for j in jobs}):
        prompts = [j["prompt"] for j in jobs if j["fps"] == fps]
        real_clips = real(prompts, fps, 0)
        video = torch.from_numpy(real_clips).permute(0, 4, 1, 2, 3).float() * 2 - 1
        if "frames" in args.parts:
            digits = np.array([j["digit"] for j in jobs if j["fps"] == fps])
            generated = pipe(prompts, fps=fps, num_inference_steps=25, guidance_scale=7.5,
                             generator=torch.Generator().manual_seed(0)).frames
            per_frame["generated"].append(frame_accuracy(generated, digits))
            per_frame["real"].append(frame_accuracy(real_clips, digits))
        with torch.no_grad():
            latents = encode_video(pipe.vae, video)
            record(("real", "vae round trip"), to_clips(pipe.vae, latents))
            noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(0))
            embeds, negative = pipe.encode_prompt(prompts, "cpu", 1, True)
            if "x0" in args.parts:
                alphas = pipe.scheduler.alphas_cumprod
                fps_in = torch.full((len(prompts),), fps)
                for temporal in [True, False] if args.no_temporal else [True]:
                    hooks = [] if temporal else [m.register_forward_hook(lambda m, i, o: torch.zeros_like(o))
                                                 for m in pipe.unet.modules() if isinstance(m, DirectedTemporalAttention)]
                    for t in args.timesteps:
                        a, s = alphas[t].sqrt(), (1 - alphas[t]).sqrt()
                        noisy = a * latents + s * noise
                        v = pipe.unet(noisy, torch.tensor(t), embeds, fps=fps_in).sample
                        x0 = a * noisy - s * v
                        key = ("x0" if temporal else "x0, temporal attention off", f"t={t}")
                        record(key, to_clips(pipe.vae, x0), ((x0 - latents) ** 2).mean().item())
                    for hook in hooks:
                        hook.remove()
            context = torch.cat([negative, embeds])
            fps_cfg = torch.full((len(context),), fps)

            def model(x, t):
                return pipe.unet(x, t, context, fps=fps_cfg).sample

            if "sdedit" in args.parts:
                ddim = DDIMScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing")
                for start in args.sdedit_steps:
                    ddim.set_timesteps(25)
                    steps = ddim.timesteps
                    x = ddim.add_noise(latents, noise, steps[start].reshape(1)) if start else noise
                    ddim.timesteps = steps[start:]
                    record(("sdedit", f"from t={int(steps[start])}"), to_clips(pipe.vae, denoise(model, ddim, x, guidance_scale=7.5)))
            if "known" in args.parts:
                for held in (False, True):
                    pipe.scheduler.set_timesteps(25)
                    mask = torch.zeros(1, 1, latents.shape[2], 1, 1)
                    mask[:, :, 0] = 1
                    known = KnownFrames(latents, mask) if held else None
                    x = denoise(model, pipe.scheduler, noise.clone(), guidance_scale=7.5, known=known,
                                generator=torch.Generator().manual_seed(1))
                    record(("known", "real frame 0 held" if held else "none held (plain sampling)"), to_clips(pipe.vae, x))
    for (part, setting), rows in results.items():
        n = sum(r[0] for r in rows)
        mean = [sum(r[0] * r[i] for r in rows) / n for i in (1, 2, 3)]
        print(json.dumps({"part": part, "setting": setting, "clips": n, "coherence_first_last": round(mean[0], 4),
                          "coherence_consecutive": round(mean[1], 4),
                          **({"latent_mse": round(mean[2], 5)} if part.startswith("x0") else {})}), flush=True)
    for name, counts in per_frame.items():
        if counts:
            accuracy = np.sum(counts, axis=0) / len(jobs)
            print(json.dumps({"part": "frames", "setting": name, "clips": len(jobs),
                              "digit_accuracy_per_frame": accuracy.round(3).tolist()}), flush=True)


if __name__ == "__main__":
    main()
