"""Temporal consistency of any video, without a learned model: consecutive-frame error after
motion compensation.

Per-frame decoders and per-frame stages (super-resolution) make frames that differ from their
neighbours by more than the scene's motion explains ("flicker", "pixel dithering"). Plain
consecutive-frame difference (VBench's temporal flickering) punishes real motion too, so here each
frame is first aligned to the previous one by the global translation (sub-pixel, found by phase
correlation) that best explains their difference; what remains is the flicker. On videos whose
motion is not a global translation the figure includes the unexplained motion: compare models on
the same content, never across content.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def _gray(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames, np.float64)
    if frames.dtype == np.uint8 or frames.max() > 1.5:
        frames = frames / 255.0
    return frames.mean(-1) if frames.ndim == 4 else frames


def translation(a: np.ndarray, b: np.ndarray, upsample: int = 10) -> np.ndarray:
    """(dy, dx) that moves grayscale frame `a` onto `b` (phase correlation, refined to 1/`upsample` px
    by a parabola through the correlation peak's neighbours)."""
    fa, fb = np.fft.fft2(a - a.mean()), np.fft.fft2(b - b.mean())
    cross = fb * np.conj(fa)
    corr = np.fft.ifft2(cross / (np.abs(cross) + 1e-9)).real
    peak = np.array(np.unravel_index(np.argmax(corr), corr.shape))
    shift = peak.astype(np.float64)
    for axis in range(2):
        n = corr.shape[axis]
        left, right = peak.copy(), peak.copy()
        left[axis], right[axis] = (peak[axis] - 1) % n, (peak[axis] + 1) % n
        c0, cl, cr = corr[tuple(peak)], corr[tuple(left)], corr[tuple(right)]
        denom = cl - 2 * c0 + cr
        if denom < 0:
            shift[axis] += np.clip(0.5 * (cl - cr) / denom, -0.5, 0.5)
    size = np.array(corr.shape)
    return np.where(shift > size / 2, shift - size, shift)


def motion_compensated_flicker(frames: np.ndarray) -> float:
    """Mean absolute difference (in [0, 1] intensity units) between each frame and the previous
    frame moved by their estimated global translation, over a (F, H, W[, C]) video."""
    x = _gray(frames)
    errors = []
    for prev, cur in zip(x[:-1], x[1:]):
        moved = ndimage.shift(prev, translation(prev, cur), order=1, mode="nearest")
        errors.append(np.abs(cur - moved)[2:-2, 2:-2].mean())  # borders: what moved in or out
    return float(np.mean(errors)) if errors else 0.0
