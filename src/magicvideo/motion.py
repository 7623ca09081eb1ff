"""Global (rigid) motion between consecutive frames, and frame differences after compensating it.

Moving digits translate rigidly at sub-pixel speeds, so the motion between two frames is one shift
(dy, dx): the best integer shift within +-radius, refined to 1/16 px by Fourier (band-limited,
periodic) shifts. Used by the aligned VideoVAE to move earlier frames onto the current one
(models/video_vae.py), to measure flicker that does not punish real motion (scripts/
measure_video_vae.py) and, in the VideoVAE's training, as the warp of a temporal-consistency loss.
"""

from __future__ import annotations

import torch


def fourier_shift(images: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """images (N, H, W) moved by shifts (N, K, 2) = (dy, dx) pixels (periodic, band-limited) -> (N, K, H, W)."""
    h, w = images.shape[-2:]
    spectrum = torch.fft.rfft2(images)[:, None]
    ky = torch.fft.fftfreq(h, device=images.device)[:, None]
    kx = torch.fft.rfftfreq(w, device=images.device)[None, :]
    phase = torch.exp(-2j * torch.pi * (ky * shifts[..., 0, None, None] + kx * shifts[..., 1, None, None]))
    return torch.fft.irfft2(spectrum * phase, s=(h, w))


def integer_shifts(clips: torch.Tensor, radius: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Best integer shift (dy, dx) of x[f] onto x[f+1] and its residual (mean |.| over the interior);
    clips (B, F, H, W) -> residual (B, F - 1), shifts (B, F - 1, 2)."""
    b, f, h, w = clips.shape
    r = radius
    inner = clips[:, 1:, r:h - r, r:w - r]
    best = torch.full((b, f - 1), float("inf"), device=clips.device)
    arg = torch.zeros(b, f - 1, 2, device=clips.device)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            shifted = clips[:, :-1, r - dy:h - r - dy, r - dx:w - r - dx]  # x[f] moved by (dy, dx)
            err = (inner - shifted).abs().flatten(2).mean(2)
            better = err < best
            best = torch.where(better, err, best)
            arg[better] = torch.tensor([float(dy), float(dx)], device=clips.device)
    return best, arg


@torch.no_grad()
def global_shifts(clips: torch.Tensor, radius: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """Sub-pixel shift of x[f] onto x[f+1] and its residual: clips (B, F, H, W) -> residual
    (B, F - 1), shifts (B, F - 1, 2). The residual is the smaller of the integer and the refined one
    (the shift returned with it)."""
    best, arg = integer_shifts(clips, radius)
    b, f, h, w = clips.shape
    r = radius
    first, second = clips[:, :-1].reshape(-1, h, w), clips[:, 1:].reshape(-1, h, w)
    centre, values, found = arg.reshape(-1, 2), [], []
    for i in range(0, len(first), 64):
        a, target, c = first[i:i + 64], second[i:i + 64, r:h - r, r:w - r], centre[i:i + 64]
        for step in (0.25, 1 / 16):
            grid = torch.arange(-2, 3, device=clips.device) * step  # +-0.5 px, then +-0.125 px
            offsets = torch.stack(torch.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 2)
            shifts = c[:, None] + offsets[None]
            err = (fourier_shift(a, shifts)[..., r:h - r, r:w - r] - target[:, None]).abs().flatten(2).mean(2)
            index = err.argmin(1)
            rows = torch.arange(len(a), device=clips.device)
            c, value = shifts[rows, index], err[rows, index]
        values.append(value)
        found.append(c)
    refined, shifts = torch.cat(values).view(b, f - 1), torch.cat(found).view(b, f - 1, 2)
    use_integer = best <= refined
    shifts = torch.where(use_integer[..., None], arg, shifts)
    return torch.minimum(refined, best), shifts


def motion_compensated_flicker(clips: torch.Tensor, radius: int = 6, subpixel: bool = True) -> torch.Tensor:
    """Per clip: mean over consecutive pairs of min over shifts |x[f+1] - shift(x[f])| (interior
    pixels, `radius` px margin), in 8-bit levels; clips (B, F, H, W) in [0, 1]. The best integer
    shift within +-radius, then (`subpixel`) refined to 1/16 px by Fourier shifts: the digits move
    0.75 px per native frame, rendered at sub-pixel positions, so integer shifts leave a residual."""
    residual = global_shifts(clips, radius)[0] if subpixel else integer_shifts(clips, radius)[0]
    return residual.mean(1) * 255


def warped_difference(frames: torch.Tensor, shifts: torch.Tensor, radius: int = 6) -> torch.Tensor:
    """Mean |x[f+1] - shift(x[f])| over the interior (`radius` px margin) with given shifts; frames
    (B, C, F, H, W), shifts (B, F - 1, 2). Differentiable in `frames`: a temporal-consistency loss."""
    b, c, f, h, w = frames.shape
    r = radius
    previous = frames[:, :, :-1].transpose(1, 2).reshape(-1, h, w)  # (B * (F-1) * C, H, W)
    moved = fourier_shift(previous, shifts.repeat_interleave(c, dim=1).reshape(-1, 1, 2))[:, 0]
    moved = moved.view(b, f - 1, c, h, w)
    following = frames[:, :, 1:].transpose(1, 2)
    return (following - moved)[..., r:h - r, r:w - r].abs().mean()
