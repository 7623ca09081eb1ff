"""What a VAE leaves of a moving digit: the round trip of real held-out clips through each VAE given.

For the canonical eval-digits jobs (a fixed subset), real clips of test-split digits are encoded and
decoded frame by frame (the image decoder) by each VAE, and scored as eval-digits scores a model: the
motion-free digit's coherence at frame 15 with frame 0 and between consecutive frames, flicker,
sharpness, the digit classifier. This is the ceiling a keyframe model in that latent space can reach
(issue #41 asks whether a finer latent, a factor-4 VAE, keeps the digit better, and at what cost:
benchmarks/latent_grid.py).

    python scripts/vae_coherence.py --vae src/magicvideo/weights/digits/vae --vae runs/digits-vae-f4/final --jobs 80
"""

from __future__ import annotations

import argparse
import json

from magicvideo.digits.evaluate import evaluate_generator, evaluation_jobs, real_clip_generator, round_trip_generator
from magicvideo.vae import load_vae

KEYS = ("coherence_first_last", "coherence_consecutive", "flicker", "sharpness", "digit_accuracy")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vae", action="append", required=True, help="an AutoencoderKL folder (repeatable)")
    parser.add_argument("--jobs", type=int, default=80, help="canonical eval-digits jobs, a fixed subset (0: all 240)")
    args = parser.parse_args(argv)
    jobs = evaluation_jobs(limit=args.jobs or None)
    real, vaes = real_clip_generator(), {path: load_vae(path).eval() for path in args.vae}
    rows = {"real clips": real} | {path: round_trip_generator(vae, real) for path, vae in vaes.items()}
    table = {}
    for name, generate in rows.items():
        metrics = evaluate_generator(generate, jobs, progress=False)
        table[name] = {key: round(metrics[key], 4) for key in KEYS}
        if name in vaes:
            table[name]["latent_grid"] = 64 // 2 ** (len(vaes[name].config.block_out_channels) - 1)
        print(name, json.dumps(table[name]), flush=True)
    print(json.dumps({"jobs": len(jobs), "table": table}, indent=1))
    return table


if __name__ == "__main__":
    main()
