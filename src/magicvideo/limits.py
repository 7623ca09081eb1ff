"""The stated size limit of a run: what no user means unless they say so (`allow_large`, `--allow-large`).

A model is trained at one frame size (the bundled digits models: 64x64); memory and time grow with
the area of a frame (its spatial attention with the square of the area), so a frame of more than
`AREA_FACTOR` times the trained area (4x each side: 256x256 for the bundled models) is refused. Work
that the networks take in one batch (the windows of an interpolation) also grows with the number of
frames: more than `AREA_FACTOR` times the trained clip (frames x area) is refused as well. Both are
per-frame estimates, so they stay meaningful for clips longer than a model's window. The commands
check before any work starts and say the estimate in the message.
"""

from __future__ import annotations

from .errors import InvalidArgumentError

AREA_FACTOR = 16
OVERRIDE = "allow_large / --allow-large runs it anyway"


def check_size(height: int, width: int, trained_height: int, trained_width: int, *, allow_large: bool = False,
               latent_factor: int = 1, frames: int | None = None, trained_frames: int | None = None,
               arguments: tuple[str, str] = ("height", "width"), frames_argument: str = "num_frames") -> None:
    """Refuse `height` x `width` frames of more than `AREA_FACTOR` times the trained area and, when
    `frames` and `trained_frames` are given, a clip of more than `AREA_FACTOR` times the trained clip's
    frames x area, unless `allow_large`. `latent_factor`: pixels per latent pixel (for the message);
    `arguments`: the names of the height and width arguments (the one that is furthest above the
    trained size is named)."""
    if allow_large:
        return
    ratio = height * width / (trained_height * trained_width)
    size = f"{width}x{height}"
    if latent_factor > 1:
        size += f" ({width // latent_factor}x{height // latent_factor} latents)"
    if ratio > AREA_FACTOR:
        argument = arguments[0] if height / trained_height > width / trained_width else arguments[1]
        side = int(AREA_FACTOR**0.5)
        raise InvalidArgumentError(argument, f"frames of {size} are {ratio:,.1f}x the area of the "
                                   f"{trained_width}x{trained_height} frames this model was trained at; the limit is "
                                   f"{AREA_FACTOR}x (e.g. {side * trained_width}x{side * trained_height}): memory and "
                                   f"time grow with the area, spatial attention with its square ({OVERRIDE})")
    if frames is not None and trained_frames is not None and frames * ratio > AREA_FACTOR * trained_frames:
        raise InvalidArgumentError(frames_argument, f"{frames} frames of {size}, taken in one batch, are "
                                   f"{frames * ratio / trained_frames:,.1f}x the {trained_frames} frames of "
                                   f"{trained_width}x{trained_height} this model was trained on; the limit is "
                                   f"{AREA_FACTOR}x: memory grows with frames x area ({OVERRIDE})")
