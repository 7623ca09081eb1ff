"""Score generated digit videos: right digit, right direction, and motion that follows the fps.

For clips meant to show digit ``d`` moving in direction ``r`` at frame rate ``fps``:

- ``digit_accuracy`` / ``direction_accuracy``: the shipped :mod:`classifier`'s predictions;
- ``motion_direction_accuracy``: the direction of the fitted centre-of-mass velocity
  (no learned model involved);
- ``displacement``: the speed of the digit's centre of mass, in pixels per frame on the
  64x64 canvas (least-squares slope of its track), against the ``expected`` displacement
  ``SPEED * NATIVE_FPS / fps`` of the training data: ``displacement_rel_error`` is
  ``|measured - expected| / expected`` averaged over clips, ``displacement_correlation`` the
  Pearson correlation of measured and expected over all clips (needs several fps). A clip
  with an empty frame (nothing above the background) counts as not moving.
- ``flicker``: motion-compensated flicker (:func:`magicvideo.motion.motion_compensated_flicker`):
  the mean absolute difference, in 8-bit levels, between each frame and the previous frame moved
  by their best global shift; a rigidly moving digit scores near 0 (real clips about 1, from their
  sub-pixel rendering), a flickering or morphing one more.
- ``sharpness``: the mean gradient magnitude of the grayscale frames (:func:`sharpness`), in 8-bit
  levels per pixel; paired with another model's, it says whether a figure was bought by blurring.
- ``whole``: the fraction of clips whose digit stays whole and on the canvas: its foreground mass
  never falls below :data:`WHOLE_FRACTION` of frame 0's; ``digit_accuracy_last16``: the
  classifier's digit accuracy on the last 16 frames (for long clips: is it still the same digit).

Clips of bouncing digits (``bounce=True``, :mod:`magicvideo.digits.data`): the direction is that
of the first :data:`DIRECTION_FRAMES` frames' motion (before any bounce), the displacement the
median per-frame speed of the centre of mass, and ``bounce_pass_rate`` the share of wall contacts
at which the digit bounces (:func:`wall_contacts`), over ``wall_contacts`` contacts. The
classifier's direction head knows straight motion only: its ``direction_accuracy`` is NaN there
(and its digit is read from the first 16 frames).
"""

from __future__ import annotations

import random
import warnings
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from magicvideo.digits.classifier import DigitClassifier, classify, load_classifier, prepare_clips
from magicvideo.digits.data import (
    DIRECTION_NAMES,
    DIRECTIONS,
    NATIVE_FPS,
    SPEED,
    ZOOM_RATE,
    canonical_prompts,
    parse_caption,
    caption_zooms,
    parse_caption_bounces,
    render,
    sample_digit_clip,
)
from magicvideo.video_io import to_uint8

_UNITS = np.array([DIRECTIONS[name] for name in DIRECTION_NAMES])
DIRECTION_FRAMES = 4  # a bouncing clip's direction: the motion of its first 4 frames
WHOLE_FRACTION = 0.7  # a digit is whole while its mass is at least this share of frame 0's
# wall contacts: the box within EDGE_PX of an edge, moving into it faster than MOVING px a frame; the
# velocity normal to the edge must turn away from it (faster than MOVING) within BOUNCE_FRAMES frames
EDGE_PX = 1
MOVING = 0.1
BOUNCE_FRAMES = 2
SPECK = 0.1  # the digit's box leaves out specks: connected parts of less than this share of its largest part's mass


def expected_displacement(fps) -> np.ndarray:
    """Pixels per frame that the training data moves at frame rate ``fps``."""
    return SPEED * NATIVE_FPS / np.asarray(fps, np.float64)


def foreground(clips) -> np.ndarray:
    """(N, F, H, W) what rises above each 64x64 grayscale frame's background: its median plus 3 robust
    standard deviations (1.4826 * median absolute deviation); the digit's mass."""
    x = prepare_clips(clips, num_frames=None).squeeze(1).double().numpy()  # (N, F, H, W)
    n, f, h, w = x.shape
    flat = x.reshape(n, f, -1)
    median = np.median(flat, axis=-1)
    sigma = 1.4826 * np.median(np.abs(flat - median[..., None]), axis=-1)
    return np.clip(x - (median + 3 * sigma)[..., None, None], 0, None)


def centre_of_mass(clips=None, mass: np.ndarray | None = None) -> np.ndarray:
    """(N, F, 2) centre of mass (x, y) in pixels of the 64x64 grayscale frames, counting only
    what rises above each frame's background (:func:`foreground`, or its given ``mass``), so that
    background noise does not pull it to the centre; NaN for a frame with nothing above it."""
    mass = foreground(clips) if mass is None else mass
    h, w = mass.shape[-2:]
    total = mass.sum(axis=(2, 3))
    total = np.where(total > 0, total, np.nan)
    cx = (mass.sum(axis=2) * np.arange(w)).sum(-1) / total
    cy = (mass.sum(axis=3) * np.arange(h)).sum(-1) / total
    return np.stack([cx, cy], axis=-1)


def digit_crops(clips, size: int = 32) -> np.ndarray:
    """(N, F, size, size) crops of each frame centred on its digit's centre of mass (sub-pixel,
    bilinear), so that the digit's motion is removed and only its appearance is left."""
    from scipy import ndimage

    x = prepare_clips(clips, num_frames=None).squeeze(1).double().numpy()  # (N, F, H, W) in [0, 1]
    centres = centre_of_mass(clips)
    n, f, h, w = x.shape
    crops = np.zeros((n, f, size, size))
    for i in range(n):
        for j in range(f):
            cx, cy = centres[i, j]
            if not np.isfinite(cx):
                continue  # an empty frame: a blank crop, similarity 0
            shifted = ndimage.shift(x[i, j], ((h - 1) / 2 - cy, (w - 1) / 2 - cx), order=1, mode="constant")
            top, left = (h - size) // 2, (w - size) // 2
            crops[i, j] = shifted[top : top + size, left : left + size]
    return crops


def _uint8_rgb(frames) -> np.ndarray:
    """Frames in [0, 1] or uint8 -> uint8 RGB (..., H, W, 3), as an image file holds them."""
    frames = to_uint8(frames)
    return np.repeat(frames[..., None], 3, -1) if frames.shape[-1] not in (1, 3) else frames


def coherence_to_given(images, clips) -> np.ndarray:
    """(N,) image-to-video: the correlation of the motion-free digit crop of each clip's last frame with
    that of the image it was given as frame 0 (:func:`coherence` of the pair: 1 when the digit is kept)."""
    given = prepare_clips(np.asarray(images)[:, None], num_frames=None)  # (N, 1, 1, 64, 64) in [0, 1], any size in
    last = prepare_clips(np.asarray(clips)[:, -1:], num_frames=None)
    return coherence(torch.cat([given, last], dim=2).squeeze(1).numpy())["per_clip_last"]


def sharpness(clips) -> np.ndarray:
    """(N,) the mean gradient magnitude of each clip's 64x64 grayscale frames, in 8-bit levels per pixel
    (central differences inside the frame): a blurred copy of a clip scores lower, a flat one 0."""
    x = 255.0 * prepare_clips(clips, num_frames=None).squeeze(1).double().numpy()  # (N, F, H, W)
    dy, dx = np.gradient(x, axis=(2, 3))
    return np.hypot(dx, dy).mean(axis=(1, 2, 3))


def coherence(clips) -> dict:
    """How much each clip's digit keeps its appearance once its motion is removed.

    Every frame's motion-free crop (:func:`digit_crops`) is compared with the first frame's and with
    the previous frame's by the Pearson correlation of their pixels (1: the same image; real clips
    lose a little to sub-pixel rendering). Returns ``to_first`` and ``to_last`` (per frame index, mean
    over clips: similarity to the first / last frame), ``to_first_last`` (the last entry of
    ``to_first``), ``consecutive`` (mean over clips and frame pairs), ``consecutive_by_frame`` (per
    frame pair) and ``per_clip_last`` and ``per_clip_consecutive`` (N,) for breakdowns. A gradual drift
    shows as ``consecutive_by_frame`` flat and ``to_last`` the mirror of ``to_first``; a bad start
    that settles, as low early pairs and a flat end."""
    crops = digit_crops(clips)
    n, f = crops.shape[:2]
    flat = crops.reshape(n, f, -1)
    flat = flat - flat.mean(-1, keepdims=True)
    norm = np.linalg.norm(flat, axis=-1, keepdims=True)
    unit = np.divide(flat, norm, out=np.zeros_like(flat), where=norm > 0)
    to_first = (unit * unit[:, :1]).sum(-1)  # (N, F)
    consecutive = (unit[:, 1:] * unit[:, :-1]).sum(-1)  # (N, F-1)
    return {
        "to_first": to_first.mean(0).round(4).tolist(),
        "to_last": (unit * unit[:, -1:]).sum(-1).mean(0).round(4).tolist(),
        "to_first_last": float(to_first[:, -1].mean()),
        "consecutive": float(consecutive.mean()) if f > 1 else 1.0,
        "consecutive_by_frame": consecutive.mean(0).round(4).tolist(),
        "per_clip_last": to_first[:, -1],
        "per_clip_consecutive": consecutive.mean(-1) if f > 1 else np.ones(n),
    }


def digit_boxes(mass: np.ndarray) -> np.ndarray:
    """(N, F, H, W) bool: the pixels of each frame's digit, its :func:`foreground` ``mass`` without
    specks (8-connected parts of less than :data:`SPECK` of the largest part's mass, such as the
    ringing that video compression leaves near edges), whose extent is the digit's box."""
    from scipy import ndimage

    ink = mass > 0
    kept = np.zeros_like(ink)
    for index in np.ndindex(ink.shape[:2]):
        labels, count = ndimage.label(ink[index], structure=np.ones((3, 3)))
        if count:
            parts = ndimage.sum_labels(mass[index], labels, np.arange(1, count + 1))
            kept[index] = np.isin(labels, 1 + np.flatnonzero(parts >= SPECK * parts.max()))
    return kept


def wall_contacts(mass: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(contacts (N,), bounces (N,)): per clip, how often the digit met an edge and how often it
    bounced, from its :func:`foreground` ``mass`` (N, F, H, W).

    The rule of the bouncing data: when the digit's box reaches an edge, the velocity component
    normal to it flips. A contact is a run of consecutive frames in which the digit's box lies within
    :data:`EDGE_PX` px of an edge while the centre of mass moves into that edge
    (its velocity from the frame before, faster than :data:`MOVING` px a frame); it bounces if the
    velocity normal to the edge points away from it (faster than :data:`MOVING`) in one of the
    :data:`BOUNCE_FRAMES` frames after the run. A contact the clip ends too early to judge is not
    counted. Each axis is judged on its own (a corner is a contact with two edges).

    The box is steady: the centre of mass plus the median extent of the digit's pixels
    (:func:`digit_boxes`) around it over the clip, so that compression noise at the digit's edges
    does not make it flicker (and break a contact in two)."""
    n, f, h, w = mass.shape
    centres = centre_of_mass(mass=mass)
    velocity = np.diff(centres, axis=1)  # velocity[:, t - 1]: frame t - 1 -> t
    ink = digit_boxes(mass)
    contacts, bounces = np.zeros(n, np.int64), np.zeros(n, np.int64)
    for axis, occupied, size in ((0, ink.any(axis=2), w), (1, ink.any(axis=3), h)):  # x: columns, y: rows
        seen = occupied.any(-1)
        centre = centres[..., axis]
        below = np.where(seen, centre - occupied.argmax(-1), np.nan)  # the extent on either side of the centre
        above = np.where(seen, size - 1 - occupied[..., ::-1].argmax(-1) - centre, np.nan)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a clip with no digit at all: no box, no contact
            low = centre - np.nanmedian(below, axis=1, keepdims=True)
            high = centre + np.nanmedian(above, axis=1, keepdims=True)
            near_low, near_high = low <= EDGE_PX, high >= size - 1 - EDGE_PX  # (NaN: near no edge)
        for near, sign in ((near_low, -1.0), (near_high, 1.0)):
            towards = np.nan_to_num(sign * velocity[..., axis], nan=0.0)  # (N, F - 1), frames 1 ... F - 1
            contact = near[:, 1:] & (towards > MOVING)
            for i in range(n):
                t = 0
                while t < f - 1:
                    if not contact[i, t]:
                        t += 1
                        continue
                    while t + 1 < f - 1 and contact[i, t + 1]:
                        t += 1
                    after = towards[i, t + 1 : t + 1 + BOUNCE_FRAMES]  # the frames after the run
                    bounced = bool((after < -MOVING).any())
                    if bounced or len(after) == BOUNCE_FRAMES:
                        contacts[i] += 1
                        bounces[i] += bounced
                    t += 1
    return contacts, bounces


def fit_velocity(track: np.ndarray) -> np.ndarray:
    """(N, 2) least-squares velocity (pixels per frame) of (N, F, 2) tracks."""
    f = track.shape[1]
    t = np.arange(f) - (f - 1) / 2
    centred = track - track.mean(axis=1, keepdims=True)
    return (centred * t[None, :, None]).sum(axis=1) / (t**2).sum()


def _direction_indices(directions) -> np.ndarray:
    return np.array([DIRECTION_NAMES.index(r) if isinstance(r, str) else int(r) for r in directions], np.int64)


def clip_flicker(clips, batch_size: int = 16) -> np.ndarray:
    """Motion-compensated flicker (8-bit levels) of each clip (N, F, H, W[, C]), uint8 or in [0, 1],
    all its frames on the 64 x 64 canvas."""
    from magicvideo.motion import motion_compensated_flicker

    gray = prepare_clips(clips, num_frames=None)[:, 0]
    return np.concatenate([motion_compensated_flicker(gray[i:i + batch_size]).numpy()
                           for i in range(0, len(gray), batch_size)])


def evaluate_clips(
    clips,
    digits: Sequence[int],
    directions: Sequence,
    fps: Sequence[float],
    classifier: DigitClassifier | None = None,
    bounce: bool = False,
    zoom: bool = False,
) -> dict:
    """Metrics of clips (N, F, H, W[, C]) against their intended digit, direction (name or
    index into DIRECTION_NAMES) and fps; overall and under ``per_fps``. ``bounce``: clips of
    bouncing digits (see the module docstring). ``zoom``: clips the camera zooms in on, with
    ``zoom_detected``, the share in which the digit grows so (:func:`detects_zoom`), and ``zoom_rate``, the
    mean growth rate as a share of the data's (:func:`zoom_rate`: about 1 for real zoom clips, 0 for none)."""
    classifier = classifier or load_classifier()
    digits = np.asarray(digits, np.int64)
    directions = _direction_indices(directions)
    fps = np.asarray(fps, np.float64)
    clips = np.asarray(clips)
    pred_digit, pred_direction = classify(classifier, clips[:, :16] if bounce else clips)
    last_digit, _ = classify(classifier, clips[:, -16:])
    mass = foreground(clips)
    track = centre_of_mass(mass=mass)
    velocity = fit_velocity(track[:, :DIRECTION_FRAMES] if bounce else track)
    # a clip with no foreground in some frame has no track: no motion, no direction
    tracked = np.isfinite(velocity).all(-1)
    velocity = np.where(tracked[:, None], velocity, 0.0)
    speed = np.linalg.norm(velocity, axis=-1)
    if bounce:  # bounces shorten the fitted slope: the median speed from frame to frame
        steps = np.linalg.norm(np.diff(track, axis=1), axis=-1)
        speed = np.where(np.isfinite(steps).all(-1), np.median(np.nan_to_num(steps), axis=-1), 0.0)
    motion_direction = np.where(tracked, np.argmax(velocity @ _UNITS.T, axis=-1), -1)
    totals = mass.sum(axis=(2, 3))
    whole = (totals[:, :1] > 0).ravel() & (totals >= WHOLE_FRACTION * totals[:, :1]).all(-1)
    contacts, bounces = wall_contacts(mass) if bounce else (None, None)
    expected = expected_displacement(fps)
    crops_coherence = coherence(clips)
    first_last, consecutive = crops_coherence["per_clip_last"], crops_coherence["per_clip_consecutive"]
    flicker = clip_flicker(clips)
    sharp = sharpness(clips)
    if zoom:
        rate = zoom_rate(clips, fps)
        zoomed = rate > ZOOM_THRESHOLD  # detects_zoom, the rate computed once

    def summary(m: np.ndarray) -> dict:
        return {
            "clips": int(m.sum()),
            "digit_accuracy": float((pred_digit[m] == digits[m]).mean()),
            "direction_accuracy": float("nan") if bounce else float((pred_direction[m] == directions[m]).mean()),
            "motion_direction_accuracy": float((motion_direction[m] == directions[m]).mean()),
            "displacement": float(speed[m].mean()),
            "expected_displacement": float(expected[m].mean()),
            "displacement_rel_error": float((np.abs(speed[m] - expected[m]) / expected[m]).mean()),
            "coherence_first_last": float(first_last[m].mean()),
            "coherence_consecutive": float(consecutive[m].mean()),
            "flicker": float(flicker[m].mean()),
            "sharpness": float(sharp[m].mean()),
            "whole": float(whole[m].mean()),
            "digit_accuracy_last16": float((last_digit[m] == digits[m]).mean()),
        } | ({} if not zoom else {
            "zoom_detected": float(zoomed[m].mean()),
            "zoom_rate": float(rate[m].mean()),
        }) | ({} if contacts is None else {
            "wall_contacts": int(contacts[m].sum()),
            "bounce_pass_rate": float(bounces[m].sum() / contacts[m].sum()) if contacts[m].sum() else float("nan"),
        })

    result = summary(np.ones(len(digits), bool))
    several = np.ptp(expected) > 0 and np.ptp(speed) > 0
    result["displacement_correlation"] = float(np.corrcoef(speed, expected)[0, 1]) if several else float("nan")
    result["per_fps"] = {f"{v:g}": summary(fps == v) for v in sorted(set(fps.tolist()))}
    for key in ("to_first", "to_last", "consecutive_by_frame"):  # per frame index: drift or a settling start
        result[f"coherence_{key}"] = crops_coherence[key]
    return result



Generator = Callable[..., np.ndarray | tuple[np.ndarray, float]]
"""generate(prompts, fps, seed[, images]) -> clips (B, F, H, W, C) in [0, 1] or uint8, or (clips, their
frame rate) when it differs from the requested one (a cascade that interpolates). ``images`` (B, H, W, 3)
uint8, when given: each clip's first frame (image-to-video)."""


def evaluation_jobs(
    prompts: Sequence[str] | None = None,
    fps_values: Sequence[float] = (8, 12, 24),
    seeds: int = 1,
    limit: int | None = None,
    bounce: bool = False,
    zoom: bool = False,
) -> list[dict]:
    """The (prompt, digit, direction, fps, seed) jobs of an evaluation: every prompt (default:
    the canonical prompts over all digits and directions, with ``bounce`` those of bouncing digits)
    at every fps and seed, optionally a fixed random subset of ``limit``. Raises ValueError for
    prompts that are not digit captions of one digit."""
    if prompts is None:
        labelled = [(p, d, r) for p, d, r in canonical_prompts(bounce=bounce, zoom=zoom)]
    else:
        labelled = []
        for prompt in prompts:
            parsed = parse_caption(prompt)
            if len(parsed) != 1:
                raise ValueError(f"evaluation prompts describe one digit: {prompt!r}")
            labelled.append((prompt, *parsed[0]))
    jobs = [
        {"prompt": p, "digit": d, "direction": r, "fps": float(f), "seed": s}
        for s in range(seeds)
        for f in fps_values
        for p, d, r in labelled
    ]
    if limit is not None and limit < len(jobs):
        keep = sorted(random.Random(0).sample(range(len(jobs)), limit))
        jobs = [jobs[i] for i in keep]
    return jobs


def evaluate_generator(
    generate: Generator,
    jobs: list[dict],
    batch_size: int = 8,
    classifier: DigitClassifier | None = None,
    progress: bool = True,
    bounce: bool = False,
    zoom: bool = False,
    first_frames: Generator | None = None,
) -> dict:
    """Generate every job's clip (batched by fps and seed) and score them with :func:`evaluate_clips`
    (``bounce``: as clips of bouncing digits; ``zoom``: of the camera zooming in). ``first_frames``:
    image-to-video: each job's clip starts from the first frame of the clip this generator makes for it
    (real held-out clips, :func:`real_clip_generator`), given to ``generate`` as ``images``; the result
    adds ``coherence_to_given`` (:func:`coherence_to_given`), overall and per fps."""
    groups: dict[tuple[float, int], list[int]] = {}
    for i, job in enumerate(jobs):
        groups.setdefault((job["fps"], job["seed"]), []).append(i)
    clips: list[np.ndarray | None] = [None] * len(jobs)
    given: list[np.ndarray | None] = [None] * len(jobs)
    clip_fps = [job["fps"] for job in jobs]
    bar = tqdm(total=len(jobs), desc="generating", disable=not progress)
    for (fps, seed), members in groups.items():
        for start in range(0, len(members), batch_size):
            chunk = members[start : start + batch_size]
            prompts, batch_seed = [jobs[i]["prompt"] for i in chunk], seed * 100003 + start
            if first_frames is None:
                out = generate(prompts, fps, batch_seed)
            else:
                images = _uint8_rgb(np.asarray(first_frames(prompts, fps, batch_seed))[:, 0])
                out = generate(prompts, fps, batch_seed, images)
                for i, image in zip(chunk, images):
                    given[i] = image
            out, out_fps = out if isinstance(out, tuple) else (out, fps)
            for i, clip in zip(chunk, np.asarray(out)):
                clips[i], clip_fps[i] = clip, out_fps
            bar.update(len(chunk))
    bar.close()
    clips, digits, directions = np.stack(clips), [j["digit"] for j in jobs], [j["direction"] for j in jobs]
    classifier = classifier or load_classifier()
    result = evaluate_clips(clips, digits, directions, clip_fps, classifier=classifier, bounce=bounce, zoom=zoom)
    if first_frames is not None:
        to_given, job_fps = coherence_to_given(np.stack(given), clips), np.asarray([j["fps"] for j in jobs])
        result["coherence_to_given"] = float(to_given.mean())
        for key, metrics in result["per_fps"].items():
            metrics["coherence_to_given"] = float(to_given[job_fps == float(key)].mean())
    factors = {round(out / job["fps"]) for out, job in zip(clip_fps, jobs)}
    if len(factors) == 1 and (factor := factors.pop()) > 1:
        # interpolated clips: the classifier's 16 frames, taken uniformly from (16 - 1) * k + 1 frames, are
        # the keyframes; score the frames between them too, phase by phase (frames j, j + k, ...)
        # (only the classifier's two accuracies: the motion, coherence and flicker are the whole clip's, above)
        result["in_between"] = {}
        digits, directions = np.asarray(digits, np.int64), _direction_indices(directions)
        for phase in range(1, factor):
            digit, direction = classify(classifier, clips[:, phase::factor])
            result["in_between"][str(phase)] = {"digit_accuracy": float((digit == digits).mean()),
                                                "direction_accuracy": float("nan") if bounce else
                                                float((direction == directions).mean())}
    return result


def round_trip_generator(vae, real: Generator, decoder: str = "image") -> Generator:
    """`real`'s clips after a round trip through `vae`: encoded, then decoded by `decoder` ("image": frame by
    frame; "video": the VideoVAE); what a keyframe model in that latent space can reach at best."""

    from ..vae import decode_latents_video, encode_video

    def generate(prompts, fps, seed):
        clips = torch.as_tensor(real(prompts, fps, seed)).float()  # floats in [0, 1]
        video = clips.permute(0, 4, 1, 2, 3) * 2 - 1  # (B, 3, F, H, W)
        with torch.no_grad():
            out = decode_latents_video(vae, encode_video(vae, video), 16, decoder=decoder)
        return ((out.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 4, 1).cpu().numpy()

    return generate


def coherence_references(jobs: list[dict], vae=None, decoders=("image",), batch_size: int = 8,
                         num_frames: int = 16, bounce: bool | None = None) -> dict:
    """The coherence and flicker of real held-out clips of `num_frames` frames for the same jobs (the
    ceiling) and of their round trip through `vae` with each of `decoders` (what the decoder allows),
    overall and per fps. `bounce`: real clips of bouncing digits (True; under the name "real_bouncing":
    e.g. for clips too long for a digit moving in a straight line to stay on the canvas), or as the
    prompts say (None)."""

    real = real_clip_generator(num_frames=num_frames, bounce=bounce)
    sources = {"real_bouncing" if bounce else "real": real} | (
        {} if vae is None else {f"vae_round_trip_{d}": round_trip_generator(vae, real, d) for d in decoders})
    keys = ("coherence_first_last", "coherence_consecutive", "flicker")
    out = {}
    for name, generate in sources.items():
        metrics = evaluate_generator(generate, jobs, batch_size, progress=False)
        out[name] = {k: metrics[k] for k in keys} | {
            "per_fps": {f: {k: v[k] for k in keys} for f, v in metrics["per_fps"].items()}}
    return out


def format_table(metrics: dict) -> str:
    """A plain-text table of :func:`evaluate_clips` metrics, one row per fps and overall."""
    cols = ("clips", "digit_accuracy", "direction_accuracy", "motion_direction_accuracy",
            "displacement", "expected_displacement", "displacement_rel_error", "coherence_first_last",
            "coherence_consecutive", "flicker", "whole", "digit_accuracy_last16")
    heads = ("fps", "clips", "digit acc", "direction acc", "motion dir acc", "disp px/f", "expected", "rel err",
             "coh first-last", "coh consec", "flicker", "whole", "digit acc last 16")
    if "bounce_pass_rate" in metrics:
        cols, heads = cols + ("wall_contacts", "bounce_pass_rate"), heads + ("wall contacts", "bounced")
    rows = [[k] + [metrics["per_fps"][k][c] for c in cols] for k in metrics["per_fps"]]
    rows.append(["all"] + [metrics[c] for c in cols])
    text = [[str(r[0]), str(r[1])] + [str(v) if isinstance(v, int) else f"{v:.3f}" for v in r[2:]] for r in rows]
    widths = [max(len(h), *(len(t[i]) for t in text)) for i, h in enumerate(heads)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(heads, widths))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(t, widths)) for t in text]
    lines.append(f"displacement correlation (measured vs expected): {metrics['displacement_correlation']:.3f}")
    for phase, scores in metrics.get("in_between", {}).items():
        lines.append(f"frames between the keyframes (phase {phase}): digit acc {scores['digit_accuracy']:.3f}, "
                     f"direction acc {scores['direction_accuracy']:.3f}")
    for name, ref in metrics.get("references", {}).items():
        lines.append(f"{name.replace('_', ' ')} (same jobs): coherence first-last {ref['coherence_first_last']:.3f}, "
                     f"consecutive {ref['coherence_consecutive']:.3f}, flicker {ref['flicker']:.3f}")
    return "\n".join(lines)


def real_clip_generator(split: str = "test", num_frames: int = 16, bounce: bool | None = None) -> Generator:
    """A stand-in generator that renders real clips of ``split`` digits for each prompt at the
    requested fps (of bouncing digits where the prompt says so, or every one with ``bounce``): the
    ceiling that :func:`evaluate_generator` scores a perfect model at."""

    def generate(prompts: list[str], fps: float, seed: int) -> np.ndarray:
        rng = random.Random(seed)
        stride = NATIVE_FPS / fps
        clips = []
        for prompt in prompts:
            (digit, direction, bounces), = parse_caption_bounces(prompt)
            spec = sample_digit_clip(rng, split, span=(num_frames - 1) * stride, digit=digit, direction=direction,
                                     bounce=bounces or bool(bounce), zoom=caption_zooms(prompt))
            clips.append(render(spec, np.arange(num_frames) * stride))
        return np.repeat(np.stack(clips)[..., None], 3, axis=-1)

    return generate


def cascade_generator(cascade, num_inference_steps: int = 25, guidance_scale: float = 7.5,
                      num_frames: int | None = None, **stages) -> Generator:
    """A :data:`Generator` from a :class:`MagicVideoCascadePipeline` (one clip at a time, seed + i) of
    `num_frames` keyframes (default: the model's); `stages` go to its call (interpolate, decoder,
    upscale, ...). Returns (clips, output fps)."""

    def generate(prompts: list[str], fps: float, seed: int, images=None):
        outs = [cascade(p, fps=fps, seed=seed + i, num_inference_steps=num_inference_steps,
                        guidance_scale=guidance_scale, num_frames=num_frames,
                        image=None if images is None else images[i], **stages)
                for i, p in enumerate(prompts)]
        return np.stack([o.frames for o in outs]), outs[0].fps

    return generate


def pipeline_generator(pipe, num_inference_steps: int = 25, guidance_scale: float = 7.5,
                       decoder: str = "video", chunk_size: int | None = None,
                       frame_lag: int | None = None, context_timestep: int | None = None,
                       num_frames: int | None = None) -> Generator:
    """A :data:`Generator` from a :class:`magicvideo.MagicVideoPipeline`: clips of `num_frames` frames
    (default: 16, or the model's frame count if it makes fewer)."""

    num_frames = num_frames or min(16, pipe.unet.config.num_frames)

    def generate(prompts: list[str], fps: float, seed: int, images=None) -> np.ndarray:
        given = None
        if images is not None:  # each clip's first frame, encoded as `image=` encodes one
            height, width = pipe.frame_size(None, None)
            given = torch.cat([pipe.encode_image(image, height, width) for image in images])
        out = pipe(
            prompts,
            num_frames=num_frames,
            fps=fps,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            generator=torch.Generator().manual_seed(seed),
            output_type="np",
            decoder=decoder,
            chunk_size=chunk_size,
            frame_lag=frame_lag,
            context_timestep=context_timestep,
            context_latents=given,
        )
        return out.frames

    return generate


# The zoom check of `eval-digits --zoom`.
# The zoom check of `eval-digits --zoom`: does the digit grow as in `digits data --zoom` (the camera zooms in)?
#
# The digit's size in a frame is the root-mean-square distance of its mass (:func:`foreground`) from its
# centre of mass, which a magnification by z about any point multiplies by z. The growth per frame is the slope of a
# least-squares line through log(size) over the clip's frames; divided by the frames a native frame is worth
# (fps / 24) it estimates the scale per native frame, which the data sets to :data:`data.ZOOM_RATE` for zoom clips
# and 1 otherwise. A clip zooms when its estimated log scale per native frame is above half of log(ZOOM_RATE), the
# midpoint between the two. Measured on real held-out clips (tests/test_digits_zoom.py; `eval-digits --real --zoom`):
# all 240 zoom clips (16 frames at 8, 12 and 24 fps) are detected and none of 240 straight ones (their estimates: 0.98
# to 1.10 and -0.03 to 0.04 of the zoom rate); written as H.264 (`digits data [--zoom]`, 48 frames at 24 fps), 120 of
# 120 and 0 of 120.
ZOOM_THRESHOLD = 0.5  # share of the data's log zoom rate above which a clip counts as zooming


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


def zoom_rate(clips, fps) -> np.ndarray:
    """(N,) :func:`zoom_share` with 0 for a clip that has no digit to measure (it does not grow)."""
    return np.nan_to_num(zoom_share(clips, fps), nan=0.0)


def detects_zoom(clips, fps) -> np.ndarray:
    """(N,) bool: the digit grows as if the camera zoomed in (see the zoom check above)."""
    return zoom_rate(clips, fps) > ZOOM_THRESHOLD
