"""The MagicVideo 3D U-Net: the keyframe denoiser eps_theta(z_t, t, tau(y), v).

A Stable-Diffusion-compatible 2D U-Net (diffusers' `UNet2DConditionModel` layout and parameter
names) applied to every frame, inflated with
- a frame-wise adaptor after every 2D convolution (`adaptor.py`),
- directed temporal attention in parallel with every spatial transformer:
  z = S-Attn(z) + T-Attn(z) (`temporal_attention.py`, `unet_3d_blocks.py`),
- an FPS embedding Linear(SiLU(Linear(Sin(v)))) added to the timestep embedding.
There are no 3D or temporal convolutions in the paper's design (`temporal_convolution`, beyond the
paper, adds a causal one beside res-blocks). With the adaptors at identity, the temporal output
projections at zero and the FPS embedding's last layer at zero (their initial values), the model
equals the 2D U-Net applied to each frame. The clip's frame count is read from the input's shape
and passed down explicitly; no module keeps per-call state.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from diffusers import UNet2DConditionModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.attention_processor import AttnProcessor2_0
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from diffusers.utils import BaseOutput
from einops import rearrange, repeat

from .adaptor import add_frame_adaptors
from .first_frame_attention import SPATIAL_ATTENTION_MODES, FirstFrameAttnProcessor
from .temporal_attention import (
    FRAME_POSITION_ENCODINGS,
    TEMPORAL_ATTENTION_MODES,
    TEMPORAL_ATTENTION_SCOPES,
    DirectedTemporalAttention,
)
from .temporal_convolution import CausalTemporalConvolution
from .unet_3d_blocks import SUPPORTED_BLOCKS, FrameInputs, SpatioTemporalTransformer, down_block, mid_block, up_block

# The subset of UNet2DConditionModel's configuration that the 3D U-Net supports (Stable Diffusion
# 1.x / 2.x, plus class and timestep-condition embeddings).
SPATIAL_CONFIG_KEYS = (
    "sample_size", "in_channels", "out_channels", "center_input_sample", "flip_sin_to_cos", "freq_shift",
    "down_block_types", "mid_block_type", "up_block_types", "only_cross_attention", "block_out_channels",
    "layers_per_block", "downsample_padding", "mid_block_scale_factor", "act_fn", "norm_num_groups",
    "norm_eps", "cross_attention_dim", "transformer_layers_per_block", "attention_head_dim",
    "num_attention_heads", "use_linear_projection", "upcast_attention", "resnet_time_scale_shift",
    "class_embed_type", "num_class_embeds", "time_cond_proj_dim",
)


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def _per_frame(x: torch.Tensor | None, frames: int) -> torch.Tensor | None:
    """A per-clip tensor (B, ...) repeated for each frame: (B * F, ...), frames folded as (b f)."""
    return None if x is None else repeat(x, "b ... -> (b f) ...", f=frames)


def _per_level(flags: bool | tuple[bool, ...], levels: int, name: str) -> tuple[bool, ...]:
    """One flag per down block (the up blocks mirror them, the mid block takes the last)."""
    flags = (flags,) * levels if isinstance(flags, bool) else tuple(flags)
    if len(flags) != levels:
        raise ValueError(f"{name}: one flag per down block ({levels}), got {flags!r}")
    return flags


def _folded(x: torch.Tensor) -> torch.Tensor:
    """A (B, C, F, H, W) feature folded to (B * F, C, H, W); folded features pass unchanged."""
    return rearrange(x, "b c f h w -> (b f) c h w") if x.ndim == 5 else x


@dataclass
class MagicVideoUNet3DOutput(BaseOutput):
    """`sample`: the predicted noise, (B, C, F, H, W)."""

    sample: torch.Tensor


class MagicVideoUNet3D(ModelMixin, ConfigMixin):
    """MagicVideo's 3D U-Net. `sample` is (B, C, F, H, W) with F <= `num_frames`.

    Spatial arguments are those of diffusers' `UNet2DConditionModel`. MagicVideo's own:
    `num_frames` (number of per-frame adaptor entries), `temporal_attention` (one of
    "directed", "directed_post_softmax", "bidirectional", "none"), `temporal_attention_heads`,
    `use_fps_embedding`, `spatial_attention` ("frame": the paper's per-frame spatial attention;
    "first_frame": keys/values also from frame 0, see `first_frame_attention.py`),
    `temporal_attention_scope` ("position": the paper's attention over the frames at each spatial
    position; "space_time": over all the tokens of the visible frames, see `temporal_attention.py`),
    `space_time_attention` (one flag, or one per down block, mirrored by the up blocks, the mid block
    taking the last: a second, zero-initialised temporal branch of scope "space_time" beside the
    temporal attention of those levels; beyond the paper, see `with_new_layers`),
    `spatial_position_encoding` (space-time attentions also encode each token's row and column),
    `temporal_convolution` (one flag, or one per down block as `space_time_attention`: a zero-initialised
    causal space-time convolution beside every res-block of those levels; beyond the paper, see
    `temporal_convolution.py`), `temporal_position_encoding` ("absolute": the frame index's sinusoid
    added to the tokens; "relative": rotary embeddings, logits that depend on frame distance only; see
    `temporal_attention.py`).
    """

    _supports_gradient_checkpointing = True
    _no_split_modules = ["BasicTransformerBlock", "ResnetBlock2D", "DirectedTemporalAttention"]

    @register_to_config
    def __init__(
        self,
        sample_size: int | None = None,
        in_channels: int = 4,
        out_channels: int = 4,
        center_input_sample: bool = False,
        flip_sin_to_cos: bool = True,
        freq_shift: int = 0,
        down_block_types: tuple[str, ...] = (
            "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D",
        ),
        mid_block_type: str | None = "UNetMidBlock2DCrossAttn",
        up_block_types: tuple[str, ...] = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        only_cross_attention: bool | tuple[bool, ...] = False,
        block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280),
        layers_per_block: int | tuple[int, ...] = 2,
        downsample_padding: int = 1,
        mid_block_scale_factor: float = 1.0,
        act_fn: str = "silu",
        norm_num_groups: int | None = 32,
        norm_eps: float = 1e-5,
        cross_attention_dim: int | tuple[int, ...] = 768,
        transformer_layers_per_block: int | tuple[int, ...] = 1,
        attention_head_dim: int | tuple[int, ...] = 8,
        num_attention_heads: int | tuple[int, ...] | None = None,
        use_linear_projection: bool = False,
        upcast_attention: bool = False,
        resnet_time_scale_shift: str = "default",
        class_embed_type: str | None = None,
        num_class_embeds: int | None = None,
        time_cond_proj_dim: int | None = None,
        num_frames: int = 16,
        temporal_attention: str = "directed",
        temporal_attention_heads: int = 8,
        use_fps_embedding: bool = True,
        spatial_attention: str = "frame",
        temporal_attention_scope: str = "position",
        space_time_attention: bool | tuple[bool, ...] = False,
        spatial_position_encoding: bool = False,
        temporal_convolution: bool | tuple[bool, ...] = False,
        temporal_position_encoding: str = "absolute",
    ):
        super().__init__()
        if temporal_attention not in TEMPORAL_ATTENTION_MODES:
            raise ValueError(f"temporal_attention must be one of {TEMPORAL_ATTENTION_MODES}, got {temporal_attention!r}")
        if temporal_position_encoding not in FRAME_POSITION_ENCODINGS:
            raise ValueError(f"temporal_position_encoding must be one of {FRAME_POSITION_ENCODINGS}, "
                             f"got {temporal_position_encoding!r}")
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        for kind, types in (("down", down_block_types), ("mid", [mid_block_type]), ("up", up_block_types)):
            unsupported = [t for t in types if t not in SUPPORTED_BLOCKS[kind]]
            if unsupported:
                raise ValueError(f"{kind}_block_types: {unsupported} not supported; use {SUPPORTED_BLOCKS[kind]}")
        spatial_config = {key: value for key, value in locals().items() if key in SPATIAL_CONFIG_KEYS}
        # Build the image U-Net and adopt its modules under the same names, so that Stable
        # Diffusion checkpoints load into this model unchanged; then inflate it in place.
        unet2d = UNet2DConditionModel(**spatial_config)
        for name, module in unet2d.named_children():
            self.add_module(name, module)
        self.class_embedding = unet2d.class_embedding  # None without class_embed_type
        self.num_upsamplers = len(up_block_types) - 1
        self.gradient_checkpointing = False

        levels = len(down_block_types)
        space_time = _per_level(space_time_attention, levels, "space_time_attention")
        temporal_conv = _per_level(temporal_convolution, levels, "temporal_convolution")
        level_of = {}  # parent module -> resolution level (up blocks mirror the down blocks; mid: the lowest)
        for level, block in enumerate(self.down_blocks):
            level_of[block] = level
        for index, block in enumerate(self.up_blocks):
            level_of[block] = levels - 1 - index
        if self.mid_block is not None:
            level_of[self.mid_block] = levels - 1
        for block, level in level_of.items():
            for index, child in enumerate(getattr(block, "attentions", None) or []):
                if not isinstance(child, Transformer2DModel):
                    continue
                temporal = None if temporal_attention == "none" else DirectedTemporalAttention(
                    child.in_channels, temporal_attention_heads, temporal_attention, temporal_attention_scope,
                    spatial_position_encoding, temporal_position_encoding)
                extra = DirectedTemporalAttention(child.in_channels, temporal_attention_heads,
                                                  "directed" if temporal_attention == "none" else temporal_attention,
                                                  "space_time", spatial_position_encoding,
                                                  temporal_position_encoding) if space_time[level] else None
                block.attentions[index] = SpatioTemporalTransformer.inflate(child, temporal, extra)
            if temporal_conv[level]:
                for res in block.resnets:
                    res.temporal_convolution = CausalTemporalConvolution(res.out_channels, norm_groups=norm_num_groups or 32)
        add_frame_adaptors(self, num_frames)
        self.set_spatial_attention(spatial_attention)
        self.fps_proj = self.fps_embedding = None
        if use_fps_embedding:
            time_embed_dim = self.time_embedding.linear_1.out_features
            self.fps_proj = Timesteps(block_out_channels[0], flip_sin_to_cos, freq_shift)
            self.fps_embedding = TimestepEmbedding(block_out_channels[0], time_embed_dim)
            torch.nn.init.zeros_(self.fps_embedding.linear_2.weight)
            torch.nn.init.zeros_(self.fps_embedding.linear_2.bias)

    @classmethod
    def from_unet2d(cls, unet2d: UNet2DConditionModel, num_frames: int = 16, **config_overrides) -> "MagicVideoUNet3D":
        """Inflate a diffusers `UNet2DConditionModel` (e.g. Stable Diffusion's): every spatial
        weight is copied; adaptors, temporal attention and FPS embedding start at identity/zero."""
        defaults = inspect.signature(UNet2DConditionModel.__init__).parameters
        unsupported = {
            key: value
            for key, value in unet2d.config.items()
            if key not in SPATIAL_CONFIG_KEYS and key in defaults and _plain(value) != _plain(defaults[key].default)
        }
        if unsupported:
            raise ValueError(f"cannot inflate a UNet2DConditionModel with unsupported settings: {unsupported}")
        config = {key: unet2d.config[key] for key in SPATIAL_CONFIG_KEYS if key in unet2d.config}
        model = cls(**{**config, **config_overrides}, num_frames=num_frames)
        model.to(unet2d.device)
        if unet2d.dtype != model.dtype:
            model.to(dtype=unet2d.dtype)
        missing, unexpected = model.load_state_dict(unet2d.state_dict(), strict=False)
        new = set(model.new_parameter_names())
        if unexpected or set(missing) != new:
            raise RuntimeError(f"inflation mismatch: unexpected {unexpected}, missing {sorted(set(missing) - new)}")
        return model

    def set_spatial_attention(self, mode: str) -> None:
        """Switch every spatial self-attention between "frame" (per frame, the paper) and "first_frame"
        (keys/values also from frame 0); no weights change, so a trained model can be switched."""
        if mode not in SPATIAL_ATTENTION_MODES:
            raise ValueError(f"spatial_attention must be one of {SPATIAL_ATTENTION_MODES}, got {mode!r}")
        for module in self.modules():
            if isinstance(module, SpatioTemporalTransformer):
                module.first_frame_attention = mode == "first_frame"
                for block in module.transformer_blocks:  # both attentions take the num_frames argument
                    for attention in (block.attn1, getattr(block, "attn2", None)):
                        if attention is not None:
                            attention.set_processor(FirstFrameAttnProcessor() if mode == "first_frame"
                                                    else AttnProcessor2_0())
        self.register_to_config(spatial_attention=mode)

    def with_new_layers(self, **flags: bool | tuple[bool, ...]) -> "MagicVideoUNet3D":
        """A copy of this model with zero-initialised layers added at the levels given by `flags`:
        `space_time_attention` and/or `temporal_convolution` (one flag, or one per down block; see the
        class). Every weight is copied, so before training the copy computes exactly what this model
        computes."""
        added = {"space_time_attention": ".space_time_attention.", "temporal_convolution": ".temporal_convolution."}
        unknown = set(flags) - set(added)
        if unknown:
            raise ValueError(f"with_new_layers: {sorted(unknown)} add no layers; use {sorted(added)}")
        config = {key: value for key, value in self.config.items() if not key.startswith("_")}
        model = type(self)(**{**config, **flags}).to(self.device, self.dtype)
        missing, unexpected = model.load_state_dict(self.state_dict(), strict=False)
        if unexpected or any(not any(added[key] in name for key in flags) for name in missing):
            raise RuntimeError(f"extension mismatch: unexpected {unexpected}, missing {missing}")
        return model  # the config carried the attention modes over

    def set_temporal_attention(self, mode: str | None = None, scope: str | None = None,
                               spatial_position: bool | None = None) -> None:
        """Switch every temporal attention's mask (`mode`: "directed", "directed_post_softmax",
        "bidirectional"; the space-time branches' too), the T-Attn `scope` ("position",
        "space_time"; the branches stay "space_time") and/or whether space-time attentions encode
        each token's row and column (`spatial_position`; every layer); no weights change, so a trained
        model can be switched (to or from "none" it cannot: that adds or removes weights)."""
        transformers = [module for module in self.modules() if isinstance(module, SpatioTemporalTransformer)]
        layers = [t.temporal_attention for t in transformers if t.temporal_attention is not None]
        branches = [t.space_time_attention for t in transformers if t.space_time_attention is not None]
        if not layers:
            raise ValueError("this U-Net has no temporal attention (temporal_attention='none') to switch")
        if mode is not None and (mode not in TEMPORAL_ATTENTION_MODES or mode == "none"):
            raise ValueError(f"temporal_attention must be one of {TEMPORAL_ATTENTION_MODES[:-1]}, got {mode!r}")
        if scope is not None and scope not in TEMPORAL_ATTENTION_SCOPES:
            raise ValueError(f"temporal_attention_scope must be one of {TEMPORAL_ATTENTION_SCOPES}, got {scope!r}")
        for layer in layers + branches:  # the mask applies to the space-time branches too, the scope does not
            layer.mode = mode or layer.mode
            layer.spatial_position = layer.spatial_position if spatial_position is None else spatial_position
        for layer in layers:
            layer.scope = scope or layer.scope
        self.register_to_config(temporal_attention=layers[0].mode, temporal_attention_scope=layers[0].scope,
                                spatial_position_encoding=layers[0].spatial_position)

    @property
    def is_causal(self) -> bool:
        """Whether frame f's output depends on frames <= f only: true unless the temporal attention (and
        with it the space-time branches) is bidirectional; first-frame attention and the temporal
        convolution are causal by construction."""
        return self.config.temporal_attention != "bidirectional"

    def new_parameter_names(self) -> list[str]:
        """Names of the parameters MagicVideo adds to the image U-Net."""
        return [name for name in self.state_dict() if ".adaptor." in name or ".temporal_attention." in name
                or ".space_time_attention." in name or ".temporal_convolution." in name
                or name.startswith("fps_embedding.")]

    def _embedding(self, timestep, batch: int, frames: int, device, dtype, fps, class_labels, timestep_cond):
        """The time (+ class, + fps) embedding of every frame, (B * F, D).

        `timestep` is a number, one per clip (B,), or one per frame (B, F); class labels, fps and
        the timestep condition are per clip."""
        t = torch.as_tensor(timestep, device=device)
        per_frame = t.ndim == 2
        if per_frame and tuple(t.shape) != (batch, frames):
            raise ValueError(f"timestep: a per-frame timestep must be (batch, frames) = {(batch, frames)}, got {tuple(t.shape)}")
        t = t.reshape(-1) if per_frame else t.reshape(-1).expand(batch)
        emb = self.time_embedding(self.time_proj(t).to(dtype), _per_frame(timestep_cond, frames) if per_frame else timestep_cond)
        clip_emb = torch.zeros((), dtype=dtype, device=device)
        if self.class_embedding is not None:
            if class_labels is None:
                raise ValueError("class_labels: this model has a class embedding (class_embed_type) and needs class labels")
            labels = torch.as_tensor(class_labels, device=device).reshape(-1).expand(batch)
            if self.config.class_embed_type == "timestep":
                labels = self.time_proj(labels).to(dtype)
            clip_emb = clip_emb + self.class_embedding(labels).to(dtype)
        if self.fps_embedding is not None and fps is not None:
            fps = torch.as_tensor(fps, device=device, dtype=torch.float32).reshape(-1).expand(batch)
            clip_emb = clip_emb + self.fps_embedding(self.fps_proj(fps).to(dtype))
        if per_frame:
            return emb + _per_frame(clip_emb, frames) if clip_emb.ndim else emb
        return _per_frame(emb + clip_emb, frames)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor,
        fps: torch.Tensor | float | None = None,
        class_labels: torch.Tensor | None = None,
        timestep_cond: torch.Tensor | None = None,
        cross_attention_kwargs: dict | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        down_block_additional_residuals: tuple[torch.Tensor, ...] | None = None,
        mid_block_additional_residual: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> MagicVideoUNet3DOutput | tuple[torch.Tensor]:
        """Predict the noise of `sample` (B, C, F, H, W); the frame count F comes from its shape.

        `timestep`: a number, (B,) or per frame (B, F). `fps`, `class_labels` (with
        `class_embed_type`), `timestep_cond` (with `time_cond_proj_dim`): one per clip.
        `encoder_attention_mask` (B, L): 1 = attend, 0 = padding. `cross_attention_kwargs` go to the
        attention processors. Additional residuals (ControlNet-style) are (B, C, F, H, W) or folded."""
        batch, _, frames, height, width = sample.shape
        if frames > self.config.num_frames:
            raise ValueError(f"sample has {frames} frames; this model has adaptors for at most {self.config.num_frames}")
        emb = self._embedding(timestep, batch, frames, sample.device, sample.dtype, fps, class_labels, timestep_cond)
        mask = None
        if encoder_attention_mask is not None:
            mask = _per_frame((1 - encoder_attention_mask.to(sample.dtype)) * -10000.0, frames).unsqueeze(1)
        checkpoint = self._gradient_checkpointing_func if self.gradient_checkpointing and torch.is_grad_enabled() else None
        inputs = FrameInputs(frames, emb, _per_frame(encoder_hidden_states, frames), cross_attention_kwargs, mask,
                             checkpoint)

        # Frames are folded into the batch: every 2D op is shared by all frames.
        x = rearrange(sample, "b c f h w -> (b f) c h w")
        if self.config.center_input_sample:
            x = 2 * x - 1.0
        x = self.conv_in(x, frames)
        skips = (x,)
        for block in self.down_blocks:
            x, res = down_block(block, x, inputs)
            skips += res
        if down_block_additional_residuals is not None:
            skips = tuple(s + _folded(r) for s, r in zip(skips, down_block_additional_residuals, strict=True))
        if self.mid_block is not None:
            x = mid_block(self.mid_block, x, inputs)
        if mid_block_additional_residual is not None:
            x = x + _folded(mid_block_additional_residual)
        upsample_size = None
        forward_upsample_size = any(dim % 2 ** self.num_upsamplers for dim in (height, width))
        for i, block in enumerate(self.up_blocks):
            res, skips = skips[-len(block.resnets):], skips[: -len(block.resnets)]
            if i < len(self.up_blocks) - 1 and forward_upsample_size:
                upsample_size = skips[-1].shape[2:]
            x = up_block(block, x, res, inputs, upsample_size)
        if self.conv_norm_out is not None:
            x = self.conv_act(self.conv_norm_out(x))
        x = self.conv_out(x, frames)

        out = rearrange(x, "(b f) c h w -> b c f h w", f=frames)
        return MagicVideoUNet3DOutput(sample=out) if return_dict else (out,)
