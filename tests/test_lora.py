"""LoRA (peft) of the 3D U-Net: exact properties of fresh, trained, scaled, fused, unfused and unloaded adapters,
the file round trip, the trainable parameter counts of the target groups, a LoRA training run, `generate --lora`
and the bad inputs (another architecture or rank, a missing file, a scale that is not a number)."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from conftest import assert_modes_follow_umask, make_tiny_pipeline, randomize_
from magicvideo.errors import InvalidArgumentError
from magicvideo.lora import BASE_HASH_KEY, add_lora, base_hash, lora_config, save_lora
from magicvideo.models.temporal_attention import DirectedTemporalAttention
from magicvideo.models.unet_3d_blocks import SpatioTemporalTransformer

SRC = str(Path(__file__).resolve().parents[1] / "src")
FRAMES = 4


def base_pipeline():
    pipe = make_tiny_pipeline(FRAMES)
    randomize_(pipe.unet)  # zero-initialised branches (temporal output, FPS embedding) become active
    return pipe


def unet_output(unet) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    x, context = torch.randn(2, 4, FRAMES, 8, 8, generator=g), torch.randn(2, 5, 32, generator=g)
    with torch.no_grad():
        return unet(x, torch.tensor([10, 500]), context, fps=8).sample


def train_steps(unet, steps: int = 3) -> None:
    params = [p for p in unet.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.1)
    g = torch.Generator().manual_seed(2)
    for _ in range(steps):
        x, context = torch.randn(2, 4, FRAMES, 8, 8, generator=g), torch.randn(2, 5, 32, generator=g)
        unet(x, 100, context, fps=8).sample.pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad()


def expected_count(unet, targets: set[str], rank: int, adaptors: bool) -> int:
    """LoRA parameters by hand from the architecture: r * (in + out) per linear projection, r * in * k * k +
    out * r per convolution, 2 * frames * channels per adaptor."""
    count = 0
    for module in unet.modules():
        if isinstance(module, DirectedTemporalAttention) and targets & {"temporal_attention", "attention"}:
            count += 4 * rank * 2 * module.to_q.in_features
        if isinstance(module, SpatioTemporalTransformer) and targets & {"spatial_attention", "attention"}:
            for block in module.transformer_blocks:
                for attn in (block.attn1, block.attn2):
                    count += sum(rank * (lin.in_features + lin.out_features)
                                 for lin in (attn.to_q, attn.to_k, attn.to_v, attn.to_out[0]))
        if isinstance(module, torch.nn.Conv2d) and "convolutions" in targets:
            count += rank * module.in_channels * module.kernel_size[0] * module.kernel_size[1] + module.out_channels * rank
        if adaptors and type(module).__name__ == "FrameAdaptor":
            count += 2 * module.scale.numel()
    return count


@pytest.mark.parametrize("targets,adaptors", [(["temporal_attention"], False), (["spatial_attention"], False),
                                              (["attention", "convolutions"], True), ([], True)])
def test_fresh_lora_is_exact_trains_and_counts_its_parameters(targets, adaptors):
    unet = base_pipeline().unet
    base = unet_output(unet)
    expected = expected_count(unet, set(targets), 2, adaptors)
    add_lora(unet, lora_config(unet, 2, 4.0, targets, adaptors))
    assert sum(p.numel() for p in unet.parameters() if p.requires_grad) == expected > 0
    assert all(".lora_" in name for name, p in unet.named_parameters() if p.requires_grad)
    assert torch.equal(unet_output(unet), base)  # B (or the adaptor update) starts at zero
    train_steps(unet)
    assert (unet_output(unet) - base).abs().max() > 1e-3


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A base pipeline, its output, and a LoRA of every kind trained a few steps on it, saved."""
    folder = tmp_path_factory.mktemp("lora")
    pipe = base_pipeline()
    base, fingerprint = unet_output(pipe.unet), base_hash(pipe.unet)
    add_lora(pipe.unet, lora_config(pipe.unet, 2, 4.0, ["attention", "convolutions"], adaptors=True))
    train_steps(pipe.unet)
    path = save_lora(pipe.unet, folder / "zoom", base=fingerprint)
    return {"base": base, "lora": unet_output(pipe.unet), "path": path, "folder": folder,
            "state": {k: v.clone() for k, v in pipe.unet.state_dict().items() if ".lora_" in k}}


def test_the_file_holds_exactly_what_was_trained_in_diffusers_format(trained):
    tensors = load_file(str(trained["path"]))
    assert trained["path"].name == "pytorch_lora_weights.safetensors"
    assert all(k.startswith("unet.") and ".lora_" in k for k in tensors) and len(tensors) == len(trained["state"])
    trained_values = sorted(v.sum().item() for v in trained["state"].values())
    assert sorted(v.sum().item() for v in tensors.values()) == trained_values
    with safe_open(str(trained["path"]), framework="pt") as f:
        metadata = f.metadata()
    settings = json.loads(metadata["lora_adapter_metadata"])
    assert settings["unet.r"] == 2 and settings["unet.lora_alpha"] == 4.0
    assert metadata[BASE_HASH_KEY] == base_hash(base_pipeline().unet)
    assert_modes_follow_umask(trained["path"])


def test_load_scale_fuse_unfuse_unload(trained):
    pipe = base_pipeline()
    assert pipe.load_lora_weights(trained["folder"] / "zoom", adapter_name="zoom") == "zoom"
    assert torch.equal(unet_output(pipe.unet), trained["lora"])  # save/load round trip
    pipe.set_adapters("zoom", 0.0)
    assert torch.equal(unet_output(pipe.unet), trained["base"])  # scale 0 == base
    pipe.set_adapters("zoom", 0.5)
    half = unet_output(pipe.unet)
    assert (half - trained["base"]).abs().max() > 1e-3 and (half - trained["lora"]).abs().max() > 1e-3
    weights = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    pipe.fuse_lora()
    torch.testing.assert_close(unet_output(pipe.unet), half, rtol=1e-5, atol=1e-5)  # fused == unfused, to rounding
    pipe.unfuse_lora()
    assert all(torch.equal(v, weights[k]) for k, v in pipe.unet.state_dict().items())  # bit for bit
    assert torch.equal(unet_output(pipe.unet), half)
    pipe.fuse_lora()
    pipe.unload_lora_weights()  # fused adapters are unfused first
    assert torch.equal(unet_output(pipe.unet), trained["base"])
    assert pipe.unet.state_dict().keys() == base_pipeline().unet.state_dict().keys()

    pipe.load_lora_weights(trained["path"], adapter_name="a")  # two adapters add up
    pipe.load_lora_weights(trained["path"], adapter_name="b")
    pipe.set_adapters(["a", "b"], [0.25, 0.25])
    torch.testing.assert_close(unet_output(pipe.unet), half, rtol=1e-5, atol=1e-5)


def test_bad_lora_files_name_the_file(trained, tmp_path, caplog):
    pipe = base_pipeline()
    with pytest.raises(InvalidArgumentError, match="no such LoRA file"):
        pipe.load_lora_weights(tmp_path / "missing")
    tensors = load_file(str(trained["path"]))
    with safe_open(str(trained["path"]), framework="pt") as f:
        metadata = f.metadata()
    wider = {k: torch.zeros(v.shape[0] + 1, *v.shape[1:]) if k.endswith("lora_A.weight") else v
             for k, v in tensors.items()}
    save_file(wider, str(tmp_path / "rank.safetensors"), metadata=metadata)
    with pytest.raises(InvalidArgumentError, match="rank.safetensors: its rank is not the rank it records"):
        pipe.load_lora_weights(tmp_path / "rank.safetensors")
    other = make_tiny_pipeline(FRAMES, block_out_channels=(16, 32), norm_num_groups=8)
    add_lora(other.unet, lora_config(other.unet, 2, 2.0, ["attention"]))
    other_file = save_lora(other.unet, tmp_path / "other")
    with pytest.raises(InvalidArgumentError, match="a LoRA for another architecture"):
        pipe.load_lora_weights(other_file)
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(InvalidArgumentError, match="junk.safetensors: not a LoRA safetensors file"):
        pipe.load_lora_weights(tmp_path / "junk.safetensors")
    assert not getattr(pipe.unet, "peft_config", {})  # refused before anything was loaded

    shifted = make_tiny_pipeline(FRAMES)
    randomize_(shifted.unet, seed=5)  # other base weights, same architecture: loads with a warning
    with caplog.at_level(logging.WARNING, logger="magicvideo.lora"):
        shifted.load_lora_weights(trained["path"])
    assert "trained on other base weights" in caplog.text


def test_lora_training_run_and_generate_with_it(tmp_path):
    """`train.lora` on a pipeline folder: final/ holds only the LoRA file, whose tensors are the trained ones and
    whose base hash is the pipeline's; `generate --lora` uses it; bad --lora values stop with one line, exit 2,
    --out untouched."""
    from magicvideo.training.synthetic import write_synthetic_dataset

    pipe = base_pipeline()
    pipe.save_pretrained(tmp_path / "base")
    manifest = write_synthetic_dataset(tmp_path / "data", 4, num_frames=6, size=16, seed=1)
    config = {"model": {"pretrained": str(tmp_path / "base")},
              "data": {"manifest": str(manifest), "num_frames": FRAMES, "resolution": 16, "max_stride": 1},
              "train": {"batch_size": 1, "max_steps": 2, "learning_rate": 1e-2, "warmup_steps": 0, "ema": False,
                        "lora": {"rank": 2, "alpha": 2.0, "targets": ["temporal_attention"]}},
              "output": {"output_dir": str(tmp_path / "run"), "checkpoint_every": 0}}
    (tmp_path / "lora.yaml").write_text(yaml.safe_dump(config))
    env = {"OMP_NUM_THREADS": "1", "PYTHONPATH": SRC, "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    run = lambda *a: subprocess.run([sys.executable, "-m", "magicvideo", *a], env=env, capture_output=True,  # noqa: E731
                                    text=True, timeout=600)
    done = run("train", str(tmp_path / "lora.yaml"))
    assert done.returncode == 0, done.stderr[-3000:]
    final = tmp_path / "run" / "final"
    assert sorted(p.name for p in final.iterdir()) == ["pytorch_lora_weights.safetensors"]
    tensors = load_file(str(final / "pytorch_lora_weights.safetensors"))
    assert tensors and all(".temporal_attention.to_" in k for k in tensors)
    with safe_open(str(final / "pytorch_lora_weights.safetensors"), framework="pt") as f:
        assert f.metadata()[BASE_HASH_KEY] == base_hash(pipe.unet)
    assert any(k.endswith("lora_B.weight") and v.abs().max() > 0 for k, v in tensors.items())  # it trained

    out = tmp_path / "clip.mp4"
    args = ["generate", "a clip", "--model", str(tmp_path / "base"), "--keyframes-only", "--steps", "2", "--out", str(out)]
    done = run(*args, "--lora", f"{final}:0.5", "--lora", str(final))
    assert done.returncode == 0 and out.is_file(), done.stderr[-3000:]
    before = out.read_bytes()
    for bad, message in ((f"{final}:strong", "--lora: .*the scale after ':' must be a number"),
                         (str(tmp_path / "nowhere.safetensors"), "--lora: .*nowhere.safetensors: no such LoRA file")):
        done = run(*args, "--lora", bad)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1 and re.search(message, lines[0]), lines
        assert out.read_bytes() == before


def test_the_demo_lists_the_loras_it_was_started_with(trained):
    gr = pytest.importorskip("gradio", reason="the demo extra: pip install 'magicvideo[demo]'")
    from magicvideo.demo import build_demo
    from magicvideo.lora import load_loras
    from magicvideo.pipelines.cascade import MagicVideoCascadePipeline

    cascade = MagicVideoCascadePipeline(base_pipeline())
    loras = load_loras(cascade.keyframes, [f"{trained['folder'] / 'zoom'}:0.8", str(trained["path"])])
    assert loras == {"zoom": 0.8, "zoom-2": 1.0}
    assert cascade.keyframes.get_active_adapters() == ["zoom", "zoom-2"]
    demo = build_demo(cascade, loras=loras)
    listed = [b.value for b in demo.blocks.values() if isinstance(b, gr.Markdown) and b.elem_id == "loras"]
    assert listed == ["LoRAs: zoom (scale 0.8), zoom-2 (scale 1)"]


def test_lora_and_fsdp_config_errors_name_the_key():
    from magicvideo.training.config import ConfigError, config_from_dict

    lora = config_from_dict({"train": {"lora": {"rank": 8, "targets": ["temporal_attention"], "adaptors": True}}})
    assert (lora.train.lora.rank, lora.train.lora.alpha, lora.train.lora.targets) == (8, 4.0, ["temporal_attention"])
    for data, message in (
            ({"train": {"lora": {"targets": ["attn"]}}}, r"^train\.lora\.targets: must be one of temporal_attention, "),
            ({"train": {"lora": {"rank": 0}}}, r"^train\.lora\.rank: must be at least 1, got 0"),
            ({"train": {"lora": {"rnak": 4}}}, r"^train\.lora\.rnak: unknown key"),
            ({"train": {"lora": {"targets": []}}}, r"^train\.lora\.targets: no target group and adaptors false"),
            ({"task": "vae", "train": {"lora": {}}}, r"^train\.lora: a LoRA of the 3D U-Net trains in task diffusion"),
            ({"model": {"freeze_spatial": True}, "train": {"lora": {}}}, r"^model\.freeze_spatial: not with train\.lora"),
            ({"train": {"fsdp": True}}, r"^train\.ema: not with train\.fsdp"),
            ({"train": {"fsdp": True, "ema": False, "lora": {}}}, r"^train\.fsdp: not with train\.lora")):
        with pytest.raises(ConfigError, match=message):
            config_from_dict(data)
