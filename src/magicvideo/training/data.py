"""Video-text training data: CSV manifests and WebDataset shards, decoded with PyAV.

Every sample is addressed by its *position* in one global, endless data stream: position p is
video `order[p % N]` of epoch p // N (a seeded permutation per epoch), and every random choice made
for it (segment, stride, the replacement of an unreadable video) comes from a generator seeded by
(seed, p). So one process with batch 2b, two processes with batch b, any number of loader workers
and a resumed run all see exactly the same clips, and the data position of a run is one integer.

A video that cannot be read (missing, corrupt, truncated, too short) is replaced by the next video
of the epoch's order, logged once as a warning and reported in the sample's `skipped` list; it
never stops a run.
"""

from __future__ import annotations

import io
import json
import logging
import random
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, IterableDataset, Sampler, get_worker_info

from ..manifest import VideoRecord
from ..video_io import decode_clip
from .clips import sample_clip, sample_rng

logger = logging.getLogger("magicvideo.training")

VIDEO_EXTENSIONS = ("mp4", "webm", "mkv", "avi", "mov")


def resize_center_crop(frames: np.ndarray, size: int) -> torch.Tensor:
    """uint8 frames (F, H, W, 3) -> float (3, F, size, size) in [-1, 1]: the shorter side resized to
    `size` (antialiased bilinear), then the centre cropped."""
    video = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    height, width = video.shape[-2:]
    scale = size / min(height, width)
    new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
    if (new_h, new_w) != (height, width):
        video = F.interpolate(video, size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return video[:, :, top : top + size, left : left + size].clamp(-1, 1).permute(1, 0, 2, 3).contiguous()


@dataclass(frozen=True)
class ClipSpec:
    """What a training clip is: frame count, square size, and the range of frame strides."""

    num_frames: int = 16
    resolution: int = 256
    min_stride: int = 1
    max_stride: int = 4
    first_frame_share: float = 0.0  # share of clips that start at their video's first frame (training/clips.py)

    def chooser(self, rng: random.Random):
        return lambda total, fps: sample_clip(total, fps, self.num_frames, self.min_stride, self.max_stride, rng,
                                              self.first_frame_share)


class StreamOrder:
    """The epoch permutations of the data stream (see module docstring)."""

    def __init__(self, size: int, seed: int, shuffle: bool = True):
        self.size, self.seed, self.shuffle = size, seed, shuffle

    @lru_cache(maxsize=4)
    def permutation(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.size))
        return torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + epoch)).tolist()

    def candidates(self, position: int):
        """Video indices for `position`: its own, then the following ones of the epoch (replacements)."""
        order = self.permutation(position // self.size)
        for offset in range(self.size):
            yield order[(position + offset) % self.size]


class VideoClipDataset(Dataset):
    """Clips of the videos of a manifest, indexed by stream position (an endless stream: use
    `StreamSampler`). Items: `pixel_values` (3, F, S, S) in [-1, 1], `fps`, `caption`, `position`,
    `skipped` (list of "path: reason" of videos replaced to produce this item)."""

    def __init__(self, records: list[VideoRecord], clip: ClipSpec, seed: int = 0, shuffle: bool = True):
        self.records, self.clip, self.seed = records, clip, seed
        self.order = StreamOrder(len(records), seed, shuffle)
        self._warned: set[str] = set()

    def __len__(self) -> int:
        return len(self.records)

    def load(self, index: int, rng: random.Random) -> dict:
        """Decode one clip of video `index` (raises on an unreadable video)."""
        record = self.records[index]
        frames, clip = decode_clip(record.path, self.clip.chooser(rng), record.fps)
        return {"pixel_values": resize_center_crop(frames, self.clip.resolution), "fps": clip.fps,
                "caption": record.caption, "start": clip.indices[0]}

    def __getitem__(self, position: int) -> dict:
        rng = sample_rng(self.seed, position)
        skipped = []
        for index in self.order.candidates(position):
            try:
                item = self.load(index, rng)
            except Exception as err:  # noqa: BLE001 - any unreadable video is skipped, never fatal
                path = self.records[index].path
                skipped.append(f"{path}: {type(err).__name__}: {err}")
                if path not in self._warned:
                    self._warned.add(path)
                    logger.warning("skipping unreadable video %s (%s: %s)", path, type(err).__name__, err)
                continue
            return {**item, "position": position, "skipped": skipped}
        raise RuntimeError(f"none of the {len(self.records)} videos could be read: {skipped[:3]} ...")


class StreamSampler(Sampler[int]):
    """Endless stream positions for one process: micro-batch c of the run holds positions
    [c*b*P, (c+1)*b*P), of which process r takes [c*b*P + r*b, c*b*P + (r+1)*b). Starting at
    micro-batch `start` resumes a run exactly."""

    def __init__(self, batch_size: int, rank: int = 0, world_size: int = 1, start: int = 0):
        self.batch_size, self.rank, self.world_size, self.start = batch_size, rank, world_size, start

    def __iter__(self):
        chunk = self.start
        while True:
            base = chunk * self.batch_size * self.world_size + self.rank * self.batch_size
            yield from range(base, base + self.batch_size)
            chunk += 1


class WebDatasetClips(IterableDataset):
    """Clips from WebDataset `.tar` shards: each sample holds a video (`mp4`, `webm`, ...), a caption
    (`txt`, or `caption` in `json`) and optionally `fps` in `json`.

    Shards are shuffled per epoch (seeded) and dealt round-robin to processes, then to loader
    workers: use at least (processes x workers) shards. Unreadable samples are skipped and
    reported like `VideoClipDataset`'s. Resuming skips the samples this process already consumed.
    """

    def __init__(self, urls: list[str], clip: ClipSpec, seed: int = 0, rank: int = 0, world_size: int = 1,
                 start_sample: int = 0):
        self.urls, self.clip, self.seed = urls, clip, seed
        self.rank, self.world_size, self.start_sample = rank, world_size, start_sample

    def _shards(self, epoch: int) -> list[str]:
        urls = list(self.urls)
        random.Random(f"{self.seed}:shards:{epoch}").shuffle(urls)
        urls = urls[self.rank :: self.world_size]
        worker = get_worker_info()
        return urls[worker.id :: worker.num_workers] if worker else urls

    def _decode(self, sample: dict, rng: random.Random) -> dict:
        meta = json.loads(sample["json"]) if "json" in sample else {}
        caption = sample["txt"].decode("utf-8") if "txt" in sample else meta["caption"]
        ext = next(ext for ext in VIDEO_EXTENSIONS if ext in sample)
        frames, clip = decode_clip(io.BytesIO(sample[ext]), self.clip.chooser(rng), meta.get("fps"))
        return {"pixel_values": resize_center_crop(frames, self.clip.resolution), "fps": clip.fps, "caption": caption,
                "start": clip.indices[0]}

    def __iter__(self):
        import webdataset as wds

        worker = get_worker_info()
        count, epoch, skipped = 0, 0, []
        while True:
            shards = self._shards(epoch)
            if not shards:
                raise RuntimeError(f"{len(self.urls)} shards cannot feed process {self.rank} (use more shards)")
            source = wds.WebDataset(shards, shardshuffle=False, nodesplitter=None, workersplitter=None,
                                    handler=wds.warn_and_continue, empty_check=False)
            for sample in source:
                count += 1
                if count <= self.start_sample // (worker.num_workers if worker else 1):
                    continue
                rng = sample_rng(self.seed, zlib.crc32(sample["__key__"].encode()), epoch)
                try:
                    item = self._decode(sample, rng)
                except Exception as err:  # noqa: BLE001 - never fatal
                    skipped.append(f"{sample.get('__url__', '?')}/{sample['__key__']}: {type(err).__name__}: {err}")
                    logger.warning("skipping unreadable sample %s", skipped[-1])
                    continue
                workers, worker_id = (worker.num_workers, worker.id) if worker else (1, 0)
                position = (count * self.world_size + self.rank) * workers + worker_id  # unique per sample
                yield {**item, "position": position, "skipped": skipped}
                skipped = []
            epoch += 1


def collate(items: list[dict]) -> dict:
    """Stack tensors; keep captions as a list and merge the `skipped` lists."""
    batch = {"fps": torch.tensor([item["fps"] for item in items], dtype=torch.float32),
             "position": torch.tensor([item["position"] for item in items], dtype=torch.long),
             "skipped": [entry for item in items for entry in item["skipped"]]}
    if "start" in items[0]:  # each clip's first frame in its video
        batch["start"] = torch.tensor([item["start"] for item in items], dtype=torch.long)
    for key in ("pixel_values", "latents", "text_embeds"):
        if key in items[0]:
            batch[key] = torch.stack([item[key] for item in items])
    if "caption" in items[0]:
        batch["caption"] = [item["caption"] for item in items]
    return batch


def expand_shards(spec: str) -> list[str]:
    """`data/shard-{000..099}.tar` (brace notation), a folder of .tar files, or a single .tar."""
    import braceexpand

    path = Path(spec)
    if path.is_dir():
        return sorted(str(p) for p in path.glob("*.tar"))
    return list(braceexpand.braceexpand(spec))
