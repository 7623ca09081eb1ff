"""A contact sheet for any model and prompt list: one row per clip (or per cascade stage), the frames
side by side, a label per row.

    python scripts/contact_sheet.py --out docs/images/cascade-stages.png          # the README's sheet
    python scripts/contact_sheet.py --keyframes-only --out sheet.png --model bundled= \
        --model "bidirectional=runs/digits-bidirectional/final" \
        --prompt "the digit 2 moves to the right" --prompt "the digit 4 moves down" [--seed 0 1] [--fps 8]

`--model [LABEL=]PATH` (repeat): a cascade folder or a keyframe pipeline folder; an empty PATH (or
none given): the bundled cascade; `--lora LABEL=PATH[:SCALE]` adds a LoRA to the model labelled
LABEL. Every model gets the same prompts (`--prompt`, repeat), seeds, fps and steps, so rows of one
prompt and seed differ only by the model.

Cascade stages (default): for each model, prompt and seed, one row per stage the model has:
keyframes (shown at their positions in the output clip when there is an interpolation stage; the
cells between are empty), interpolated (decoded by the image decoder), decoded by the cascade's
decoder (the VideoVAE when the cascade has one, else the image decoder), and upscaled (shown at
`--size`). Each row is one call of the cascade with its stage options: the seed gives every call the
same keyframes (stage i uses seed + i), so the rows show one clip. Columns: the first `--frames` (10)
frames of the output clip.

`--keyframes-only`: one row per prompt, seed and model (in that order): the keyframe clip, all its
frames by default, decoded by `--decoder`. Rows are labelled with what varies between them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from magicvideo.loading import BUNDLED_CASCADE
from magicvideo.lora import load_loras
from magicvideo.pipelines.cascade import MagicVideoCascadePipeline

PROMPT = "the digit 7 moves to the right"
LABEL_WIDTH = 150  # at least; wider when a label needs it


def cell(frame: np.ndarray, size: int) -> Image.Image:
    return Image.fromarray((np.clip(frame, 0, 1) * 255).round().astype(np.uint8)).resize((size, size), Image.LANCZOS)


def parse_models(entries: list[str] | None) -> list[tuple[str, str]]:
    """`[LABEL=]PATH` entries -> (label, folder); an empty path is the bundled cascade."""
    models = []
    for entry in entries or [""]:
        label, path = entry.split("=", 1) if "=" in entry else ("", entry)
        path = path or str(BUNDLED_CASCADE)
        models.append((label or ("bundled" if path == str(BUNDLED_CASCADE) else Path(path).name), path))
    return models


def stage_rows(cascade: MagicVideoCascadePipeline, columns: int, **call) -> dict[str, dict[int, np.ndarray]]:
    """One row per stage of `cascade`: {stage name: {column: frame}}."""

    def run(**stages) -> np.ndarray:
        return cascade(**call, **stages).frames[:columns]

    interpolate = cascade.interpolation is not None
    k = cascade.interpolation.keyframe_stride if interpolate else 1
    keyframes = run(interpolate=False, decoder="image")
    rows = {"keyframes": {i: keyframes[i // k] for i in range(0, columns, k) if i // k < len(keyframes)}}
    if interpolate:
        rows["interpolated"] = dict(enumerate(run(decoder="image")))
    decoder = "decoded (VideoVAE)" if cascade.has_video_decoder else "decoded (image decoder)"
    rows[decoder] = dict(enumerate(run()))
    if cascade.upscaler is not None:
        rows[f"upscaled x{cascade.upscale_factor}"] = dict(enumerate(run(upscale=True)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", metavar="[LABEL=]PATH",
                        help="a cascade or keyframe pipeline folder (empty PATH: the bundled cascade); repeat")
    parser.add_argument("--lora", action="append", default=[], metavar="LABEL=PATH[:SCALE]",
                        help="a LoRA of the keyframe U-Net of the model labelled LABEL (as generate --lora); repeat")
    parser.add_argument("--prompt", action="append", help=f"repeat (default: {PROMPT!r})")
    parser.add_argument("--seed", type=int, nargs="+", default=[0])
    parser.add_argument("--fps", type=float, default=8, help="keyframe rate (default: 8)")
    parser.add_argument("--steps", type=int, default=25, help="keyframe denoising steps (default: 25)")
    parser.add_argument("--frame-lag", type=int, help="staggered sampling of the keyframes (default: the model's)")
    parser.add_argument("--chunk-size", type=int, nargs="+", default=[None],
                        help="causal sampling of the keyframes: chunk sizes, a row each (default: the model's)")
    parser.add_argument("--keyframes-only", action="store_true", help="one row per clip of keyframes, no other stage")
    parser.add_argument("--decoder", choices=("video", "image"), default="video",
                        help="the decoder of --keyframes-only rows (default: video, the VideoVAE where there is one)")
    parser.add_argument("--frames", type=int,
                        help="columns: the first frames of each clip (default: 10 of the cascade's output; "
                             "every keyframe with --keyframes-only)")
    parser.add_argument("--size", type=int, default=128, help="cell size in pixels (default: 128)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    models = parse_models(args.model)
    prompts = args.prompt or [PROMPT]
    stages = ("keyframes",) if args.keyframes_only else ("keyframes", "interpolation", "upscale")
    cascades = {label: MagicVideoCascadePipeline.from_pretrained(path, progress_bar=False, stages=stages)
                for label, path in models}
    for entry in args.lora:
        label, _, spec = entry.partition("=")
        if label not in cascades or not spec:
            parser.error(f"--lora {entry!r}: expected LABEL=PATH[:SCALE] with LABEL one of {sorted(cascades)}")
        load_loras(cascades[label].keyframes, [spec])
    lag = {} if args.frame_lag is None else {"frame_lag": args.frame_lag}
    varies = {"model": len(models) > 1, "prompt": len(prompts) > 1, "seed": len(args.seed) > 1,
              "chunk": len(args.chunk_size) > 1}

    def name(label: str, prompt: str, seed: int, chunk: int | None) -> list[str]:
        parts = [label] * varies["model"] + [prompt] * varies["prompt"] + [f"seed {seed}"] * varies["seed"] \
            + [f"chunk {chunk or 'model'}"] * varies["chunk"]
        return parts or ([prompt] if args.keyframes_only else [])

    rows: list[tuple[str, dict[int, np.ndarray]]] = []
    for prompt in prompts:
        for seed in args.seed:
            for label, _ in models:
                for chunk in args.chunk_size:
                    call = dict(prompt=prompt, fps=args.fps, seed=seed, num_inference_steps=args.steps,
                                chunk_size=chunk, **lag)
                    title = name(label, prompt, seed, chunk)
                    if args.keyframes_only:
                        clip = cascades[label](**call, interpolate=False, decoder=args.decoder).frames
                        rows.append(("\n".join(title), dict(enumerate(clip[: args.frames]))))
                    else:
                        for stage, frames in stage_rows(cascades[label], args.frames or 10, **call).items():
                            rows.append(("\n".join(title + [stage]), frames))

    columns = max(max(frames, default=-1) for _, frames in rows) + 1
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_width = max([LABEL_WIDTH] + [measure.multiline_textbbox((0, 0), text)[2] + 12 for text, _ in rows])
    sheet = Image.new("RGB", (label_width + columns * args.size, len(rows) * args.size), (40, 40, 40))
    draw = ImageDraw.Draw(sheet)
    for r, (text, frames) in enumerate(rows):
        height = measure.multiline_textbbox((0, 0), text)[3]
        draw.multiline_text((6, r * args.size + (args.size - height) // 2), text, fill=(230, 230, 230))
        for c, frame in frames.items():
            sheet.paste(cell(frame, args.size), (label_width + c * args.size, r * args.size))
        print(f"row {r + 1}: {text!r}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)
    print(f"{args.out}: {len(rows)} rows x {columns} frames")


if __name__ == "__main__":
    main()
