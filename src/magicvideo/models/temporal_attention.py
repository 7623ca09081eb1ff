"""Directed temporal attention (T-Attn).

The (B * F, C, H, W) feature is viewed as one sequence of F frame tokens per spatial position
and attended over time. "Directed" means frame p attends only to frames q <= p.

Modes:
- ``"directed"`` (default): causal mask applied *before* the softmax. Strictly causal: output
  frame p is a function of input frames <= p only. (The paper writes the mask as multiplying the
  softmax output, A = softmax(QK^T / sqrt(d)) * M, without renormalising; that form is not causal,
  since the softmax normaliser of frame p still sums over the keys of later frames, so it is not
  offered.)
- ``"bidirectional"``: every frame attends to every frame (ablation).
- ``"none"``: no temporal attention at all (the model has adaptors only; ablation).

Frame positions (a config switch):
- ``"absolute"`` (default): a sinusoidal encoding of the frame index is added to every token.
- ``"relative"``: rotary embeddings (RoFormer) of the frame index turn q and k, so that the attention
  logit of frame p for frame q depends on their contents and on p - q only.

Causal sampling calls the model on a few frames at a time beside frames already finished: a
`TemporalCache` holds the keys and values of the finished frames (computed once), and
`frame_offset` gives the index of the first frame of the call within the clip.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.embeddings import get_timestep_embedding
from einops import rearrange
from torch import nn

TEMPORAL_ATTENTION_MODES = ("directed", "bidirectional", "none")
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


class TemporalCache:
    """Keys and values of finished frames, one entry per temporal attention layer.

    A causal sampler calls the U-Net on the frames it is making, beside frames already finished:
    rather than recompute the finished frames at every step, their keys and values (which depend on
    themselves and earlier frames only) are kept here. A call made with `store` = n appends the keys
    and values of its first n frames to the cache (those frames are final from then on); a call
    attends to the cached frames followed by its own. Batch layout and frame positions must match
    between the calls (the cached frames come first in the clip)."""

    def __init__(self):
        self.entries: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.num_frames = 0
        self.store = 0

    def __len__(self) -> int:
        return self.num_frames

    def attend(self, layer: nn.Module, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The keys and values (N, heads, cached + L, d) that `layer`'s call attends to; appends the first
        `store` frames of this call's own to the cache (`commit` advances the frame count)."""
        past = self.entries.get(id(layer))
        full_k, full_v = (k, v) if past is None else (torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2))
        if self.store:
            upto = self.num_frames + self.store
            self.entries[id(layer)] = (full_k[:, :, :upto], full_v[:, :, :upto])
        return full_k, full_v

    def commit(self) -> None:
        """After a call with `store` = n: the n frames are cached from now on."""
        self.num_frames += self.store
        self.store = 0


class DirectedTemporalAttention(nn.Module):
    """Multi-head self-attention over the frames at each spatial position.

    LayerNorm, a frame-position encoding (`frame_position`: a sinusoid added to the tokens, or rotary
    on q and k), q/k/v projections, attention over frames (masked according to `mode`) and an output
    projection initialised to zero, so that adding this branch to an image model leaves its output
    unchanged until trained.
    """

    def __init__(self, channels: int, num_heads: int = 8, mode: str = "directed", frame_position: str = "absolute"):
        super().__init__()
        if mode not in TEMPORAL_ATTENTION_MODES or mode == "none":
            raise ValueError(f"mode must be one of {TEMPORAL_ATTENTION_MODES[:-1]}, got {mode!r}")
        if channels % num_heads:
            raise ValueError(f"temporal attention: {channels} channels do not split into {num_heads} heads")
        if frame_position not in FRAME_POSITION_ENCODINGS:
            raise ValueError(f"frame_position must be one of {FRAME_POSITION_ENCODINGS}, got {frame_position!r}")
        if frame_position == "relative" and (channels // num_heads) % 2:
            raise ValueError(f"relative frame positions: {channels // num_heads} channels per head are not even")
        self.frame_position = frame_position
        self.mode = mode
        self.num_heads = num_heads
        self.norm = nn.LayerNorm(channels)
        self.to_q = nn.Linear(channels, channels, bias=False)
        self.to_k = nn.Linear(channels, channels, bias=False)
        self.to_v = nn.Linear(channels, channels, bias=False)
        self.to_out = nn.Linear(channels, channels)
        nn.init.zeros_(self.to_out.weight)
        nn.init.zeros_(self.to_out.bias)

    def forward(self, x: torch.Tensor, num_frames: int, frame_offset: int = 0,
                cache: TemporalCache | None = None) -> torch.Tensor:
        """`x` is (batch * num_frames, C, H, W), frames folded into the batch; its frames are frames
        `frame_offset`, ... of the clip. With a `cache` (directed mode only), they also attend to the
        cached earlier frames."""
        f, (_, c, h, w) = num_frames, x.shape
        frame = torch.arange(frame_offset, frame_offset + f, device=x.device)
        absolute = self.frame_position == "absolute"
        position = get_timestep_embedding(frame, c, flip_sin_to_cos=True).to(x.dtype) if absolute else 0
        tokens = self.norm(rearrange(x, "(b f) c h w -> (b h w) f c", f=f)) + position
        q, k, v = (
            rearrange(proj(tokens), "n l (heads d) -> n heads l d", heads=self.num_heads)
            for proj in (self.to_q, self.to_k, self.to_v)
        )
        if not absolute:
            q, k = rotate_by_frame(q, frame), rotate_by_frame(k, frame)
        if self.mode == "bidirectional":
            if cache is not None:
                raise ValueError("a temporal cache needs directed (causal) temporal attention")
            out = F.scaled_dot_product_attention(q, k, v)
        elif cache is None or len(cache) == 0 and not cache.store:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            past = len(cache)
            k, v = cache.attend(self, k, v)
            # query i (frame past + i) sees keys 0 ... past + i
            visible = torch.ones(f, past + f, dtype=torch.bool, device=x.device).tril(past)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=visible)
        out = rearrange(out, "n heads l d -> n l (heads d)")
        return rearrange(self.to_out(out), "(b h w) f c -> (b f) c h w", f=f, h=h, w=w)
