"""The zoom check of `eval-digits --zoom`: does the digit grow as in `digits data --zoom` (the camera zooms in)?

The digit's size in a frame is the root-mean-square distance of its mass (:func:`evaluate.foreground`) from its
centre of mass, which a magnification by z about any point multiplies by z. The growth per frame is the slope of a
least-squares line through log(size) over the clip's frames; divided by the frames a native frame is worth
(fps / 24) it estimates the scale per native frame, which the data sets to :data:`data.ZOOM_RATE` for zoom clips
and 1 otherwise. A clip zooms when its estimated log scale per native frame is above half of log(ZOOM_RATE), the
midpoint between the two. Measured on real held-out clips (tests/test_digits_zoom.py; `eval-digits --real --zoom`):
all 240 zoom clips (16 frames at 8, 12 and 24 fps) are detected and none of 240 straight ones (their estimates: 0.98
to 1.10 and -0.03 to 0.04 of the zoom rate); written as H.264 (`digits data [--zoom]`, 48 frames at 24 fps), 120 of
120 and 0 of 120.
"""

from __future__ import annotations

import numpy as np

from .data import NATIVE_FPS, ZOOM_RATE
from .evaluate import centre_of_mass, foreground

THRESHOLD = 0.5  # share of the data's log zoom rate above which a clip counts as zooming


def digit_size(clips) -> np.ndarray:
    """(N, F) the RMS distance (px) of each frame's foreground mass from its centre of mass; NaN for an empty frame."""
    mass = foreground(clips)
    centre = centre_of_mass(mass=mass)
    h, w = mass.shape[-2:]
    ys, xs = np.mgrid[0:h, 0:w]
    dx = xs[None, None] - centre[..., 0, None, None]
    dy = ys[None, None] - centre[..., 1, None, None]
    total = mass.sum(axis=(2, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sqrt((mass * (dx**2 + dy**2)).sum(axis=(2, 3)) / total)


def zoom_share(clips, fps) -> np.ndarray:
    """(N,) the estimated log scale per native frame as a share of the data's log(ZOOM_RATE): about 1 for a
    clip of `digits data --zoom`, 0 for a digit of constant size."""
    size = np.log(digit_size(clips))
    frames = np.arange(size.shape[1], dtype=np.float64)
    shares = np.full(len(size), np.nan)
    for i, track in enumerate(size):
        ok = np.isfinite(track)
        if ok.sum() >= 2:
            slope = np.polyfit(frames[ok], track[ok], 1)[0]
            shares[i] = slope * float(np.broadcast_to(fps, (len(size),))[i]) / NATIVE_FPS / np.log(ZOOM_RATE)
    return shares


def detects_zoom(clips, fps) -> np.ndarray:
    """(N,) bool: the digit grows as if the camera zoomed in (see module docstring)."""
    return np.nan_to_num(zoom_share(clips, fps), nan=0.0) > THRESHOLD
