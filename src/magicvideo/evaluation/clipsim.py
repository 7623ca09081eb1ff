"""CLIPSIM: mean CLIP similarity between the frames of generated videos and their prompts.

For each video, every frame and the prompt are embedded by a CLIP model (any
``transformers`` CLIPModel saved in a local folder with its processor); the video's score is
the mean over frames of the cosine similarity, and CLIPSIM is the mean over videos. The raw
cosine is reported (no x100 and no clipping at 0), as in GODIVA / Make-A-Video / MagicVideo.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import CLIPModel, CLIPProcessor

from magicvideo.evaluation.videos import EvaluationError, VideoItem, list_videos, read_frames


def load_clip(path: str | Path) -> tuple[CLIPModel, CLIPProcessor]:
    """A CLIP model and its processor (tokenizer + image processor) from a local folder."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise EvaluationError(f"{path} is not a saved CLIP model (no config.json)")
    model = CLIPModel.from_pretrained(path).eval().requires_grad_(False)
    return model, CLIPProcessor.from_pretrained(path)


@torch.no_grad()
def frame_similarities(
    model: CLIPModel, processor: CLIPProcessor, frames: np.ndarray, prompt: str,
    batch_size: int = 32,
) -> np.ndarray:  # fmt: skip
    """Cosine similarity of each frame (uint8 (F, H, W, 3)) with the prompt -> (F,)."""
    max_length = model.config.text_config.max_position_embeddings
    text = processor.tokenizer(
        [prompt], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
    )
    sims = []
    for start in range(0, len(frames), batch_size):
        pixels = processor.image_processor(
            images=list(frames[start : start + batch_size]), return_tensors="pt"
        )["pixel_values"]
        out = model(
            input_ids=text["input_ids"], attention_mask=text["attention_mask"],
            pixel_values=pixels.to(model.dtype),
        )  # fmt: skip
        # CLIPModel returns both embeddings already L2-normalised
        sims.append((out.image_embeds @ out.text_embeds.T)[:, 0].double().numpy())
    return np.concatenate(sims)


def clipsim(
    model: CLIPModel, processor: CLIPProcessor, items: Sequence[VideoItem]
) -> dict:
    """{'clipsim': mean over videos of the per-frame mean, 'per_video': [...], 'num_videos'}."""
    if not items:
        raise EvaluationError("no videos to score")
    per_video = []
    for item in tqdm(items, desc="CLIPSIM", unit="video"):
        if not item.caption:
            raise EvaluationError(f"video {item.path} has no prompt")
        per_video.append(float(frame_similarities(model, processor, read_frames(item.path),
                                                  item.caption).mean()))  # fmt: skip
    return {"clipsim": float(np.mean(per_video)), "num_videos": len(items),
            "per_video": per_video}  # fmt: skip


def pair_prompts(videos: str | Path, prompts: str | Path) -> list[VideoItem]:
    """Videos of a folder paired with their prompts.

    ``prompts`` is a .txt with one prompt per line, in the order of the sorted video file
    names, or a CSV manifest ``path,caption`` whose paths are relative to its own folder.
    """
    prompts = Path(prompts)
    if not prompts.is_file():
        raise EvaluationError(f"prompts file {prompts} does not exist")
    if prompts.suffix.lower() == ".csv":
        return list_videos(prompts)
    found = list_videos(videos)
    lines = [line.strip() for line in prompts.read_text(encoding="utf-8").splitlines()]
    lines = [line for line in lines if line]
    if len(lines) != len(found):
        raise EvaluationError(
            f"{prompts} has {len(lines)} prompts but {videos} has {len(found)} videos"
        )
    return [VideoItem(item.path, caption) for item, caption in zip(found, lines)]


def compute_clipsim(videos: str | Path, prompts: str | Path, clip_path: str | Path) -> dict:
    model, processor = load_clip(clip_path)
    return clipsim(model, processor, pair_prompts(videos, prompts))
