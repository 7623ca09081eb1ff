"""Training: video-text data sets, the latent cache, the diffusion and VAE trainers."""

from __future__ import annotations

from .config import Config, ConfigError, load_config


def train(config: Config, resume: bool = False):
    """Run the task a config names (`diffusion`, `vae` or `interpolation`); returns the `final/` folder."""
    from .trainer import Trainer

    if config.task == "vae":
        from .vae_task import VAETask as task
    elif config.task == "interpolation":
        from .interpolation_task import InterpolationTask as task
    else:
        from .diffusion import DiffusionTask as task
    return Trainer(config, task, resume=resume).run()


__all__ = ["Config", "ConfigError", "load_config", "train"]
