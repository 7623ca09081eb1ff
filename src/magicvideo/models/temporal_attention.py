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

Scopes (beyond the paper, a config switch; issue #13):
- ``"position"`` (default, the paper): a token attends to the other frames' tokens at its own
  spatial position, a sequence of F tokens.
- ``"space_time"``: a token attends to every spatial token of the frames it may see (all frames'
  for "bidirectional", frames q <= p for the directed modes), a sequence of F * H * W tokens, so
  that it can follow content that moves between frames. Same weights as "position": a trained
  model can be switched. With ``spatial_position=True`` the space-time tokens also carry a 2D
  sinusoidal encoding of their (row, column), as ViViT's and Latte's space-time tokens do, so that
  attention can tell where in the frame a token sits (the "position" scope has no need: its
  sequence is one position).

Frame positions (beyond the paper, a config switch; issue #13):
- ``"absolute"`` (default): a sinusoidal encoding of the frame index is added to every token.
- ``"relative"``: rotary embeddings (RoFormer) of the frame index turn q and k, so that the attention
  logit of frame p for frame q depends on their contents and on p - q only, and nothing about the
  frame index enters the values: "take from the frame before" is the same operation at every frame.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.embeddings import get_timestep_embedding
from einops import rearrange
from torch import nn

TEMPORAL_ATTENTION_MODES = ("directed", "directed_post_softmax", "bidirectional", "none")
TEMPORAL_ATTENTION_SCOPES = ("position", "space_time")
FRAME_POSITION_ENCODINGS = ("absolute", "relative")


def rotate_by_frame(x: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding: x (..., L, d) turned by angle frame * 10000^(-2i/d) in its (i, i + d/2)
    channel pairs, `frame` (L,) the frame index of each token; rotate(q, p) . rotate(k, q) depends on
    p - q only."""
    half = x.shape[-1] // 2
    freqs = 10000.0 ** (-torch.arange(half, device=x.device, dtype=torch.float32) / half)
    angle = frame.to(torch.float32)[:, None] * freqs[None]
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def temporal_attention(q, k, v, mode: str, tokens_per_frame: int = 1) -> torch.Tensor:
    """Multi-head attention over frames; q, k, v are (N, heads, L, d), L = frames * tokens_per_frame,
    frame by frame (token i is frame i // tokens_per_frame); the directed modes let a token see the
    tokens of its own and earlier frames."""
    if mode == "bidirectional":
        return F.scaled_dot_product_attention(q, k, v)
    if mode == "directed" and tokens_per_frame == 1:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    if mode == "directed":  # frame by frame, each against the keys up to its own frame: the same result as one
        n = tokens_per_frame  # call with a (L, L) mask, about 0.45x its time (benchmarks/space_time_attention.py)
        return torch.cat([F.scaled_dot_product_attention(q[..., i:i + n, :], k[..., :i + n, :], v[..., :i + n, :])
                          for i in range(0, q.shape[-2], n)], dim=-2)
    if mode == "directed_post_softmax":
        frame = torch.arange(q.shape[-2], device=q.device) // tokens_per_frame
        visible = frame[None, :] <= frame[:, None]  # (query, key)
        weights = torch.softmax(q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5, dim=-1)
        return (weights * visible) @ v
    raise ValueError(f"temporal_attention must be one of {TEMPORAL_ATTENTION_MODES}, got {mode!r}")


def spatial_position_encoding(height: int, width: int, channels: int, device=None) -> torch.Tensor:
    """(height * width, channels), rows then columns: half the channels encode the row, half the column
    (the sinusoidal encoding of the frame index, applied to each axis)."""
    rows, cols = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij")
    return torch.cat([get_timestep_embedding(axis.reshape(-1), channels // 2, flip_sin_to_cos=True)
                      for axis in (rows, cols)], dim=-1)


class DirectedTemporalAttention(nn.Module):
    """Multi-head self-attention over the frames at each spatial position (`scope="position"`) or
    over all the tokens of the frames (`scope="space_time"`).

    LayerNorm, a frame-position encoding (`frame_position`: a sinusoid added to the tokens, or rotary
    on q and k), q/k/v projections, attention over frames (masked according to `mode`) and an output
    projection initialised to zero, so that adding this branch to an image model leaves its output
    unchanged until trained.
    """

    def __init__(self, channels: int, num_heads: int = 8, mode: str = "directed", scope: str = "position",
                 spatial_position: bool = False, frame_position: str = "absolute"):
        super().__init__()
        if mode not in TEMPORAL_ATTENTION_MODES or mode == "none":
            raise ValueError(f"mode must be one of {TEMPORAL_ATTENTION_MODES[:-1]}, got {mode!r}")
        if scope not in TEMPORAL_ATTENTION_SCOPES:
            raise ValueError(f"scope must be one of {TEMPORAL_ATTENTION_SCOPES}, got {scope!r}")
        if channels % num_heads:
            raise ValueError(f"temporal attention: {channels} channels do not split into {num_heads} heads")
        if spatial_position and channels % 4:
            raise ValueError(f"spatial position encoding: {channels} channels are not a multiple of 4")
        if frame_position not in FRAME_POSITION_ENCODINGS:
            raise ValueError(f"frame_position must be one of {FRAME_POSITION_ENCODINGS}, got {frame_position!r}")
        if frame_position == "relative" and (channels // num_heads) % 2:
            raise ValueError(f"relative frame positions: {channels // num_heads} channels per head are not even")
        self.frame_position = frame_position
        self.mode = mode
        self.spatial_position = spatial_position
        self.scope = scope
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
        frame = torch.arange(f, device=x.device)
        if self.scope == "position":  # a sequence of frames at each spatial position
            sequences, tokens_per_frame = "(b h w) f c", 1
        else:  # one sequence of all the clip's tokens
            sequences, tokens_per_frame = "b (f h w) c", h * w
        token_frame = frame.repeat_interleave(tokens_per_frame)
        absolute = self.frame_position == "absolute"
        position = get_timestep_embedding(token_frame, c, flip_sin_to_cos=True).to(x.dtype) if absolute else 0
        if self.scope == "space_time" and self.spatial_position:
            position = position + spatial_position_encoding(h, w, c, x.device).to(x.dtype).repeat(f, 1)
        tokens = self.norm(rearrange(x, f"(b f) c h w -> {sequences}", f=f)) + position
        q, k, v = (
            rearrange(proj(tokens), "n l (heads d) -> n heads l d", heads=self.num_heads)
            for proj in (self.to_q, self.to_k, self.to_v)
        )
        if not absolute:
            q, k = rotate_by_frame(q, token_frame), rotate_by_frame(k, token_frame)
        out = rearrange(temporal_attention(q, k, v, self.mode, tokens_per_frame), "n heads l d -> n l (heads d)")
        return rearrange(self.to_out(out), f"{sequences} -> (b f) c h w", f=f, h=h, w=w)
