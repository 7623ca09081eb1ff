"""init_from_sd on tiny random models of Stable Diffusion's architecture, in both SD formats."""

from __future__ import annotations

import json
import shutil

import pytest
import safetensors.torch
import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from _sd_original_format import save_original_format, unet_to_ldm
from conftest import randomize_
from magicvideo import MagicVideoPipeline
from magicvideo.cli import main
from magicvideo.init_from_sd import init_from_sd

NUM_FRAMES = 4
# SD 1.x topology (4 levels, 2 layers per block, 3 cross-attention levels), tiny widths.
SD_UNET = dict(sample_size=8, block_out_channels=(32, 32, 64, 64), layers_per_block=2, cross_attention_dim=32,
               attention_head_dim=8, norm_num_groups=8)
SD_VAE = dict(block_out_channels=(8, 16, 16, 16), layers_per_block=2, latent_channels=4, norm_num_groups=4,
              sample_size=64, down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
              scaling_factor=0.18215)
# SD 1.5's scheduler_config.json.
SD_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                    set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1, clip_sample=False)
WORDS = ("a", "cat", "dog", "runs", "on", "the", "beach")


# SD 2.x differences: linear transformer projections, per-level head counts, GELU CLIP, v-prediction.
SD2_UNET = {**SD_UNET, "attention_head_dim": (2, 2, 4, 4), "use_linear_projection": True}
WORDS = ("a", "cat", "dog", "runs", "on", "the", "beach")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from threads; on a busy 2-core machine, 2 threads are many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_clip(folder, **config):
    """A CLIP BPE tokenizer over a tiny vocabulary (written here, offline) and a tiny CLIPTextModel."""
    chars = sorted(set("".join(WORDS)))
    vocab = ["<|startoftext|>", "<|endoftext|>", *chars, *(c + "</w>" for c in chars)]
    merges = []
    for word in WORDS:  # merge every word left to right into one token
        token = word[0]
        for i, c in enumerate(word[1:], 1):
            c = c + ("</w>" if i == len(word) - 1 else "")
            merges.append(f"{token} {c}")
            token += c
            vocab.append(token)
    vocab = list(dict.fromkeys(vocab))
    merges = list(dict.fromkeys(merges))
    folder.mkdir()
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), pad_token="<|endoftext|>")
    torch.manual_seed(1)
    config = CLIPTextConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                            num_attention_heads=4, max_position_embeddings=77, bos_token_id=0, eos_token_id=1,
                            pad_token_id=1, **config)
    return tokenizer, CLIPTextModel(config).eval()


def build_sd(root, sd2: bool = False) -> StableDiffusionPipeline:
    """Tiny SD saved as a diffusers folder, a weightless config folder and single files."""
    tokenizer, text_encoder = tiny_clip(root / "vocab", **({"hidden_act": "gelu"} if sd2 else {}))
    torch.manual_seed(0)
    unet = randomize_(UNet2DConditionModel(**(SD2_UNET if sd2 else SD_UNET)), std=0.05).eval()
    vae = AutoencoderKL(**SD_VAE).eval()
    scheduler = PNDMScheduler.from_config({**SD_SCHEDULER, **({"prediction_type": "v_prediction"} if sd2 else {})})
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(root / "folder")
    shutil.copytree(root / "folder", root / "config", ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    for suffix in ("safetensors",) if sd2 else ("safetensors", "ckpt"):
        save_original_format(root / f"sd.{suffix}", unet, vae, text_encoder, openclip=sd2)
    return pipe


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    root = tmp_path_factory.mktemp("sd")
    return dict(root=root, pipe=build_sd(root))


def assert_same_weights(model, reference, keys=None):
    state, ref = model.state_dict(), reference.state_dict()
    for key in keys or ref:
        assert torch.equal(state[key], ref[key]), key


@pytest.fixture(scope="module", params=["folder", "safetensors", "ckpt"])
def converted(request, sd):
    """(source SD pipeline, loaded MagicVideo pipeline) for each source format."""
    root, kind = sd["root"], request.param
    src, config = (root / "folder", None) if kind == "folder" else (root / f"sd.{kind}", root / "config")
    out = init_from_sd(src, root / f"out-{kind}", num_frames=NUM_FRAMES, config=config)
    return sd["pipe"], MagicVideoPipeline.from_pretrained(out)


def test_weights_reach_every_component_exactly(converted):
    sd_pipe, pipe = converted
    new = set(pipe.unet.new_parameter_names())
    assert set(pipe.unet.state_dict()) - set(sd_pipe.unet.state_dict()) == new  # missing = exactly the new ones
    assert set(sd_pipe.unet.state_dict()) <= set(pipe.unet.state_dict())
    assert {name.split(".")[-2] for name in new} >= {"adaptor", "to_out"}
    assert any(name.startswith("fps_embedding.") for name in new)
    assert_same_weights(pipe.unet, sd_pipe.unet)
    assert_same_weights(pipe.vae, sd_pipe.vae)
    assert_same_weights(pipe.text_encoder, sd_pipe.text_encoder)
    assert pipe.vae.config.scaling_factor == sd_pipe.vae.config.scaling_factor
    prompt = "a cat runs on the beach"
    assert pipe.tokenizer(prompt).input_ids == sd_pipe.tokenizer(prompt).input_ids
    assert len(pipe.tokenizer(prompt).input_ids) == 2 + len(prompt.split())  # every word is one token
    assert isinstance(pipe.scheduler, DDIMScheduler)
    assert torch.equal(pipe.scheduler.betas, sd_pipe.scheduler.betas)
    assert pipe.scheduler.config.steps_offset == 1 and not pipe.scheduler.config.clip_sample


def test_new_parameters_start_at_identity_and_zero(converted):
    _, pipe = converted
    for name, value in pipe.unet.state_dict().items():
        if name.endswith("adaptor.scale"):
            assert torch.equal(value, torch.ones_like(value)), name
        elif name.endswith(("adaptor.shift", "temporal_attention.to_out.weight", "temporal_attention.to_out.bias",
                            "fps_embedding.linear_2.weight", "fps_embedding.linear_2.bias")):
            assert torch.equal(value, torch.zeros_like(value)), name
    assert pipe.unet.config.num_frames == NUM_FRAMES and pipe.unet.config.temporal_attention == "directed"


@torch.no_grad()
def test_inflated_unet_equals_sd_unet_per_frame(converted):
    sd_pipe, pipe = converted
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(2, 4, NUM_FRAMES, 8, 8, generator=generator)
    context = torch.randn(2, 7, 32, generator=generator)
    timestep = torch.tensor([10, 700])
    video = pipe.unet(sample, timestep, context, fps=torch.tensor([4.0, 8.0])).sample
    frames = sample.permute(0, 2, 1, 3, 4).flatten(0, 1)
    per_frame = sd_pipe.unet(frames, timestep.repeat_interleave(NUM_FRAMES),
                             context.repeat_interleave(NUM_FRAMES, 0)).sample
    expected = per_frame.unflatten(0, (2, NUM_FRAMES)).permute(0, 2, 1, 3, 4)
    assert expected.abs().mean() > 0.1  # a non-trivial output
    assert (video - expected).abs().max() <= 1e-4


@pytest.mark.parametrize("kind", ["folder", "safetensors"])
def test_sd2_with_openclip_text_encoder_and_v_prediction(tmp_path, kind):
    sd_pipe = build_sd(tmp_path, sd2=True)
    src, config = (tmp_path / "folder", None) if kind == "folder" else (tmp_path / "sd.safetensors", tmp_path / "config")
    pipe = MagicVideoPipeline.from_pretrained(init_from_sd(src, tmp_path / "out", num_frames=2, config=config))
    assert_same_weights(pipe.unet, sd_pipe.unet)
    assert_same_weights(pipe.vae, sd_pipe.vae)
    assert_same_weights(pipe.text_encoder, sd_pipe.text_encoder)
    assert pipe.unet.config.use_linear_projection and list(pipe.unet.config.attention_head_dim) == [2, 2, 4, 4]
    assert pipe.scheduler.config.prediction_type == "v_prediction"


def test_extract_ema_takes_the_ema_unet_weights(sd, tmp_path):
    """A CompVis checkpoint with EMA copies (`model_ema.` + key without its dots) of the U-Net."""
    unet = sd["pipe"].unet
    ema_unet = randomize_(UNet2DConditionModel(**SD_UNET), seed=5, std=0.05)
    state = {k: v.clone() for k, v in torch.load(sd["root"] / "sd.ckpt", weights_only=True)["state_dict"].items()}
    state.update({"model_ema." + "".join(k.split(".")[1:]): v for k, v in unet_to_ldm(ema_unet).items()})
    torch.save({"state_dict": state}, tmp_path / "ema.ckpt")
    for extract_ema, reference in ((False, unet), (True, ema_unet)):
        out = init_from_sd(tmp_path / "ema.ckpt", tmp_path / f"out-{extract_ema}", num_frames=2,
                           config=sd["root"] / "config", extract_ema=extract_ema)
        assert_same_weights(MagicVideoPipeline.from_pretrained(out).unet, reference)


def test_cli_writes_a_pipeline_that_generates(sd, tmp_path):
    out = tmp_path / "out"
    out.mkdir()  # an existing empty folder is fine
    argv = ["init-from-sd", str(sd["root"] / "sd.safetensors"), str(out), "--config", str(sd["root"] / "config"),
            "--num-frames", "3", "--temporal-attention", "bidirectional", "--scheduler", "euler"]
    assert main(argv) == 0
    pipe = MagicVideoPipeline.from_pretrained(out)
    assert isinstance(pipe.scheduler, EulerDiscreteScheduler)
    assert torch.equal(pipe.scheduler.betas, sd["pipe"].scheduler.betas)
    assert (pipe.unet.config.num_frames, pipe.unet.config.temporal_attention) == (3, "bidirectional")
    pipe.set_progress_bar_config(disable=True)
    frames = pipe("a cat runs on the beach", num_frames=3, height=64, width=64, num_inference_steps=2,
                  generator=torch.Generator().manual_seed(0)).frames
    assert frames.shape == (1, 3, 64, 64, 3) and frames.min() >= 0 and frames.max() <= 1
    # --overwrite replaces a non-empty OUT completely, and nothing is left next to it.
    (out / "stale.txt").write_text("old")
    assert main(argv[:-4] + ["--overwrite"]) == 0
    assert not (out / "stale.txt").exists()
    assert MagicVideoPipeline.from_pretrained(out).unet.config.num_frames == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("case, named", [
    ("missing_src", "SRC"),
    ("not_sd_folder", "SRC"),
    ("single_file_without_config", "--config"),
    ("config_not_sd", "--config"),
    ("unknown_temporal_attention", "--temporal-attention"),
    ("unknown_scheduler", "--scheduler"),
    ("out_not_empty", "--overwrite"),
    ("out_is_src", "OUT"),
    ("weights_missing", "--config"),
    ("folder_without_weights", "SRC"),
    ("not_a_checkpoint", "SRC"),
])
def test_cli_errors_name_the_argument(sd, tmp_path, capsys, case, named):
    root = sd["root"]
    (tmp_path / "not-sd" / "unet").mkdir(parents=True)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    folder, single, out = str(root / "folder"), str(root / "sd.safetensors"), str(tmp_path / "out")
    state = safetensors.torch.load_file(single)
    del state["model.diffusion_model.out.2.weight"]
    safetensors.torch.save_file(state, tmp_path / "partial.safetensors")
    (tmp_path / "junk.ckpt").write_text("not a pickle")
    argv = {
        "missing_src": [str(tmp_path / "nope"), out],
        "not_sd_folder": [str(tmp_path / "not-sd"), out],
        "single_file_without_config": [single, out],
        "config_not_sd": [single, out, "--config", str(tmp_path / "not-sd")],
        "unknown_temporal_attention": [folder, out, "--temporal-attention", "sideways"],
        "unknown_scheduler": [folder, out, "--scheduler", "magic"],
        "out_not_empty": [folder, str(tmp_path / "full")],
        "out_is_src": [folder, folder, "--overwrite"],
        "folder_without_weights": [str(root / "config"), out],
        "weights_missing": [str(tmp_path / "partial.safetensors"), out, "--config", str(root / "config")],
        "not_a_checkpoint": [str(tmp_path / "junk.ckpt"), out, "--config", str(root / "config")],
    }[case]
    capsys.readouterr()
    assert main(["init-from-sd", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("magicvideo init-from-sd: error: ") and named in err and "\n" not in err, err
    assert not (tmp_path / "out").exists()
    assert (root / "folder" / "unet").is_dir()


def test_help_describes_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["init-from-sd", "--help"])
    text = capsys.readouterr().out
    for option in ("--config", "--num-frames", "--temporal-attention", "--scheduler", "--overwrite", "directed", "ddim"):
        assert option in text
