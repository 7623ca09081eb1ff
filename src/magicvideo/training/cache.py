"""The latent cache: every video encoded once by the VAE (all its frames) and its caption once by
the text encoder, in safetensors shards, so training skips decoding, resizing and both encoders.

Layout of `data.cache_dir`: `index.json` (settings, one entry per video, the skipped videos),
`shard-00000.safetensors`, ... with `latents.<i>` (C, N, h, w) for the N frames of video i and
`text.<i>` (L, D), and `null.safetensors` with the empty caption's embedding (caption dropout).

All frames are cached, not a few pre-sampled clips: the training-time frame sampling (random
segment, random stride, fps = native / stride) then stays exactly that of uncached training, and
`CachedClipDataset` returns for stream position p the very clip `VideoClipDataset` decodes for p
(the VAE works frame by frame, so slicing cached latents equals encoding the sliced frames). The
price is disk space: C*h*w values per frame (4*32*32 at 256 px: 8 KiB in float16).
Latents are the posterior's mode, as uncached training also uses them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ..loading import follow_umask
from ..text import encode_prompts
from ..vae import encode_video
from ..video_io import read_video
from .data import ClipSpec, StreamOrder, resize_center_crop
from .clips import sample_clip, sample_rng

logger = logging.getLogger("magicvideo.training")
INDEX = "index.json"


def cache_exists(cache_dir: str | Path | None) -> bool:
    return cache_dir is not None and (Path(cache_dir) / INDEX).is_file()


@torch.no_grad()
def build_cache(records, cache_dir: str | Path, clip: ClipSpec, vae, tokenizer, text_encoder,
                dtype: torch.dtype = torch.float16, shard_size: int = 256, chunk_size: int = 16) -> dict:
    """Encode `records` (VideoRecord list) into `cache_dir`; returns the index written."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    min_frames = (clip.num_frames - 1) * clip.min_stride + 1
    entries, skipped, shard = [], [], {}

    def flush():
        if shard:
            save_file(shard, str(cache_dir / entries[-1]["shard"]))
            shard.clear()

    for record in tqdm(records, desc="caching", unit="video"):
        try:
            frames, native_fps = read_video(record.path)
            fps = record.fps or native_fps
            if len(frames) < min_frames:
                raise ValueError(f"{len(frames)} frames, a clip needs {min_frames}")
        except Exception as err:  # noqa: BLE001 - unreadable videos are skipped, never fatal
            skipped.append(f"{record.path}: {type(err).__name__}: {err}")
            logger.warning("skipping unreadable video %s", skipped[-1])
            continue
        video = resize_center_crop(frames, clip.resolution).unsqueeze(0)
        latents = encode_video(vae, video, chunk_size=chunk_size)[0]
        text = encode_prompts(tokenizer, text_encoder, [record.caption])[0]
        i = len(entries)
        shard[f"latents.{i}"] = latents.to(dtype).contiguous().cpu()
        shard[f"text.{i}"] = text.to(dtype).contiguous().cpu()
        entries.append({"shard": f"shard-{i // shard_size:05d}.safetensors", "frames": len(frames), "fps": fps,
                        "caption": record.caption, "path": record.path})
        if len(entries) % shard_size == 0:
            flush()
    flush()
    null = encode_prompts(tokenizer, text_encoder, [""])[0]
    save_file({"text": null.to(dtype).contiguous().cpu()}, str(cache_dir / "null.safetensors"))
    index = {"version": 1, "resolution": clip.resolution, "scaling_factor": vae.config.scaling_factor,
             "dtype": str(dtype).removeprefix("torch."), "videos": entries, "skipped": skipped}
    (cache_dir / INDEX).write_text(json.dumps(index, indent=1), encoding="utf-8")
    follow_umask(cache_dir)
    return index


class CachedClipDataset(Dataset):
    """`VideoClipDataset`'s clips, read from a latent cache: items hold `latents` (C, F, h, w) and
    `text_embeds` (L, D) instead of pixels and captions; `null_text` is the empty caption's embedding."""

    def __init__(self, cache_dir: str | Path, clip: ClipSpec, seed: int = 0, shuffle: bool = True,
                 context_length: int | None = None):
        """`context_length`: cut cached text embeddings to this many tokens. For the encoders we
        cache this equals encoding at that length for every caption that fits in it: MiniLM/BERT
        masks the padding, and CLIP's attention is causal, so token i never sees the tokens after it."""
        self.cache_dir, self.clip, self.seed = Path(cache_dir), clip, seed
        self.index = json.loads((self.cache_dir / INDEX).read_text(encoding="utf-8"))
        if self.index["resolution"] != clip.resolution:
            raise ValueError(f"the cache in {cache_dir} holds {self.index['resolution']} px clips, the config asks for "
                             f"data.resolution={clip.resolution}: rebuild it with `magicvideo cache`")
        self.videos = self.index["videos"]
        if not self.videos:
            raise ValueError(f"the cache in {cache_dir} holds no videos")
        self.order = StreamOrder(len(self.videos), seed, shuffle)
        with safe_open(str(self.cache_dir / "null.safetensors"), "pt") as f:
            self.null_text = f.get_tensor("text").float()
        cached = self.null_text.shape[0]
        if context_length is not None and context_length > cached:
            raise ValueError(f"the cache in {cache_dir} holds {cached}-token text embeddings, the model uses "
                             f"{context_length}: rebuild it with `magicvideo cache`")
        self.context_length = context_length or cached
        self.null_text = self.null_text[: self.context_length]

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, position: int) -> dict:
        rng = sample_rng(self.seed, position)
        index = next(self.order.candidates(position))
        video = self.videos[index]
        clip = sample_clip(video["frames"], video["fps"], self.clip.num_frames, self.clip.min_stride,
                           self.clip.max_stride, rng, self.clip.first_frame_share)
        with safe_open(str(self.cache_dir / video["shard"]), "pt") as f:
            latents = f.get_tensor(f"latents.{index}")[:, clip.indices].float()
            text = f.get_slice(f"text.{index}")[: self.context_length].float()
        return {"latents": latents, "text_embeds": text, "fps": clip.fps, "start": clip.indices[0], "position": position,
                "skipped": []}


def build_cache_from_config(config) -> dict:
    """`magicvideo cache`: the manifest, clip size, VAE and text encoder of a training config."""
    from .components import load_components
    from ..manifest import ManifestColumns, read_manifest

    data = config.data
    parts = load_components(config, with_unet=False)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    records = read_manifest(data.manifest, data.root, ManifestColumns(data.path_column, data.caption_column,
                                                                      data.fps_column))
    clip = ClipSpec(data.num_frames, data.resolution, data.min_stride, data.max_stride)
    return build_cache(records, data.cache_dir, clip, parts.vae.to(device), parts.tokenizer,
                       parts.text_encoder.to(device), getattr(torch, data.cache_dtype), data.cache_shard_size)
