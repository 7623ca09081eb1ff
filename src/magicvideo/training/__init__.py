"""Training: video-text data sets, the latent cache, the diffusion and VAE trainers."""

from __future__ import annotations

from .config import Config, ConfigError, load_config


def train(config: Config, resume: bool = False, export_to=None, checkpoint=None):
    """Run the task a config names (`diffusion`, `vae`, `video_vae`, `super_resolution`, `interpolation`); returns the `final/` folder.
    With `export_to`, train nothing: write the model of `checkpoint` (default: the newest in the output dir) there.
    A new run (no `resume`) refuses an output dir that already holds a run's checkpoints or final model (ValueError):
    it would mix its checkpoints with theirs and replace the final model."""
    from .checkpoint import check_new_run
    from .trainer import Trainer

    if not resume and not export_to:
        check_new_run(config.output.output_dir)

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
    trainer = Trainer(config, task, resume=resume)
    return trainer.export(export_to, checkpoint) if export_to else trainer.run()


__all__ = ["Config", "ConfigError", "load_config", "train"]
