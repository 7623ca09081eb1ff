"""Time the interpolation stage against the keyframe stage on this machine (CPU, fp32).

    python benchmarks/interpolation_speed.py --repeats 3 --threads 1

Keyframe stage: the bundled keyframe model, 16 keyframes at 64 px from a prompt with the
`generate` defaults (25 steps, guidance 7.5), decoded to frames. Interpolation stage: the bundled
interpolation model, those 16 keyframe latents -> 46 frames (3 windows denoised as one batch; its
defaults: 25 steps, no guidance), decoded. The two are timed alternately (the machine is shared:
alternating keeps both under the same load) and the medians are reported; goal: interpolation
<= 2x keyframes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="interpolation pipeline folder (default: the bundled one)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=25, help="interpolation steps (default: 25)")
    parser.add_argument("--guidance", type=float, default=1.0, help="interpolation guidance (default: 1, none)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)

    from magicvideo.pipelines.keyframes import load_pipeline
    from magicvideo.pipelines.interpolation import load_interpolation_pipeline

    keyframes = load_pipeline(None, device="cpu", progress_bar=False)
    interpolation = load_interpolation_pipeline(args.model, device="cpu", progress_bar=False)
    prompt = "the digit 7 moves to the right"
    times = {"keyframes": [], "interpolation": []}
    for repeat in range(args.repeats + 1):  # the first round warms up and is not counted
        tic = time.perf_counter()
        latents = keyframes(prompt, num_frames=16, fps=8, num_inference_steps=25, guidance_scale=7.5,
                            generator=torch.Generator().manual_seed(repeat), output_type="latent").frames
        keyframes.video_processor.postprocess_video(keyframes.decode_latents(latents), "np")
        middle = time.perf_counter()
        frames = interpolation(keyframe_latents=latents, prompt=prompt, fps=8, num_inference_steps=args.steps,
                               guidance_scale=args.guidance, generator=torch.Generator().manual_seed(repeat)).frames
        done = time.perf_counter()
        assert frames.shape[1] == 46
        if repeat:
            times["keyframes"].append(middle - tic)
            times["interpolation"].append(done - middle)
        print(f"round {repeat}: keyframes {middle - tic:.2f} s, interpolation {done - middle:.2f} s", flush=True)
    result = {k: statistics.median(v) for k, v in times.items()}
    result["ratio"] = result["interpolation"] / result["keyframes"]
    result.update(threads=args.threads, repeats=args.repeats, interpolation_steps=args.steps,
                  interpolation_guidance=args.guidance)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
