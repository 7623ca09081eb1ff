"""MagicVideo: efficient text-to-video generation with latent diffusion."""

from .init_from_sd import init_from_sd, load_sd_pipeline
from .pipeline import SCHEDULERS, MagicVideoPipeline, MagicVideoPipelineOutput
from .unet_3d import MagicVideoUNet3D, MagicVideoUNet3DOutput

__all__ = [
    "init_from_sd",
    "load_sd_pipeline",
    "SCHEDULERS",
    "MagicVideoPipeline",
    "MagicVideoPipelineOutput",
    "MagicVideoUNet3D",
    "MagicVideoUNet3DOutput",
]
__version__ = "0.1.0"
