"""First-frame spatial attention: every frame's spatial self-attention also sees frame 0's tokens.

Beyond the paper (an option of `MagicVideoUNet3D`: ``spatial_attention="first_frame"``; the paper's
per-frame spatial attention is ``"frame"``, the default). In the spirit of Tune-A-Video's sparse-causal
attention and Text2Video-Zero's cross-frame attention, the keys and values of the spatial
self-attention of frame f are the tokens of frame f *and* of frame 0, so the subject's appearance is
anchored to the first frame through weights the image model already has (no new parameters).

Properties: frame 0 attends to its own tokens twice, which gives exactly its per-frame output
(duplicated keys keep the softmax weights' ratios); frame f depends on frames 0 and f only, so the
attention stays directed (causal).
"""

from __future__ import annotations

import torch
from diffusers.models.attention_processor import AttnProcessor2_0
from einops import rearrange

SPATIAL_ATTENTION_MODES = ("frame", "first_frame")


class FirstFrameAttnProcessor(AttnProcessor2_0):
    """`AttnProcessor2_0` whose self-attention keys/values are [own frame's tokens, frame 0's tokens].

    Cross-attention (text: `encoder_hidden_states` given) is unchanged. `num_frames` arrives through
    `cross_attention_kwargs` (the spatio-temporal transformer adds it)."""

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 num_frames: int | None = None, **kwargs) -> torch.Tensor:
        if encoder_hidden_states is None and num_frames is not None:
            frames = rearrange(hidden_states, "(b f) n c -> b f n c", f=num_frames)
            first = frames[:, :1].expand_as(frames)
            encoder_hidden_states = rearrange(torch.cat([frames, first], dim=2), "b f n c -> (b f) n c")
        return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
