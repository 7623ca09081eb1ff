"""WebDataset shards as training data: decoding, fps from strides, skipping, sharding, a run."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _train_utils import tiny_config  # noqa: E402

from magicvideo.training.data import ClipSpec, WebDatasetClips, expand_shards  # noqa: E402
from magicvideo.training.synthetic import write_synthetic_dataset  # noqa: E402

SPEC = ClipSpec(num_frames=4, resolution=16, min_stride=1, max_stride=3)


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Three shards of the synthetic clips (two samples each), the last one with a corrupt video."""
    tmp = tmp_path_factory.mktemp("wds")
    manifest = write_synthetic_dataset(tmp / "data", 5, num_frames=10, size=24, fps=12.0, seed=2)
    rows = list(csv.DictReader(manifest.open()))
    captions = {}
    for shard in range(3):
        with tarfile.open(tmp / f"train-{shard:04d}.tar", "w") as tar:
            for row in rows[2 * shard : 2 * shard + 2]:
                key = Path(row["path"]).stem
                add(tar, f"{key}.mp4", (manifest.parent / row["path"]).read_bytes())
                add(tar, f"{key}.json", json.dumps({"caption": row["caption"], "fps": 12.0}).encode())
                captions[key] = row["caption"]
            if shard == 2:
                add(tar, "broken.mp4", b"\x00\x00\x00\x18ftypmp42 this is not a video")
                add(tar, "broken.txt", b"a broken clip")
    return tmp, captions


def take(dataset, count):
    stream = iter(dataset)
    return [next(stream) for _ in range(count)]


def test_shards_decode_to_clips_with_captions_and_fps(shards):
    tmp, captions = shards
    urls = expand_shards(str(tmp / "train-{0000..0002}.tar"))
    assert urls == expand_shards(str(tmp)) and len(urls) == 3
    items = take(WebDatasetClips(urls, SPEC, seed=0), 5)  # one epoch: 5 readable samples
    assert sorted(item["caption"] for item in items) == sorted(captions.values())
    for item in items:
        assert item["pixel_values"].shape == (3, 4, 16, 16)
        assert -1 <= item["pixel_values"].min() and item["pixel_values"].max() <= 1
        assert item["fps"] in (12.0, 6.0, 4.0)  # native 12 fps at stride 1, 2 or 3
    assert len({item["position"] for item in items}) == 5


def test_corrupt_samples_are_skipped_and_reported(shards):
    tmp, _ = shards
    items = take(WebDatasetClips(expand_shards(str(tmp)), SPEC, seed=0), 15)  # three epochs
    reported = [entry for item in items for entry in item["skipped"]]
    # a skip is reported with the next sample yielded, even across an epoch's end
    assert len(reported) >= 2 and all("broken" in entry for entry in reported)
    assert all(item["caption"] != "a broken clip" for item in items)


def test_processes_get_disjoint_shards_and_are_seeded(shards):
    tmp, _ = shards
    urls = expand_shards(str(tmp))
    rank0 = WebDatasetClips(urls, SPEC, seed=5, rank=0, world_size=2)
    rank1 = WebDatasetClips(urls, SPEC, seed=5, rank=1, world_size=2)
    assert set(rank0._shards(0)).isdisjoint(rank1._shards(0))
    assert sorted(rank0._shards(0) + rank1._shards(0)) == sorted(urls)
    a, b = take(rank0, 3), take(WebDatasetClips(urls, SPEC, seed=5, rank=0, world_size=2), 3)
    assert all(torch.equal(x["pixel_values"], y["pixel_values"]) and x["fps"] == y["fps"] for x, y in zip(a, b))


def test_training_runs_on_shards(shards, tmp_path):
    tmp, _ = shards
    manifest = tmp / "data" / "captions.csv"
    config = tiny_config(tmp_path, manifest, train={"max_steps": 2})
    src = str(Path(__file__).resolve().parents[1] / "src")
    result = subprocess.run([sys.executable, "-m", "magicvideo", "train", str(config), "--data",
                             str(tmp / "train-{0000..0002}.tar"), "--output-dir", str(tmp_path / "run")],
                            env={"PYTHONPATH": src, "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "run" / "final" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    assert [int(row["step"]) for row in rows] == [1, 2]
