"""A contact sheet of every stage of the cascade for one prompt (README): the first frames of the
24 fps output, one row per stage, 128 px cells.

    python scripts/cascade_contact_sheet.py --out docs/images/cascade-stages.png [--prompt ...] [--seed 0]

Rows: keyframes (8 fps, shown at their positions in the 24 fps clip; the cells between are empty),
interpolated (24 fps, decoded by the image decoder), decoded by the cascade's decoder (the VideoVAE
when the cascade has one, else the image decoder again), and upscaled x4 (256 px, shown at 128 px).
Each row is one call of the cascade with its stage options (`interpolate`, `decoder`, `upscale`):
the seed gives every call the same keyframes (stage i uses seed + i), so the rows show one clip.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from magicvideo.loading import BUNDLED_CASCADE
from magicvideo.pipelines.cascade import MagicVideoCascadePipeline


def cell(frame: np.ndarray, size: int) -> Image.Image:
    return Image.fromarray((np.clip(frame, 0, 1) * 255).round().astype(np.uint8)).resize((size, size), Image.LANCZOS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(BUNDLED_CASCADE))
    parser.add_argument("--prompt", default="the digit 7 moves to the right")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fps", type=float, default=8)
    parser.add_argument("--frames", type=int, default=10, help="columns: the first frames of the 24 fps clip")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    cascade = MagicVideoCascadePipeline.from_pretrained(args.model, progress_bar=False)
    if cascade.interpolation is None:
        parser.error("--model: the cascade has no interpolation stage")

    def run(**stages) -> np.ndarray:
        return cascade(args.prompt, fps=args.fps, seed=args.seed, **stages).frames[: args.frames]

    k = cascade.interpolation.keyframe_stride
    keyframes = run(interpolate=False, decoder="image")
    decoder = "decoded (VideoVAE)" if cascade.has_video_decoder else "decoded (image decoder)"
    rows = {"keyframes": {i: keyframes[i // k] for i in range(0, args.frames, k)},
            "interpolated": dict(enumerate(run(decoder="image"))),
            decoder: dict(enumerate(run()))}
    if cascade.upscaler is not None:
        rows["upscaled x4"] = dict(enumerate(run(upscale=True)))
    label = 150
    sheet = Image.new("RGB", (label + args.frames * args.size, len(rows) * args.size), (40, 40, 40))
    draw = ImageDraw.Draw(sheet)
    for r, (name, frames) in enumerate(rows.items()):
        draw.text((6, r * args.size + args.size // 2 - 6), name, fill=(230, 230, 230))
        for c, frame in frames.items():
            sheet.paste(cell(frame, args.size), (label + c * args.size, r * args.size))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)
    print(f"{args.out}: {len(rows)} stages x {args.frames} frames of '{args.prompt}' (seed {args.seed})")


if __name__ == "__main__":
    main()
