"""FLOP counts of one denoising step: MagicVideo's latent 3D U-Net vs VDM-style and ModelScope peers.

MagicVideo claims about 64x fewer FLOPs than VDM (Ho et al. 2022) because its U-Net runs on the
32x32 latents of a KL-f8 VAE instead of 256x256 pixels (256^2 / 32^2 = 64). This module counts
the FLOPs of one forward pass with torch's `FlopCounterMode` on *meta* tensors: the models are
built under `torch.device("meta")`, so there are no weights and no arithmetic, only shapes.

What is counted: matrix multiplications, convolutions and scaled-dot-product attention, at
2 FLOPs per multiply-accumulate (torch's convention). Normalisations, activations, the
frame-wise adaptors and other element-wise ops are not counted (they are a few percent at most).
Causal (directed) attention is counted as full attention, as torch counts it.

The three networks (batch 1, 77 text tokens, 16 frames of a 256x256 clip by default):
- MagicVideo: `MagicVideoUNet3D` at Stable Diffusion 1.5 widths (its default config) on
  4 x F x 32 x 32 latents.
- VDM-style: VDM's factorised space-time U-Net in pixel space, 3 x F x 256 x 256. See `vdm_unet`.
- ModelScope: diffusers' `UNet3DConditionModel` with the config of
  damo-vilab/text-to-video-ms-1.7b (temporal convolutions + temporal attention) on the same
  latents as MagicVideo.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from diffusers import UNet3DConditionModel
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from .models.unet_3d import MagicVideoUNet3D

VAE_DOWNSAMPLING = 8  # Stable Diffusion's KL-f8 VAE: 256x256x3 -> 32x32x4
TEXT_TOKENS = 77  # CLIP's context length
VDM_MAX_ATTENTION_RESOLUTION = 32  # VDM (like DDPM/Imagen) attends only at resolutions <= 32x32
SD15_WIDTHS = (320, 640, 1280, 1280)

# ModelScope's text-to-video U-Net (damo-vilab/text-to-video-ms-1.7b, unet/config.json).
MODELSCOPE_CONFIG = dict(
    in_channels=4,
    out_channels=4,
    sample_size=32,
    down_block_types=("CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"),
    up_block_types=("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"),
    block_out_channels=SD15_WIDTHS,
    layers_per_block=2,
    cross_attention_dim=1024,
    attention_head_dim=64,
    norm_num_groups=32,
    norm_eps=1e-5,
)

def vdm_levels(resolution: int = 256) -> list[tuple[int, bool]]:
    """(resolution, has attention) of each level of the VDM-style U-Net at a given pixel resolution."""
    sizes = [resolution // 2**i for i in range(len(SD15_WIDTHS))]
    return [(size, size <= VDM_MAX_ATTENTION_RESOLUTION) for size in sizes]


def vdm_definition(resolution: int = 256) -> str:
    """A one-paragraph description of the VDM-style U-Net, printed by `magicvideo flops`."""
    levels = vdm_levels(resolution)
    attending = [str(size) for size, attends in levels if attends]
    where = f"at the level(s) of resolution {', '.join(attending)}" if attending else "at no level"
    return (
        "VDM-style U-Net (Ho et al. 2022): a factorised space-time U-Net in pixel space - per-frame 2D "
        "convolutions, spatial self- and cross-attention and bidirectional temporal attention - with "
        f"MagicVideo's conv widths {SD15_WIDTHS}, 2 res-blocks per level and {len(levels)} levels, run on "
        f"3x{resolution}x{resolution} frames (levels at {', '.join(str(s) for s, _ in levels)}). As in VDM, "
        f"attention is used only at resolutions <= {VDM_MAX_ATTENTION_RESOLUTION}x{VDM_MAX_ATTENTION_RESOLUTION}: "
        f"{where}; the other levels are convolution-only. The middle block always attends, as in DDPM and VDM."
    )


def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


# How the counted aten ops are grouped in the breakdown.
OP_KINDS = {"convolution": "conv", "mm": "linear", "addmm": "linear", "bmm": "attention", "baddbmm": "attention"}


def count_flops_by_kind(model: torch.nn.Module, *args, **kwargs) -> dict[str, int]:
    """FLOPs (2 x multiply-accumulates) of `model(*args, **kwargs)` under torch's `FlopCounterMode`,
    split into "conv" (convolutions), "linear" (mm/addmm: projections, feed-forwards, embeddings) and
    "attention" (the batched matmuls / SDPA of attention scores and weighted sums).

    On CPU tensors torch runs attention through `_scaled_dot_product_flash_attention_for_cpu`, which
    `FlopCounterMode` does not know (it would count 0); it is mapped to torch's own SDPA formula here.
    On meta tensors SDPA decomposes into counted batched matmuls.
    """
    counter = FlopCounterMode(
        display=False, custom_mapping={torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops}
    )
    with counter, torch.no_grad():
        model(*args, **kwargs)
    kinds = {"conv": 0, "linear": 0, "attention": 0}
    for op, flops in counter.get_flop_counts()["Global"].items():
        name = str(op).removeprefix("aten.").split(".")[0]
        kind = OP_KINDS.get(name, "attention" if "attention" in name else name)
        kinds[kind] = kinds.get(kind, 0) + flops
    return kinds


def count_flops(model: torch.nn.Module, *args, **kwargs) -> int:
    """Total FLOPs of `model(*args, **kwargs)`; see `count_flops_by_kind`."""
    return sum(count_flops_by_kind(model, *args, **kwargs).values())


def magicvideo_unet(num_frames: int = 16, **overrides) -> MagicVideoUNet3D:
    """MagicVideo's 3D U-Net at Stable Diffusion 1.5 widths (the default config)."""
    return MagicVideoUNet3D(num_frames=num_frames, **overrides)


def vdm_unet(resolution: int = 256, num_frames: int = 16) -> MagicVideoUNet3D:
    """A VDM-style pixel-space U-Net (see `vdm_definition`).

    VDM's 3D U-Net is an image U-Net whose 2D convolutions act per frame ("space-only 3D
    convolutions"), with spatial attention and a temporal attention block after each spatial one.
    That is exactly `MagicVideoUNet3D`'s structure, so it is built from it: in/out channels 3,
    bidirectional temporal attention, no FPS embedding, and attention blocks only in the middle
    block and at levels whose resolution is <= 32x32 (at 256x256 the SD layout would put spatial
    self-attention over 65,536 tokens at the top level, which VDM never does). The frame-wise adaptors it keeps are
    element-wise and cost no counted FLOPs.
    """
    attends = [attends for _, attends in vdm_levels(resolution)]
    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attends)
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attends))
    return MagicVideoUNet3D(
        in_channels=3, out_channels=3, down_block_types=down, up_block_types=up,
        num_frames=num_frames, temporal_attention="bidirectional", use_fps_embedding=False,
    )


def modelscope_unet() -> UNet3DConditionModel:
    """diffusers' `UNet3DConditionModel` with ModelScope text-to-video's configuration."""
    return UNet3DConditionModel(**MODELSCOPE_CONFIG)


@dataclass
class FlopsReport:
    frames: int
    resolution: int
    latent_resolution: int
    steps: int
    magicvideo_step_flops: int
    vdm_step_flops: int
    modelscope_step_flops: int
    magicvideo_clip_flops: int
    vdm_clip_flops: int
    modelscope_clip_flops: int
    ratio_vdm_over_magicvideo: float
    ratio_modelscope_over_magicvideo: float
    pixel_over_latent_area: float
    magicvideo_step_breakdown: dict[str, int]
    vdm_step_breakdown: dict[str, int]
    modelscope_step_breakdown: dict[str, int]

    def to_dict(self) -> dict:
        return asdict(self)


def step_flops(frames: int = 16, resolution: int = 256, steps: int = 25) -> FlopsReport:
    """FLOPs of one denoising step (batch 1) and of `steps` steps for one clip, for all three U-Nets."""
    if resolution % (VAE_DOWNSAMPLING * 8):
        raise ValueError(f"resolution must be a multiple of {VAE_DOWNSAMPLING * 8}, got {resolution}")
    latent = resolution // VAE_DOWNSAMPLING
    with torch.device("meta"):
        magicvideo, vdm, modelscope = magicvideo_unet(frames), vdm_unet(resolution, frames), modelscope_unet()
        latents = torch.empty(1, 4, frames, latent, latent)
        pixels = torch.empty(1, 3, frames, resolution, resolution)
        text_768 = torch.empty(1, TEXT_TOKENS, 768)
        text_1024 = torch.empty(1, TEXT_TOKENS, MODELSCOPE_CONFIG["cross_attention_dim"])
        timestep = torch.empty(1, dtype=torch.long)
        ours_kinds = count_flops_by_kind(magicvideo, latents, timestep, text_768, fps=8.0)
        vdm_kinds = count_flops_by_kind(vdm, pixels, timestep, text_768)
        ms_kinds = count_flops_by_kind(modelscope, latents, timestep, text_1024)
    ours, theirs_vdm, theirs_ms = (sum(k.values()) for k in (ours_kinds, vdm_kinds, ms_kinds))
    return FlopsReport(
        frames=frames,
        resolution=resolution,
        latent_resolution=latent,
        steps=steps,
        magicvideo_step_flops=ours,
        vdm_step_flops=theirs_vdm,
        modelscope_step_flops=theirs_ms,
        magicvideo_clip_flops=ours * steps,
        vdm_clip_flops=theirs_vdm * steps,
        modelscope_clip_flops=theirs_ms * steps,
        ratio_vdm_over_magicvideo=theirs_vdm / ours,
        ratio_modelscope_over_magicvideo=theirs_ms / ours,
        pixel_over_latent_area=(resolution / latent) ** 2,
        magicvideo_step_breakdown=ours_kinds,
        vdm_step_breakdown=vdm_kinds,
        modelscope_step_breakdown=ms_kinds,
    )
