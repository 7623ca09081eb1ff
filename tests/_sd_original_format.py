"""Write diffusers SD 1.x components as ONE original-format (CompVis/LDM key layout) checkpoint.

Test helper: the inverse of what `init_from_sd` reads, written independently of diffusers'
converters (from the LDM module layout) so that the round trip checks them.
LDM layout: `model.diffusion_model.*` (U-Net), `first_stage_model.*` (VAE, attention q/k/v/proj as
1x1 convolutions), `cond_stage_model.transformer.text_model.*` (CLIP text encoder).
"""

from __future__ import annotations

import safetensors.torch
import torch

RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
          "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _unet_module_map(config) -> dict[str, str]:
    """diffusers module prefix -> LDM module prefix for a SD 1.x/2.x-topology U-Net."""
    levels, layers = len(config.block_out_channels), config.layers_per_block
    m = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
         "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
         "mid_block.resnets.0": "middle_block.0", "mid_block.attentions.0": "middle_block.1",
         "mid_block.resnets.1": "middle_block.2"}
    block = 1
    for i in range(levels):
        for j in range(layers):
            m[f"down_blocks.{i}.resnets.{j}"] = f"input_blocks.{block}.0"
            m[f"down_blocks.{i}.attentions.{j}"] = f"input_blocks.{block}.1"
            block += 1
        if i < levels - 1:
            m[f"down_blocks.{i}.downsamplers.0.conv"] = f"input_blocks.{block}.0.op"
            block += 1
    block = 0
    for i, kind in enumerate(config.up_block_types):
        for j in range(layers + 1):
            m[f"up_blocks.{i}.resnets.{j}"] = f"output_blocks.{block}.0"
            m[f"up_blocks.{i}.attentions.{j}"] = f"output_blocks.{block}.1"
            if j == layers and i < levels - 1:
                m[f"up_blocks.{i}.upsamplers.0.conv"] = f"output_blocks.{block}.{2 if 'CrossAttn' in kind else 1}.conv"
            block += 1
    return m


def _rename(key: str, module_map: dict[str, str], inner: dict[str, str]) -> str:
    for prefix in sorted(module_map, key=len, reverse=True):
        if key.startswith(prefix + "."):
            rest = key[len(prefix) + 1:]
            for old, new in inner.items():
                if rest.startswith(old + "."):
                    rest = new + rest[len(old):]
                    break
            return f"{module_map[prefix]}.{rest}"
    raise KeyError(key)


def unet_to_ldm(unet) -> dict[str, torch.Tensor]:
    module_map = _unet_module_map(unet.config)
    return {"model.diffusion_model." + _rename(k, module_map, RESNET if ".resnets." in k else {}): v
            for k, v in unet.state_dict().items()}


def vae_to_ldm(vae) -> dict[str, torch.Tensor]:
    levels = len(vae.config.block_out_channels)
    module_map = {"quant_conv": "quant_conv", "post_quant_conv": "post_quant_conv"}
    for part in ("encoder", "decoder"):
        for name in ("conv_in", "conv_out", "conv_norm_out"):
            module_map[f"{part}.{name}"] = f"{part}.{'norm_out' if name == 'conv_norm_out' else name}"
        module_map[f"{part}.mid_block.resnets.0"] = f"{part}.mid.block_1"
        module_map[f"{part}.mid_block.resnets.1"] = f"{part}.mid.block_2"
        module_map[f"{part}.mid_block.attentions.0"] = f"{part}.mid.attn_1"
    for i in range(levels):
        for j in range(vae.config.layers_per_block + 1):
            module_map[f"encoder.down_blocks.{i}.resnets.{j}"] = f"encoder.down.{i}.block.{j}"
            module_map[f"decoder.up_blocks.{i}.resnets.{j}"] = f"decoder.up.{levels - 1 - i}.block.{j}"
        module_map[f"encoder.down_blocks.{i}.downsamplers.0.conv"] = f"encoder.down.{i}.downsample.conv"
        module_map[f"decoder.up_blocks.{i}.upsamplers.0.conv"] = f"decoder.up.{levels - 1 - i}.upsample.conv"
    out = {}
    for k, v in vae.state_dict().items():
        inner = {"conv_shortcut": "nin_shortcut"} if ".resnets." in k else VAE_ATTENTION if ".attentions." in k else {}
        if ".attentions." in k and v.ndim == 2:  # LDM's VAE attention projections are 1x1 convolutions
            v = v[:, :, None, None]
        out["first_stage_model." + _rename(k, module_map, inner)] = v
    return out


def clip_to_ldm(text_encoder) -> dict[str, torch.Tensor]:
    # transformers >= 5.6 flattened CLIPTextModel (no `text_model.` prefix); the LDM layout has it.
    return {"cond_stage_model.transformer." + (k if k.startswith("text_model.") else "text_model." + k): v
            for k, v in text_encoder.state_dict().items()}


OPENCLIP_LAYER = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "self_attn.out_proj": "attn.out_proj",
                  "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}


def openclip_to_ldm(text_encoder) -> dict[str, torch.Tensor]:
    """SD 2.x layout: OpenCLIP's text tower under `cond_stage_model.model.`, q/k/v fused in `in_proj`."""
    state = {k.removeprefix("text_model."): v for k, v in text_encoder.state_dict().items()}
    hidden = text_encoder.config.hidden_size
    out = {"token_embedding.weight": state["embeddings.token_embedding.weight"],
           "positional_embedding": state["embeddings.position_embedding.weight"],
           "ln_final.weight": state["final_layer_norm.weight"], "ln_final.bias": state["final_layer_norm.bias"],
           "text_projection": torch.eye(hidden)}  # OpenCLIP's projection; SD 2.x does not use it
    for i in range(text_encoder.config.num_hidden_layers):
        layer = f"encoder.layers.{i}."
        for kind in ("weight", "bias"):
            out[f"transformer.resblocks.{i}.attn.in_proj_{kind}"] = torch.cat(
                [state[f"{layer}self_attn.{p}_proj.{kind}"] for p in "qkv"])
            for old, new in OPENCLIP_LAYER.items():
                out[f"transformer.resblocks.{i}.{new}.{kind}"] = state[f"{layer}{old}.{kind}"]
    return {"cond_stage_model.model." + k: v for k, v in out.items()}


def save_original_format(path, unet, vae, text_encoder, openclip: bool = False) -> None:
    """One `.safetensors` file, or a `.ckpt` pickle {"state_dict": ...} as CompVis writes it.
    `openclip`: the text encoder in SD 2.x's OpenCLIP layout (else SD 1.x's transformers layout)."""
    text = openclip_to_ldm(text_encoder) if openclip else clip_to_ldm(text_encoder)
    state = {k: v.contiguous().clone() for k, v in {**unet_to_ldm(unet), **vae_to_ldm(vae), **text}.items()}
    if str(path).endswith(".safetensors"):
        safetensors.torch.save_file(state, str(path))
    else:
        torch.save({"state_dict": state, "global_step": 0}, str(path))
