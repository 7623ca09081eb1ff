"""Shared fixtures: tiny random components of the real architectures (no downloads)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from _train_utils import tiny_text_encoder

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # the commands tests start run beside the other workers
torch.set_num_threads(1)  # small models: more threads only add overhead

TINY_UNET = dict(
    sample_size=8,
    in_channels=4,
    out_channels=4,
    block_out_channels=(32, 64),
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    layers_per_block=1,
    cross_attention_dim=32,
    attention_head_dim=8,
    norm_num_groups=8,
)
TINY_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
    up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
    block_out_channels=(16, 32),
    latent_channels=4,
    norm_num_groups=8,
    layers_per_block=1,
    sample_size=16,
)


def make_tiny_pipeline(num_frames: int = 8, **unet_overrides):
    from diffusers import AutoencoderKL, DDIMScheduler

    from magicvideo import MagicVideoPipeline, MagicVideoUNet3D

    text_encoder, tokenizer = tiny_text_encoder()
    torch.manual_seed(0)
    unet = MagicVideoUNet3D(**{**TINY_UNET, **unet_overrides}, num_frames=num_frames)
    vae = AutoencoderKL(**TINY_VAE)
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False)
    return MagicVideoPipeline(unet=unet.eval(), vae=vae.eval(), text_encoder=text_encoder, tokenizer=tokenizer,
                              scheduler=scheduler)


def randomize_(module: torch.nn.Module, seed: int = 0, std: float = 0.2) -> torch.nn.Module:
    """Give every parameter random values (so that zero-initialised branches become active)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * std)
    return module


@pytest.fixture
def tiny_pipeline():
    return make_tiny_pipeline()


@pytest.fixture
def tiny_pipeline_dir(tmp_path):
    path = tmp_path / "tiny-pipeline"
    make_tiny_pipeline().save_pretrained(path)
    return path


def assert_modes_follow_umask(path) -> None:
    """Every file under `path` (and at least one safetensors file) has the mode open() gives a new file here."""
    umask = os.umask(0)
    os.umask(umask)
    modes = {str(f): f.stat().st_mode & 0o777 for f in Path(path).rglob("*") if f.is_file()} if Path(path).is_dir() \
        else {str(path): Path(path).stat().st_mode & 0o777}
    assert any(name.endswith(".safetensors") for name in modes)
    assert modes == dict.fromkeys(modes, 0o666 & ~umask)
