"""The MagicVideo 3D U-Net: the keyframe denoiser eps_theta(z_t, t, tau(y), v).

A Stable-Diffusion-compatible 2D U-Net (diffusers' `UNet2DConditionModel` layout and parameter
names) applied to every frame, inflated with
- a frame-wise adaptor after every 2D convolution (`adaptor.py`),
- directed temporal attention in parallel with every spatial transformer:
  z = S-Attn(z) + T-Attn(z) (`temporal_attention.py`),
- an FPS embedding Linear(SiLU(Linear(Sin(v)))) added to the timestep embedding.
There are no 3D or temporal convolutions. With the adaptors at identity, the temporal output
projections at zero and the FPS embedding's last layer at zero (their initial values), the model
equals the 2D U-Net applied to each frame.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from diffusers import UNet2DConditionModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.transformers.transformer_2d import Transformer2DModel, Transformer2DModelOutput
from diffusers.utils import BaseOutput
from einops import rearrange, repeat

from .adaptor import FrameAdaptor, add_frame_adaptors
from .temporal_attention import TEMPORAL_ATTENTION_MODES, DirectedTemporalAttention

# The subset of UNet2DConditionModel's configuration that Stable Diffusion 1.x / 2.x use.
SPATIAL_CONFIG_KEYS = (
    "sample_size", "in_channels", "out_channels", "center_input_sample", "flip_sin_to_cos", "freq_shift",
    "down_block_types", "mid_block_type", "up_block_types", "only_cross_attention", "block_out_channels",
    "layers_per_block", "downsample_padding", "mid_block_scale_factor", "act_fn", "norm_num_groups",
    "norm_eps", "cross_attention_dim", "transformer_layers_per_block", "attention_head_dim",
    "num_attention_heads", "use_linear_projection", "upcast_attention", "resnet_time_scale_shift",
)


def _context(block, context) -> dict:
    """Cross-attention context for the blocks that attend to text."""
    return {"encoder_hidden_states": context} if getattr(block, "has_cross_attention", False) else {}


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


@dataclass
class MagicVideoUNet3DOutput(BaseOutput):
    """`sample`: the predicted noise, (B, C, F, H, W)."""

    sample: torch.Tensor


class SpatioTemporalTransformer(Transformer2DModel):
    """A spatial transformer with directed temporal attention in parallel: S-Attn(z) + T-Attn(z).

    `Transformer2DModel` already adds its input back (S-Attn(z) includes the residual z).
    """

    temporal_attention: DirectedTemporalAttention

    def forward(self, hidden_states, *args, return_dict: bool = True, **kwargs):
        spatial = super().forward(hidden_states, *args, return_dict=False, **kwargs)[0]
        out = spatial + self.temporal_attention(hidden_states)
        return Transformer2DModelOutput(sample=out) if return_dict else (out,)


class MagicVideoUNet3D(ModelMixin, ConfigMixin):
    """MagicVideo's 3D U-Net. `sample` is (B, C, F, H, W) with F <= `num_frames`.

    Spatial arguments are those of diffusers' `UNet2DConditionModel`. MagicVideo's own:
    `num_frames` (number of per-frame adaptor entries), `temporal_attention` (one of
    "directed", "directed_post_softmax", "bidirectional", "none"), `temporal_attention_heads`,
    `use_fps_embedding`.
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
        num_frames: int = 16,
        temporal_attention: str = "directed",
        temporal_attention_heads: int = 8,
        use_fps_embedding: bool = True,
    ):
        super().__init__()
        if temporal_attention not in TEMPORAL_ATTENTION_MODES:
            raise ValueError(f"temporal_attention must be one of {TEMPORAL_ATTENTION_MODES}, got {temporal_attention!r}")
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        spatial_config = {key: value for key, value in locals().items() if key in SPATIAL_CONFIG_KEYS}
        # Build the image U-Net and adopt its modules under the same names, so that Stable
        # Diffusion checkpoints load into this model unchanged.
        for name, module in UNet2DConditionModel(**spatial_config).named_children():
            self.add_module(name, module)

        self.num_upsamplers = len(up_block_types) - 1
        add_frame_adaptors(self, num_frames)
        if temporal_attention != "none":
            for module in list(self.modules()):
                if type(module) is Transformer2DModel:
                    module.__class__ = SpatioTemporalTransformer
                    module.temporal_attention = DirectedTemporalAttention(
                        module.in_channels, temporal_attention_heads, temporal_attention, num_frames
                    )
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
        model = cls(**config, num_frames=num_frames, **config_overrides)
        model.to(unet2d.device)
        if unet2d.dtype != model.dtype:
            model.to(dtype=unet2d.dtype)
        missing, unexpected = model.load_state_dict(unet2d.state_dict(), strict=False)
        new = set(model.new_parameter_names())
        if unexpected or set(missing) != new:
            raise RuntimeError(f"inflation mismatch: unexpected {unexpected}, missing {sorted(set(missing) - new)}")
        return model

    def new_parameter_names(self) -> list[str]:
        """Names of the parameters MagicVideo adds to the image U-Net."""
        return [name for name in self.state_dict() if ".adaptor." in name or ".temporal_attention." in name
                or name.startswith("fps_embedding.")]

    def _set_frames(self, num_frames: int) -> None:
        for module in self.modules():
            if isinstance(module, (FrameAdaptor, DirectedTemporalAttention)):
                module.frames = num_frames

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor,
        fps: torch.Tensor | float | None = None,
        return_dict: bool = True,
    ) -> MagicVideoUNet3DOutput | tuple[torch.Tensor]:
        batch, _, frames, height, width = sample.shape
        if frames > self.config.num_frames:
            raise ValueError(f"sample has {frames} frames; this model has adaptors for at most {self.config.num_frames}")
        self._set_frames(frames)

        # Time (and FPS) embedding, one per clip, shared by its frames.
        timesteps = torch.as_tensor(timestep, device=sample.device).reshape(-1).expand(batch)
        emb = self.time_embedding(self.time_proj(timesteps).to(sample.dtype))
        if self.fps_embedding is not None and fps is not None:
            fps = torch.as_tensor(fps, device=sample.device, dtype=torch.float32).reshape(-1).expand(batch)
            emb = emb + self.fps_embedding(self.fps_proj(fps).to(sample.dtype))
        emb = repeat(emb, "b d -> (b f) d", f=frames)
        context = repeat(encoder_hidden_states, "b l d -> (b f) l d", f=frames)

        # Frames are folded into the batch: every 2D op is shared by all frames.
        x = rearrange(sample, "b c f h w -> (b f) c h w")
        if self.config.center_input_sample:
            x = 2 * x - 1.0
        x = self.conv_in(x)
        skips = (x,)
        for block in self.down_blocks:
            x, res = block(hidden_states=x, temb=emb, **_context(block, context))
            skips += res
        if self.mid_block is not None:
            x = self.mid_block(x, emb, **_context(self.mid_block, context))
        upsample_size = None
        forward_upsample_size = any(dim % 2 ** self.num_upsamplers for dim in (height, width))
        for i, block in enumerate(self.up_blocks):
            res, skips = skips[-len(block.resnets):], skips[: -len(block.resnets)]
            if i < len(self.up_blocks) - 1 and forward_upsample_size:
                upsample_size = skips[-1].shape[2:]
            x = block(hidden_states=x, temb=emb, res_hidden_states_tuple=res, upsample_size=upsample_size,
                      **_context(block, context))
        if self.conv_norm_out is not None:
            x = self.conv_act(self.conv_norm_out(x))
        x = self.conv_out(x)

        out = rearrange(x, "(b f) c h w -> b c f h w", f=frames)
        return MagicVideoUNet3DOutput(sample=out) if return_dict else (out,)
