"""MagicVideo: efficient text-to-video generation with latent diffusion."""

from .pipeline import SCHEDULERS, MagicVideoPipeline, MagicVideoPipelineOutput
from .unet_3d import MagicVideoUNet3D, MagicVideoUNet3DOutput

__all__ = [
    "SCHEDULERS",
    "MagicVideoPipeline",
    "MagicVideoPipelineOutput",
    "MagicVideoUNet3D",
    "MagicVideoUNet3DOutput",
]
__version__ = "0.1.0"
