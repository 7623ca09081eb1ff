"""Global motion between frames (motion.py): known-answer shifts and the warp loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from magicvideo.motion import fourier_shift, global_shifts, motion_compensated_flicker, warped_difference


def moving_blob(shifts: torch.Tensor) -> torch.Tensor:
    """(F, 64, 64): a smooth square moved by the cumulative `shifts` (F, 2) = (dy, dx) per frame."""
    square = torch.zeros(1, 1, 64, 64)
    square[..., 24:40, 20:36] = 1.0
    square = F.avg_pool2d(square, 5, 1, 2)[0]
    return fourier_shift(square, shifts.cumsum(0)[None])[0]


def test_global_shifts_recover_sub_pixel_motion():
    steps = torch.tensor([[0.0, 0.0], [0.75, -0.5], [-1.25, 2.0], [3.0, 0.1875]])
    frames = moving_blob(steps)
    residual, shifts = global_shifts(frames[None])
    assert torch.allclose(shifts[0], steps[1:], atol=1e-6)
    assert residual.max() < 1e-5
    # the flicker measure of a rigidly moving clip is (near) zero, and not for a changing one
    assert motion_compensated_flicker(frames[None]).item() < 1e-3
    changed = frames.clone()
    changed[2, 30:34, 26:30] += 0.5
    assert motion_compensated_flicker(changed[None]).item() > 0.1


def test_warped_difference_is_a_consistency_loss():
    steps = torch.tensor([[0.0, 0.0], [0.5, 0.25], [0.5, 0.25]])
    clip = moving_blob(steps)[None, None].repeat(2, 3, 1, 1, 1).requires_grad_(True)  # (B, C, F, H, W)
    true = steps[1:][None].repeat(2, 1, 1)
    assert warped_difference(clip, true).item() < 1e-6
    loss = warped_difference(clip, torch.zeros_like(true))
    assert loss.item() > 1e-3
    loss.backward()
    assert clip.grad.abs().sum() > 0
