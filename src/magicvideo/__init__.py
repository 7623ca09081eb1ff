"""MagicVideo: efficient text-to-video generation with latent diffusion.

Exports are imported lazily, so that `magicvideo --help` and light tools don't pay for importing
torch, diffusers and transformers.
"""

from importlib import import_module

_EXPORTS = {
    "MagicVideoUNet3D": ".models.unet_3d",
    "MagicVideoUNet3DOutput": ".models.unet_3d",
    "MagicVideoPipeline": ".pipelines.keyframes",
    "MagicVideoPipelineOutput": ".pipelines.keyframes",
    "SCHEDULERS": ".sampling",
    "InvalidArgumentError": ".errors",
    "load_pipeline": ".pipelines.keyframes",
    "init_from_sd": ".init_from_sd",
    "load_sd_pipeline": ".init_from_sd",
}

__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'magicvideo' has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted([*globals(), *_EXPORTS])
