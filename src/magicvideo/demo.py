"""The web demo (`magicvideo demo`, Gradio): the whole cascade behind a page and an HTTP API.

The cascade is loaded once; every request runs on its own `fork()` (shared models, its own sampler
state), so requests may run at the same time. Mistakes in the input come back as one clear message
naming the field, never as a stack trace.
"""

from __future__ import annotations

import json
import random
import tempfile
import uuid
from pathlib import Path

import gradio as gr

from .errors import InvalidArgumentError
from .pipelines.cascade import MagicVideoCascadePipeline
from .pipelines.keyframes import fit_image
from .video_io import write_video

# argument of the cascade -> the label of its field on the page
LABELS = {"prompt": "Prompt", "negative_prompt": "Negative prompt", "seed": "Seed", "num_inference_steps": "Steps",
          "guidance_scale": "Guidance", "fps": "Frame rate", "interpolate": "Interpolation",
          "decoder": "VideoVAE", "upscale": "Upscale x4", "image": "First frame"}
EXAMPLES = [["the digit 7 moves to the right", 0], ["the digit 3 moves up and to the left", 1]]
MAX_SEED = 2**31 - 1


def generate_video(cascade: MagicVideoCascadePipeline, out_dir: Path, prompt: str, negative_prompt: str, seed,
                   steps, guidance, fps, interpolate: bool, video_decoder: bool, upscale: bool, callback=None,
                   image=None):
    """Run the cascade on the page's settings; returns (mp4 path, settings). `image` (optional, a PIL
    image or an array): the first frame, resized and centre-cropped to the frame size (the settings say
    how). Raises `InvalidArgumentError` for a bad setting."""
    if not prompt or not prompt.strip():
        raise InvalidArgumentError("prompt", "enter a prompt")
    try:
        seed = int(seed)
    except (TypeError, ValueError, OverflowError):
        raise InvalidArgumentError("seed", f"must be a whole number between 0 and {MAX_SEED}, got {seed!r}") from None
    if not 0 <= seed <= MAX_SEED:
        raise InvalidArgumentError("seed", f"must be between 0 and {MAX_SEED}, got {seed}")
    changes = []
    if image is not None:
        image, changes = fit_image(image, *cascade.keyframes.frame_size(None, None))
    out = cascade(prompt.strip(), negative_prompt=(negative_prompt or "").strip() or None, seed=seed,
                  num_inference_steps=int(steps), guidance_scale=float(guidance), fps=float(fps),
                  interpolate=bool(interpolate) and cascade.interpolation is not None,
                  decoder="video" if video_decoder else "image", upscale=bool(upscale), callback=callback, image=image)
    path = write_video(out_dir / f"{uuid.uuid4().hex}.mp4", out.frames, fps=out.fps)
    settings = {**out.settings, "stages": out.stages, "frames": int(len(out.frames)), "output_fps": out.fps,
                "size": f"{out.frames.shape[2]}x{out.frames.shape[1]}"}
    if changes:
        settings["image_note"] = f"first frame {', '.join(changes)}"
    warning = cascade.fps_warning(float(fps), interpolate="interpolation" in out.stages)
    if warning:
        settings["warning"] = warning
    return str(path), settings


def build_demo(cascade: MagicVideoCascadePipeline, out_dir: str | Path | None = None,
               loras: dict[str, float] | None = None) -> gr.Blocks:
    """The page: prompt, negative prompt, seed (with a random button), steps, guidance, frame rate,
    stage toggles, an optional first frame, the video and its settings as JSON, and cached examples;
    `loras` ({name: scale}, loaded into the keyframe stage at start) are listed under the title."""
    out_dir = Path(out_dir or tempfile.mkdtemp(prefix="magicvideo-demo-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    low, high = cascade.keyframes.config.get("fps_range") or (1.0, 30.0)
    cascade.set_progress_bar_config(disable=True)

    def run(prompt, negative_prompt, seed, steps, guidance, fps, interpolate, video_decoder, upscale, image=None,
            progress=gr.Progress()):
        def callback(stage, step, total):
            progress((step, total), desc=stage)

        try:
            path, settings = generate_video(cascade, out_dir, prompt, negative_prompt, seed, steps, guidance, fps,
                                            interpolate, video_decoder, upscale, callback, image)
        except InvalidArgumentError as err:
            raise gr.Error(f"{LABELS.get(err.argument, err.argument)}: {err.message}") from None
        return path, settings

    with gr.Blocks(title="MagicVideo") as demo:
        gr.Markdown("# MagicVideo\nText to video with latent diffusion: keyframes, frame interpolation, "
                    "VideoVAE decoding and x4 super-resolution.")
        if loras:
            gr.Markdown("LoRAs: " + ", ".join(f"{name} (scale {scale:g})" for name, scale in loras.items()),
                        elem_id="loras")
        with gr.Row():
            with gr.Column():
                prompt = gr.Textbox(label="Prompt", placeholder="the digit 7 moves to the right", elem_id="prompt")
                negative = gr.Textbox(label="Negative prompt", elem_id="negative")
                with gr.Row():
                    seed = gr.Number(label="Seed", value=0, precision=0, minimum=0, maximum=MAX_SEED, elem_id="seed")
                    shuffle = gr.Button("Random seed", elem_id="random-seed")
                steps = gr.Slider(1, 100, value=25, step=1, label="Steps")
                guidance = gr.Slider(0, 20, value=7.5, step=0.5, label="Guidance")
                fps = gr.Slider(low, high, value=max(low, min(8.0, high)), step=1, label="Frame rate (keyframes)")
                with gr.Row():
                    interpolate = gr.Checkbox(value=cascade.interpolation is not None, label="Interpolation",
                                              interactive=cascade.interpolation is not None)
                    video_decoder = gr.Checkbox(value=cascade.has_video_decoder, label="VideoVAE",
                                                interactive=cascade.has_video_decoder)
                    upscale = gr.Checkbox(value=False, label="Upscale x4", interactive=cascade.upscaler is not None)
                image = gr.Image(label="First frame (optional: the clip starts from it)", type="pil",
                                 sources=["upload", "clipboard"], elem_id="image")
                button = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Column():
                video = gr.Video(label="Video", elem_id="video", autoplay=True)
                settings = gr.JSON(label="Settings")
        inputs = [prompt, negative, seed, steps, guidance, fps, interpolate, video_decoder, upscale, image]
        shuffle.click(lambda: random.randint(0, MAX_SEED), outputs=seed, api_name=False)
        button.click(run, inputs, [video, settings], api_name="generate")
        gr.Examples([[p, "", s, 25, 7.5, fps.value, interpolate.value, video_decoder.value, False, None]
                     for p, s in EXAMPLES],
                    inputs, [video, settings], fn=run, cache_examples=True, cache_mode="lazy")
    return demo


def main(model: str | None, host: str, port: int, concurrency: int = 2, device: str | None = None,
         loras: list[str] = ()) -> None:
    """Serve the demo of the cascade in `model`, with the LoRAs `loras` (`PATH[:SCALE]`) in its keyframe stage."""
    from .loading import BUNDLED_CASCADE
    from .lora import load_loras

    cascade = MagicVideoCascadePipeline.from_pretrained(model or BUNDLED_CASCADE, device, progress_bar=False)
    demo = build_demo(cascade, loras=load_loras(cascade.keyframes, list(loras)))
    demo.queue(default_concurrency_limit=concurrency)
    print(json.dumps({"url": f"http://{host}:{port}", "model": str(model or BUNDLED_CASCADE)}))
    demo.launch(server_name=host, server_port=port, show_error=False)
