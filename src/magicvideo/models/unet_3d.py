"""The MagicVideo 3D U-Net: the keyframe denoiser eps_theta(z_t, t, tau(y), v).

A Stable-Diffusion-compatible 2D U-Net (diffusers' `UNet2DConditionModel` layout and parameter
names) applied to every frame, inflated with
- a frame-wise adaptor after every 2D convolution (`adaptor.py`),
- directed temporal attention in parallel with every spatial transformer:
  z = S-Attn(z) + T-Attn(z) (`temporal_attention.py`, `unet_3d_blocks.py`),
- an FPS embedding Linear(SiLU(Linear(Sin(v)))) added to the timestep embedding.
There are no 3D or temporal convolutions, as in the paper. With the adaptors at identity, the temporal output
projections at zero and the FPS embedding's last layer at zero (their initial values), the model
equals the 2D U-Net applied to each frame. The clip's frame count is read from the input's shape
and passed down explicitly; no module keeps per-call state. Timesteps may be one per frame, and a
`TemporalCache` of finished frames lets a causal sampler compute only the frames it is making.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from diffusers import UNet2DConditionModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.loaders import PeftAdapterMixin
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from diffusers.utils import BaseOutput
from einops import rearrange, repeat

from .adaptor import add_frame_adaptors
from .temporal_attention import FRAME_POSITION_ENCODINGS, TEMPORAL_ATTENTION_MODES, DirectedTemporalAttention, TemporalCache
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


# configuration keys that existed once: a config that still names one fails with what became of it
REMOVED_CONFIG_KEYS = {key: "measured and not adopted (docs/experiments.md; the code is in git history at 82abbbb)"
                       for key in ("spatial_attention", "temporal_attention_scope", "space_time_attention",
                                   "spatial_position_encoding", "temporal_convolution")}


def _folded(x: torch.Tensor) -> torch.Tensor:
    """A (B, C, F, H, W) feature folded to (B * F, C, H, W); folded features pass unchanged."""
    return rearrange(x, "b c f h w -> (b f) c h w") if x.ndim == 5 else x


@dataclass
class MagicVideoUNet3DOutput(BaseOutput):
    """`sample`: the predicted noise, (B, C, F, H, W)."""

    sample: torch.Tensor


class MagicVideoUNet3D(ModelMixin, ConfigMixin, PeftAdapterMixin):
    """MagicVideo's 3D U-Net. `sample` is (B, C, F, H, W) with F <= `num_frames`.

    Spatial arguments are those of diffusers' `UNet2DConditionModel`. MagicVideo's own:
    `num_frames` (number of per-frame adaptor entries), `temporal_attention` (one of "directed",
    "bidirectional", "none"), `temporal_attention_heads`, `use_fps_embedding`,
    `temporal_position_encoding` ("absolute": the frame index's sinusoid added to the tokens;
    "relative": rotary embeddings, logits that depend on frame distance only; see
    `temporal_attention.py`).
    LoRA adapters attach with diffusers' `PeftAdapterMixin` (`magicvideo.lora`).
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

        blocks = [*self.down_blocks, *self.up_blocks] + ([self.mid_block] if self.mid_block is not None else [])
        for block in blocks:
            for index, child in enumerate(getattr(block, "attentions", None) or []):
                if not isinstance(child, Transformer2DModel):
                    continue
                temporal = None if temporal_attention == "none" else DirectedTemporalAttention(
                    child.in_channels, temporal_attention_heads, temporal_attention, temporal_position_encoding)
                block.attentions[index] = SpatioTemporalTransformer.inflate(child, temporal)
        add_frame_adaptors(self, num_frames)
        self.fps_proj = self.fps_embedding = None
        if use_fps_embedding:
            time_embed_dim = self.time_embedding.linear_1.out_features
            self.fps_proj = Timesteps(block_out_channels[0], flip_sin_to_cos, freq_shift)
            self.fps_embedding = TimestepEmbedding(block_out_channels[0], time_embed_dim)
            torch.nn.init.zeros_(self.fps_embedding.linear_2.weight)
            torch.nn.init.zeros_(self.fps_embedding.linear_2.bias)

    @classmethod
    def from_config(cls, config=None, **kwargs):
        """diffusers' `from_config` (also behind `from_pretrained`), refusing the keys of removed
        experiments instead of ignoring them."""
        names = set(config or {}) | set(kwargs)
        removed = sorted(names & set(REMOVED_CONFIG_KEYS))
        if removed:
            raise ValueError(f"{removed[0]}: removed from MagicVideoUNet3D's configuration ({REMOVED_CONFIG_KEYS[removed[0]]})")
        mode = dict(config or {}, **kwargs).get("temporal_attention")
        if mode == "directed_post_softmax":
            raise ValueError("temporal_attention: 'directed_post_softmax' was removed (the paper's literal post-softmax "
                             "mask is not causal; see models/temporal_attention.py)")
        return super().from_config(config, **kwargs)

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

    def with_input_channels(self, in_channels: int, **config_overrides) -> "MagicVideoUNet3D":
        """A copy of this model taking `in_channels` input channels: every weight copied, the new input
        channels of `conv_in` at zero (conditioning channels: interpolation, the first-frame anchor), so
        that before training it computes from its first inputs exactly what this model computes."""
        config = {k: v for k, v in self.config.items() if not k.startswith("_")}
        old = config["in_channels"]
        config.update(config_overrides, in_channels=in_channels)
        model = type(self)(**config).to(device=self.device, dtype=self.dtype)
        state = self.state_dict()
        weight = state["conv_in.weight"]
        widened = torch.zeros(weight.shape[0], in_channels, *weight.shape[2:], dtype=weight.dtype, device=weight.device)
        widened[:, :old] = weight
        state["conv_in.weight"] = widened
        model.load_state_dict(state)
        return model

    @property
    def is_causal(self) -> bool:
        """Whether frame f's output depends on frames <= f only: true unless the temporal attention is
        bidirectional."""
        return self.config.temporal_attention != "bidirectional"

    def new_parameter_names(self) -> list[str]:
        """Names of the parameters MagicVideo adds to the image U-Net."""
        return [name for name in self.state_dict() if ".adaptor." in name or ".temporal_attention." in name
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
        cache: TemporalCache | None = None,
        return_dict: bool = True,
    ) -> MagicVideoUNet3DOutput | tuple[torch.Tensor]:
        """Predict the noise of `sample` (B, C, F, H, W); the frame count F comes from its shape.

        `timestep`: a number, (B,) or per frame (B, F). `fps`, `class_labels` (with
        `class_embed_type`), `timestep_cond` (with `time_cond_proj_dim`): one per clip.
        `encoder_attention_mask` (B, L): 1 = attend, 0 = padding. `cross_attention_kwargs` go to the
        attention processors. Additional residuals (ControlNet-style) are (B, C, F, H, W) or folded.

        `cache` (directed temporal attention): the `sample` is frames len(cache), ... of a clip whose
        earlier frames' temporal keys and values are in the cache; the call attends to them and, if
        `cache.store` = n, adds its own first n frames to it (`TemporalCache`). The result equals the
        matching frames of one call on the whole clip (to float rounding)."""
        batch, _, frames, height, width = sample.shape
        first = 0 if cache is None else len(cache)
        if first + frames > self.config.num_frames:
            raise ValueError(f"sample has frames {first}...{first + frames - 1}; this model has adaptors for "
                             f"{self.config.num_frames} frames")
        if cache is not None and not self.is_causal:
            raise ValueError("cache: a bidirectional model has no causal cache (later frames change earlier ones)")
        emb = self._embedding(timestep, batch, frames, sample.device, sample.dtype, fps, class_labels, timestep_cond)
        mask = None
        if encoder_attention_mask is not None:
            mask = _per_frame((1 - encoder_attention_mask.to(sample.dtype)) * -10000.0, frames).unsqueeze(1)
        checkpoint = self._gradient_checkpointing_func if self.gradient_checkpointing and torch.is_grad_enabled() else None
        inputs = FrameInputs(frames, emb, _per_frame(encoder_hidden_states, frames), cross_attention_kwargs, mask,
                             checkpoint, cache)

        # Frames are folded into the batch: every 2D op is shared by all frames.
        x = rearrange(sample, "b c f h w -> (b f) c h w")
        if self.config.center_input_sample:
            x = 2 * x - 1.0
        x = self.conv_in(x, frames, first)
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
        x = self.conv_out(x, frames, first)
        if cache is not None:
            cache.commit()

        out = rearrange(x, "(b f) c h w -> b c f h w", f=frames)
        return MagicVideoUNet3DOutput(sample=out) if return_dict else (out,)
