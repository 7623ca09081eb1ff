"""Fréchet Video Distance (Unterthiner et al. 2018), the standard way.

Each video contributes its first 16 frames, resized to 224x224 exactly like the reference
``frechet_video_distance.py`` (TF1 ``tf.image.resize_bilinear``: no crop, no antialiasing,
``align_corners=False`` with the legacy half-pixel-free sampling), scaled to [-1, 1], and
embedded by I3D into the 400-d time-averaged Kinetics logits. FVD is the Fréchet distance of
Gaussians fitted to the real and fake embeddings.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from magicvideo.evaluation.i3d import I3D, default_checkpoint_path
from magicvideo.evaluation.videos import (
    EvaluationError,
    EvaluationWarning,
    list_videos,
    read_frames,
)

NUM_FRAMES = 16
RESOLUTION = 224
FEATURE_DIM = 400
_CACHE_VERSION = 1


class FewSamplesWarning(EvaluationWarning):
    """Fewer samples than a full-rank covariance needs: FVD is biased and not comparable."""


def tf_resize_matrix(size_in: int, size_out: int) -> torch.Tensor:
    """(size_out, size_in) weights of TF1 ``resize_bilinear(align_corners=False)`` on one axis.

    Output pixel i samples the input at ``i * size_in / size_out`` (legacy TF, no half-pixel
    offset), interpolating linearly between its floor and the next pixel (clamped to the edge).
    """
    src = torch.arange(size_out, dtype=torch.float64) * (size_in / size_out)
    lower = src.floor().long()
    upper = (lower + 1).clamp(max=size_in - 1)
    frac = src - lower
    weights = torch.zeros(size_out, size_in, dtype=torch.float64)
    weights[torch.arange(size_out), lower] += 1 - frac
    weights[torch.arange(size_out), upper] += frac
    return weights.float()


def preprocess(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 clips (B, T, H, W, 3) in [0, 255] -> float (B, T, 224, 224, 3) in [-1, 1]."""
    x = torch.as_tensor(frames).float()
    rows = tf_resize_matrix(x.shape[2], RESOLUTION)
    cols = tf_resize_matrix(x.shape[3], RESOLUTION)
    x = torch.einsum("ih,bthwc,jw->btijc", rows, x, cols)
    return 2.0 * x / 255.0 - 1.0


def read_clip(path: str | Path, num_frames: int = NUM_FRAMES) -> np.ndarray:
    """The first ``num_frames`` frames of a video, uint8 (num_frames, H, W, 3)."""
    frames = read_frames(path, max_frames=num_frames)
    if len(frames) < num_frames:
        raise EvaluationError(
            f"video {path} has {len(frames)} frames; FVD needs at least {num_frames}"
        )
    return frames


@torch.no_grad()
def extract_features(
    paths: Sequence[str | Path],
    i3d: I3D,
    batch_size: int = 8,
    allow_mixed_sizes: bool = False,
    desc: str = "I3D features",
) -> np.ndarray:
    """I3D embeddings (N, 400) float64 of the videos, read and embedded ``batch_size`` at a time.

    Videos of different frame sizes in one set are refused unless ``allow_mixed_sizes``
    (each is resized to 224x224 anyway, but a mixed set usually means a wrong folder).
    """
    if not paths:
        raise EvaluationError("no videos to embed")
    features, first_size = [], None
    with tqdm(total=len(paths), desc=desc, unit="video") as bar:
        for start in range(0, len(paths), batch_size):
            clips = []
            for path in paths[start : start + batch_size]:
                clip = read_clip(path)
                if first_size is None:
                    first_size = (clip.shape[1:3], paths[0])
                elif clip.shape[1:3] != first_size[0] and not allow_mixed_sizes:
                    raise EvaluationError(
                        f"video {path} is {clip.shape[2]}x{clip.shape[1]} but "
                        f"{first_size[1]} is {first_size[0][1]}x{first_size[0][0]}: "
                        "one set should have one frame size (allow_mixed_sizes to override)"
                    )
                clips.append(preprocess(clip[None])[0])
            features.append(i3d(torch.stack(clips)).double().numpy())
            bar.update(len(clips))
    return np.concatenate(features)


def cached_features(
    paths: Sequence[str | Path],
    i3d: I3D,
    cache_dir: str | Path | None,
    i3d_path: str | Path | None = None,
    batch_size: int = 8,
    allow_mixed_sizes: bool = False,
    desc: str = "I3D features",
) -> np.ndarray:
    """:func:`extract_features`, stored in ``cache_dir`` as an .npz named by a hash of the files
    (path, size, mtime), the checkpoint and the preprocessing settings; reused when it matches."""
    if cache_dir is None:
        return extract_features(paths, i3d, batch_size, allow_mixed_sizes, desc)
    cache_file = Path(cache_dir) / f"fvd-i3d-{_cache_key(paths, i3d_path)}.npz"
    if cache_file.is_file():
        with np.load(cache_file) as cached:
            return cached["features"]
    features = extract_features(paths, i3d, batch_size, allow_mixed_sizes, desc)
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache_file.with_suffix(".tmp.npz")
    np.savez(tmp, features=features, paths=np.array([str(p) for p in paths]))
    os.replace(tmp, cache_file)
    return features


def _cache_key(paths: Sequence[str | Path], i3d_path: str | Path | None) -> str:
    checkpoint = Path(i3d_path) if i3d_path is not None else default_checkpoint_path()

    def identity(path: Path) -> list:
        stat = path.stat()
        return [str(path.resolve()), stat.st_size, stat.st_mtime_ns]

    record = {
        "version": _CACHE_VERSION,
        "frames": NUM_FRAMES,
        "resolution": RESOLUTION,
        "resize": "tf1-bilinear",
        "i3d": identity(checkpoint),
        "files": [identity(Path(p)) for p in paths],
    }
    return hashlib.sha256(json.dumps(record).encode()).hexdigest()[:20]


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance; warns when the covariance cannot be full rank."""
    features = np.asarray(features, dtype=np.float64)
    n, dim = features.shape
    if n < 2:
        raise EvaluationError(f"{n} video(s): a covariance needs at least 2")
    if n <= dim:
        warnings.warn(
            f"{n} videos for {dim}-d features: the covariance has rank <= {n - 1} < {dim}, so "
            "this FVD is biased (typically upwards) and only comparable at the same sample "
            f"count; use more than {dim} videos (the literature uses 2048 or more)",
            FewSamplesWarning,
            stacklevel=2,
        )
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)) for symmetric PSD covariances.

    tr (S1 S2)^(1/2) is computed as tr (S1^(1/2) S2 S1^(1/2))^(1/2), a symmetric PSD matrix
    (same eigenvalues), so everything is symmetric eigendecompositions: no complex parts,
    singular (rank-deficient) covariances are fine.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    root1 = _psd_sqrt(sigma1)
    cross = np.linalg.eigvalsh(root1 @ sigma2 @ root1)
    trace_sqrt = np.sqrt(np.clip(cross, 0, None)).sum()
    distance = np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt
    return float(max(distance, 0.0))


def fvd_from_features(real: np.ndarray, fake: np.ndarray) -> float:
    if real.shape[1] != fake.shape[1]:
        raise EvaluationError(f"feature sizes differ: {real.shape[1]} vs {fake.shape[1]}")
    return frechet_distance(*feature_statistics(real), *feature_statistics(fake))


def compute_fvd(
    real: str | Path,
    fake: str | Path,
    i3d_path: str | Path | None = None,
    batch_size: int = 8,
    cache_dir: str | Path | None = None,
    allow_mixed_sizes: bool = False,
) -> dict:
    """FVD between two video sets (folders or CSV manifests) -> {'fvd', 'num_real', 'num_fake'}."""
    real_paths = [item.path for item in list_videos(real)]
    fake_paths = [item.path for item in list_videos(fake)]
    i3d = I3D.from_pretrained(i3d_path)
    common = dict(i3d_path=i3d_path, batch_size=batch_size, allow_mixed_sizes=allow_mixed_sizes)
    real_features = cached_features(real_paths, i3d, cache_dir, desc="I3D real", **common)
    fake_features = cached_features(fake_paths, i3d, cache_dir, desc="I3D fake", **common)
    value = fvd_from_features(real_features, fake_features)
    return {"fvd": value, "num_real": len(real_paths), "num_fake": len(fake_paths)}
