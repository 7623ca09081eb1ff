"""Directed temporal attention (T-Attn).

The (B * F, C, H, W) feature is viewed as one sequence of F frame tokens per spatial position
and attended over time. "Directed" means frame p attends only to frames q <= p.

Modes:
- ``"directed"`` (default): causal mask applied *before* the softmax. Strictly causal: output
  frame p is a function of input frames <= p only.
- ``"directed_post_softmax"``: the paper's literal form A = softmax(QK^T / sqrt(d)) * M, with the
  mask applied *after* the softmax and no renormalisation. It is not strictly causal: the softmax
  normaliser of frame p still sums over the keys of later frames, so later frames change how much
  frame p takes from earlier ones.
- ``"bidirectional"``: every frame attends to every frame (ablation).
- ``"none"``: no temporal attention at all (the model has adaptors only; ablation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.embeddings import get_timestep_embedding
from einops import rearrange
from torch import nn

TEMPORAL_ATTENTION_MODES = ("directed", "directed_post_softmax", "bidirectional", "none")


def temporal_attention(q, k, v, mode: str) -> torch.Tensor:
    """Multi-head attention over frames; q, k, v are (N, heads, F, d)."""
    if mode == "directed":
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    if mode == "bidirectional":
        return F.scaled_dot_product_attention(q, k, v)
    if mode == "directed_post_softmax":
        frames = q.shape[-2]
        weights = torch.softmax(q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5, dim=-1)
        mask = torch.ones(frames, frames, dtype=torch.bool, device=q.device).tril()
        return (weights * mask) @ v
    raise ValueError(f"temporal_attention must be one of {TEMPORAL_ATTENTION_MODES}, got {mode!r}")


class DirectedTemporalAttention(nn.Module):
    """Multi-head self-attention over the frames at each spatial position.

    LayerNorm, a sinusoidal frame-position encoding, q/k/v projections, attention over frames
    (masked according to `mode`) and an output projection initialised to zero, so that adding
    this branch to an image model leaves its output unchanged until trained.
    """

    def __init__(self, channels: int, num_heads: int = 8, mode: str = "directed"):
        super().__init__()
        if mode not in TEMPORAL_ATTENTION_MODES or mode == "none":
            raise ValueError(f"mode must be one of {TEMPORAL_ATTENTION_MODES[:-1]}, got {mode!r}")
        if channels % num_heads:
            raise ValueError(f"temporal attention: {channels} channels do not split into {num_heads} heads")
        self.mode = mode
        self.num_heads = num_heads
        self.norm = nn.LayerNorm(channels)
        self.to_q = nn.Linear(channels, channels, bias=False)
        self.to_k = nn.Linear(channels, channels, bias=False)
        self.to_v = nn.Linear(channels, channels, bias=False)
        self.to_out = nn.Linear(channels, channels)
        nn.init.zeros_(self.to_out.weight)
        nn.init.zeros_(self.to_out.bias)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        """`x` is (batch * num_frames, C, H, W), frames folded into the batch."""
        f, (_, c, h, w) = num_frames, x.shape
        tokens = rearrange(x, "(b f) c h w -> (b h w) f c", f=f)
        position = get_timestep_embedding(torch.arange(f, device=x.device), c, flip_sin_to_cos=True)
        tokens = self.norm(tokens) + position.to(tokens.dtype)
        q, k, v = (
            rearrange(proj(tokens), "n f (heads d) -> n heads f d", heads=self.num_heads)
            for proj in (self.to_q, self.to_k, self.to_v)
        )
        out = rearrange(temporal_attention(q, k, v, self.mode), "n heads f d -> n f (heads d)")
        return rearrange(self.to_out(out), "(b h w) f c -> (b f) c h w", h=h, w=w)
