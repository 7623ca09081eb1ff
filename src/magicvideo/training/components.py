"""The frozen parts a training run needs (VAE, tokenizer, text encoder) and the trainable 3D U-Net,
loaded from a pipeline folder and/or the individual sources a config names."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from diffusers import AutoencoderKL, DDPMScheduler
from transformers import AutoModel, AutoTokenizer

from ..pipelines.keyframes import load_pipeline
from ..text import packaged_text_encoder_path
from ..models.unet_3d import MagicVideoUNet3D
from ..vae import load_vae
from .config import Config


@dataclass
class Components:
    unet: MagicVideoUNet3D | None
    vae: AutoencoderKL
    tokenizer: object
    text_encoder: object
    scheduler: DDPMScheduler  # the training noise schedule


def text_encoder_path(source: str) -> str:
    return str(packaged_text_encoder_path()) if source == "minilm" else source


def _check_folder(path: str, key: str) -> str:
    if not Path(path).exists():
        raise FileNotFoundError(f"{key}: {path} does not exist")
    return path


def load_components(config: Config, with_unet: bool = True) -> Components:
    """Pipeline folder `model.pretrained` first, then `model.vae` / `model.text_encoder` /
    `model.unet` (a from-scratch U-Net config) override or fill in its parts."""
    model, train = config.model, config.train
    unet = vae = tokenizer = text_encoder = scheduler = None
    if model.pretrained:
        # the one pipeline loader: also a pipeline saved with the packaged MiniLM (no text_encoder/)
        pipe = load_pipeline(_check_folder(model.pretrained, "model.pretrained"), device="cpu", dtype="fp32",
                             progress_bar=False)
        if with_unet and not model.unet:
            unet = pipe.unet
        if not model.vae:
            vae = pipe.vae
        if not model.text_encoder:
            tokenizer, text_encoder = pipe.tokenizer, pipe.text_encoder
        scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    if with_unet and model.unet:
        unet = MagicVideoUNet3D(**model.unet)
    if model.vae:
        vae = load_vae(_check_folder(model.vae, "model.vae"))  # a VideoVAE folder: its encoder
    if model.text_encoder:
        path = _check_folder(text_encoder_path(model.text_encoder), "model.text_encoder")
        tokenizer, text_encoder = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path)
    missing = [key for key, value in (("model.vae", vae), ("model.text_encoder", text_encoder)) if value is None]
    if with_unet and unet is None:
        missing.append("model.unet")
    if missing:
        raise ValueError(f"the config names no {' / '.join(missing)} (and no model.pretrained pipeline providing it)")
    if scheduler is None:
        scheduler = DDPMScheduler(num_train_timesteps=train.num_train_timesteps, beta_schedule=train.beta_schedule,
                                  beta_start=train.beta_start, beta_end=train.beta_end,
                                  prediction_type=train.prediction_type, clip_sample=False,
                                  timestep_spacing="trailing")  # samplers start at the last training step
    if model.text_max_length is not None:
        tokenizer.model_max_length = model.text_max_length
    for frozen in (vae, text_encoder):
        frozen.requires_grad_(False).eval()
    return Components(unet, vae, tokenizer, text_encoder, scheduler)
