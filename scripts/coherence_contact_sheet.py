"""Contact sheet of keyframe clips from several models, for the coherence issue (#13): one row per
(prompt, model), the 16 frames side by side, the same prompt, fps and seed for every model, so
that a digit that changes shape shows as a row whose frames differ from its first one.

    PYTHONPATH=src python scripts/coherence_contact_sheet.py --out docs/images/coherence-before-after.png \
        --model bundled= --model "space-time=runs/coh/space-time/final" [--fps 8] [--seed 0]

`--model LABEL=PATH[@LAG]` (an empty PATH: the bundled model; @LAG: staggered sampling with that
frame lag, `frame_lag`); the labels and the prompts are printed in the order of the rows.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from magicvideo.loading import load_pipeline
from magicvideo.video_io import contact_sheet

PROMPTS = ["the digit 2 moves to the right", "the digit 4 moves down", "the digit 3 moves up and to the left",
           "the digit 8 moves to the left"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", required=True, metavar="LABEL=PATH[@LAG]",
                        help="a keyframe pipeline folder under a label (empty path: the bundled model); repeat")
    parser.add_argument("--prompt", action="append", help="prompts (default: four canonical ones)")
    parser.add_argument("--fps", type=float, default=8.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    models = [entry.split("=", 1) if "=" in entry else (entry, "") for entry in args.model]
    clips = {}
    for label, path in models:
        path, _, lag = path.partition("@")
        pipe = load_pipeline(path or None, device="cpu", dtype="fp32", progress_bar=False)
        for prompt in args.prompt or PROMPTS:
            clips[prompt, label] = pipe(prompt, fps=args.fps, num_inference_steps=args.steps,
                                        frame_lag=int(lag) if lag else None,
                                        generator=torch.Generator().manual_seed(args.seed)).frames[0]
    rows = []
    for prompt in args.prompt or PROMPTS:
        for label, _ in models:
            rows.append(clips[prompt, label])
            print(f"row {len(rows)}: {label}: {prompt}")
    image = Image.fromarray(contact_sheet([np.asarray(r) for r in rows]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    image.resize((image.width * 2, image.height * 2), Image.NEAREST).save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
