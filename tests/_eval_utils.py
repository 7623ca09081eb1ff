"""Shared helpers of the evaluation tests: writing small videos, building a tiny CLIP."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np


def write_mp4(path: Path, frames: np.ndarray, fps: int = 8) -> Path:
    """uint8 (F, H, W, 3) -> lossless H.264 (RGB, qp 0) mp4: decodes to exactly ``frames``."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264rgb", rate=fps, options={"qp": "0"})
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "rgb24"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def random_clip(seed: int, frames: int = 16, size: tuple[int, int] = (32, 32)) -> np.ndarray:
    """A smooth moving colour pattern plus a little noise (compresses well, differs per seed)."""
    rng = np.random.default_rng(seed)
    t, y, x = np.meshgrid(np.arange(frames), np.arange(size[0]), np.arange(size[1]), indexing="ij")
    phase = rng.uniform(0, 2 * np.pi, 3)
    speed = rng.uniform(0.1, 0.6)
    channels = [np.sin(0.2 * x + 0.15 * y + speed * t + p) for p in phase]
    clip = 127.5 + 100 * np.stack(channels, -1) + rng.normal(0, 5, (frames, *size, 3))
    return np.clip(clip, 0, 255).astype(np.uint8)


def save_tiny_clip(folder: Path) -> Path:
    """A randomly initialised CLIPModel with a CLIPProcessor (tiny BPE tokenizer), saved."""
    import torch
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        CLIPTokenizer,
    )

    letters = "abcdefghijklmnopqrstuvwxyz"
    tokens = ["<|startoftext|>", "<|endoftext|>"] + list(letters) + [c + "</w>" for c in letters]
    merges = ["#version: 0.2", "a t</w>", "o g</w>", "c at</w>", "d og</w>"]
    tokens += ["at</w>", "og</w>", "cat</w>", "dog</w>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("\n".join(merges) + "\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tokens), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=32,
                         bos_token_id=0, eos_token_id=1, pad_token_id=1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, image_size=32, patch_size=8),
        projection_dim=16,
    )  # fmt: skip
    CLIPModel(config).save_pretrained(folder)
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder
