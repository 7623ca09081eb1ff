"""Training: video-text data sets, the latent cache, the diffusion and VAE trainers."""

from __future__ import annotations

from .config import Config, ConfigError, load_config


def train(config: Config, resume: bool = False):
    """Run the task a config names (`diffusion`, `vae`, `video_vae`, `super_resolution`, `interpolation`); returns the `final/` folder."""
    from .trainer import Trainer

    if config.task == "vae":
        from .vae_task import VAETask as task
    elif config.task == "video_vae":
        from .video_vae_task import VideoVAETask as task
    elif config.task == "super_resolution":
        from .super_resolution_task import SuperResolutionTask as task
    elif config.task == "interpolation":
        from .interpolation_task import InterpolationTask as task
    else:
        from .diffusion import DiffusionTask as task
    return Trainer(config, task, resume=resume).run()


__all__ = ["Config", "ConfigError", "load_config", "train"]
