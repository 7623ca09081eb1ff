"""The 3D U-Net's blocks: diffusers' 2D U-Net blocks run with the frame count as an argument.

`MagicVideoUNet3D` is built from the modules of `UNet2DConditionModel` (same names, so Stable
Diffusion weights load unchanged), inflated at construction: every `nn.Conv2d` becomes a
`FrameAdaptedConv2d`, every `Transformer2DModel` a `SpatioTemporalTransformer`. Diffusers' block
`forward`s cannot pass the clip's frame count down to those modules, so the functions here run the
blocks' parts in the order diffusers does, with `num_frames` passed explicitly (as diffusers'
`UNetMotionModel` does for its motion modules). Nothing about the clip is stored on a module:
one model can serve clips of different lengths from several threads at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from diffusers.models.transformers.transformer_2d import Transformer2DModel

from .adaptor import FrameAdaptedConv2d
from .temporal_attention import DirectedTemporalAttention, TemporalCache

SUPPORTED_BLOCKS = {
    "down": ("CrossAttnDownBlock2D", "DownBlock2D"),
    "mid": ("UNetMidBlock2DCrossAttn", "UNetMidBlock2D", None),
    "up": ("CrossAttnUpBlock2D", "UpBlock2D"),
}


class SpatioTemporalTransformer(Transformer2DModel):
    """A spatial transformer with directed temporal attention in parallel: S-Attn(z) + T-Attn(z).

    S-Attn(z) is `Transformer2DModel`'s continuous-input path (it adds its input back); its 1x1
    convolutions (`proj_in`, `proj_out`) are frame-adapted like every other convolution.
    `temporal_attention` is None in the "none" ablation.
    """

    temporal_attention: DirectedTemporalAttention | None  # set by inflate (a class default would hide the module)

    @classmethod
    def inflate(cls, transformer: Transformer2DModel, temporal_attention: DirectedTemporalAttention | None):
        """The spatio-temporal twin of `transformer`, adopting its modules (and so its weights)."""
        new = cls(**{key: value for key, value in transformer.config.items() if not key.startswith("_")})
        for name, child in transformer.named_children():
            setattr(new, name, child)
        new.temporal_attention = temporal_attention
        return new.to(transformer.device)

    def forward(self, x: torch.Tensor, inputs: "FrameInputs") -> torch.Tensor:
        batch, _, height, width = x.shape
        h = self.norm(x)
        if not self.use_linear_projection:
            h = _conv(self.proj_in, h, inputs)
        h = h.permute(0, 2, 3, 1).reshape(batch, height * width, h.shape[1])
        if self.use_linear_projection:
            h = self.proj_in(h)
        for block in self.transformer_blocks:
            h = block(h, encoder_hidden_states=inputs.encoder_hidden_states,
                      cross_attention_kwargs=inputs.cross_attention_kwargs,
                      encoder_attention_mask=inputs.encoder_attention_mask)
        if self.use_linear_projection:
            h = self.proj_out(h)
        h = h.reshape(batch, height, width, h.shape[-1]).permute(0, 3, 1, 2).contiguous()
        if not self.use_linear_projection:
            h = _conv(self.proj_out, h, inputs)
        out = h + x
        if self.temporal_attention is not None:
            out = out + self.temporal_attention(x, inputs.num_frames, inputs.frame_offset, inputs.cache)
        return out


def _conv(conv, x, inputs: "FrameInputs"):
    # a frame-wise convolution, or a wrapper of one (a peft LoRA layer, `magicvideo.lora`), takes the frame count
    frame_wise = isinstance(getattr(conv, "get_base_layer", lambda: conv)(), FrameAdaptedConv2d)
    return conv(x, inputs.num_frames, inputs.frame_offset) if frame_wise else conv(x)


@dataclass(frozen=True)
class FrameInputs:
    """What every block of one U-Net call needs besides its hidden states."""

    num_frames: int
    temb: torch.Tensor                      # (batch * frames, D)
    encoder_hidden_states: torch.Tensor | None  # (batch * frames, L, D)
    cross_attention_kwargs: dict | None = None
    encoder_attention_mask: torch.Tensor | None = None  # additive bias, (batch * frames, 1, L)
    checkpoint: Callable | None = None      # gradient checkpointing function, or None
    cache: TemporalCache | None = None      # finished earlier frames (causal sampling)

    @property
    def frame_offset(self) -> int:
        """The index of the call's first frame in the clip: the frames before it are in the cache."""
        return 0 if self.cache is None else len(self.cache)

    def run(self, fn, *args):
        return self.checkpoint(fn, *args) if self.checkpoint is not None else fn(*args)


def resnet(block, x: torch.Tensor, temb: torch.Tensor, inputs: FrameInputs) -> torch.Tensor:
    """`ResnetBlock2D.forward` with frame-adapted convolutions."""
    if block.upsample is not None or block.downsample is not None:
        raise NotImplementedError("resnet blocks that resample are not supported by the 3D U-Net")
    h = block.nonlinearity(block.norm1(x))
    h = _conv(block.conv1, h, inputs)
    if block.time_emb_proj is not None:
        t = temb if block.skip_time_act else block.nonlinearity(temb)
        t = block.time_emb_proj(t)[:, :, None, None]
    if block.time_embedding_norm == "default":
        h = block.norm2(h + t if block.time_emb_proj is not None else h)
    elif block.time_embedding_norm == "scale_shift":
        scale, shift = t.chunk(2, dim=1)
        h = block.norm2(h) * (1 + scale) + shift
    else:
        h = block.norm2(h)
    h = _conv(block.conv2, block.dropout(block.nonlinearity(h)), inputs)
    if block.conv_shortcut is not None:
        x = _conv(block.conv_shortcut, x, inputs)
    out = x + h
    return out if block.output_scale_factor == 1 else out / block.output_scale_factor


def transformer(block: SpatioTemporalTransformer, x: torch.Tensor, inputs: FrameInputs) -> torch.Tensor:
    return inputs.run(lambda h: block(h, inputs), x)


def _resnet(block, x, inputs: FrameInputs):
    return inputs.run(lambda h, temb: resnet(block, h, temb, inputs), x, inputs.temb)


def down_block(block, x: torch.Tensor, inputs: FrameInputs) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """`CrossAttnDownBlock2D` / `DownBlock2D`: returns the output and the skip connections."""
    skips = ()
    attentions = getattr(block, "attentions", None) or [None] * len(block.resnets)
    for res, attn in zip(block.resnets, attentions):
        x = _resnet(res, x, inputs)
        if attn is not None:
            x = transformer(attn, x, inputs)
        skips += (x,)
    for down in block.downsamplers or []:
        if down.norm is not None or not down.use_conv:
            raise NotImplementedError("only convolutional downsamplers without norm are supported")
        if down.padding == 0:
            x = F.pad(x, (0, 1, 0, 1), mode="constant", value=0)
        x = _conv(down.conv, x, inputs)
        skips += (x,)
    return x, skips


def mid_block(block, x: torch.Tensor, inputs: FrameInputs) -> torch.Tensor:
    """`UNetMidBlock2DCrossAttn` / `UNetMidBlock2D` (without its optional self-attention)."""
    x = _resnet(block.resnets[0], x, inputs)
    for attn, res in zip(block.attentions, block.resnets[1:]):
        if attn is not None:
            x = transformer(attn, x, inputs)
        x = _resnet(res, x, inputs)
    return x


def up_block(block, x: torch.Tensor, skips: tuple[torch.Tensor, ...], inputs: FrameInputs,
             upsample_size=None) -> torch.Tensor:
    """`CrossAttnUpBlock2D` / `UpBlock2D`, consuming `skips` from the last."""
    attentions = getattr(block, "attentions", None) or [None] * len(block.resnets)
    for res, attn, skip in zip(block.resnets, attentions, reversed(skips)):
        x = _resnet(res, torch.cat([x, skip], dim=1), inputs)
        if attn is not None:
            x = transformer(attn, x, inputs)
    for up in block.upsamplers or []:
        if up.norm is not None or up.use_conv_transpose or not up.interpolate or not up.use_conv:
            raise NotImplementedError("only nearest-neighbour upsamplers with a convolution are supported")
        if upsample_size is None:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        else:
            x = F.interpolate(x, size=upsample_size, mode="nearest")
        x = _conv(up.conv, x, inputs)
    return x
