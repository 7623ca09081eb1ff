"""Initialise a MagicVideo pipeline from Stable Diffusion (1.x or 2.x).

The SD U-Net is inflated into a `MagicVideoUNet3D` (every spatial weight copied; frame-wise
adaptors at identity, temporal attention output projections and the FPS embedding's last layer at
zero, so the video model starts as SD applied per frame). SD's VAE, CLIP text encoder and
tokenizer are copied unchanged; the scheduler is built from SD's scheduler config (same betas,
prediction type and timestep spacing), DDIM by default.

SD comes either as a diffusers folder (`unet/`, `vae/`, `text_encoder/`, `tokenizer/`,
`scheduler/`) or as one original-format (CompVis/LDM key layout) `.safetensors` / `.ckpt` file.
A single file holds weights only: the architecture configs and tokenizer are then read from a
local diffusers-format SD folder (`config`, weights not needed) and the weights are converted by
diffusers' own single-file loaders.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders.single_file_utils import (
    SingleFileComponentError,
    create_diffusers_clip_model_from_ldm,
    load_single_file_checkpoint,
)
from transformers import CLIPTextModel, CLIPTokenizer

from .errors import InvalidArgumentError
from .pipelines.keyframes import MagicVideoPipeline
from .sampling import SCHEDULERS
from .models.temporal_attention import TEMPORAL_ATTENTION_MODES
from .models.unet_3d import MagicVideoUNet3D

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth")
# What a diffusers-format SD folder must hold (for a single-file SRC: configs and tokenizer only).
REQUIRED_CONFIGS = ("unet/config.json", "vae/config.json", "text_encoder/config.json", "scheduler/scheduler_config.json")
LDM_UNET_PREFIX = "model.diffusion_model."


def _check_sd_folder(folder: Path, argument: str) -> None:
    missing = [name for name in REQUIRED_CONFIGS if not (folder / name).is_file()]
    if not (folder / "tokenizer").is_dir():
        missing.append("tokenizer/")
    if missing:
        raise InvalidArgumentError(argument, f"{folder} is not a diffusers-format Stable Diffusion folder "
                         f"(missing {', '.join(missing)})")
    unet_class = json.loads((folder / "unet/config.json").read_text()).get("_class_name")
    if unet_class != "UNet2DConditionModel":
        raise InvalidArgumentError(argument, f"{folder}/unet is a {unet_class}, not Stable Diffusion's UNet2DConditionModel")


def _scheduler(folder: Path, name: str):
    config = json.loads((folder / "scheduler/scheduler_config.json").read_text())
    # As diffusers' StableDiffusionPipeline does for old SD configs: latents are not clipped to
    # [-1, 1] and timesteps are offset by one.
    return SCHEDULERS[name].from_config({**config, "clip_sample": False, "steps_offset": 1})


def _load_folder(src: Path):
    models = []
    for name, cls in (("unet", UNet2DConditionModel), ("vae", AutoencoderKL), ("text_encoder", CLIPTextModel)):
        try:
            models.append(cls.from_pretrained(src, subfolder=name))
        except (OSError, ValueError, RuntimeError) as err:  # e.g. a config-only folder: no weights
            raise InvalidArgumentError("src", f"cannot load the {name} of {src}: {str(err).splitlines()[0]}") from err
    return models


def _load_single_file(src: Path, config: Path, extract_ema: bool):
    # diffusers loads `.ckpt` pickles with torch.load(weights_only=True): no code is executed.
    try:
        checkpoint = load_single_file_checkpoint(str(src), local_files_only=True)
    except Exception as err:  # safetensors and pickle readers raise many kinds: all mean a bad file
        raise InvalidArgumentError("src", f"cannot read {src}: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from err
    if not any(key.startswith(LDM_UNET_PREFIX) for key in checkpoint):
        raise InvalidArgumentError("src", f"{src} is not an original-format Stable Diffusion checkpoint "
                         f"(no {LDM_UNET_PREFIX}* keys)")
    common = dict(config=str(config), local_files_only=True)
    loaders = {
        "unet": lambda: UNet2DConditionModel.from_single_file(checkpoint, subfolder="unet", extract_ema=extract_ema,
                                                              **common),
        "vae": lambda: AutoencoderKL.from_single_file(checkpoint, subfolder="vae", **common),
        "text_encoder": lambda: create_diffusers_clip_model_from_ldm(CLIPTextModel, checkpoint,
                                                                     subfolder="text_encoder", **common),
    }
    models = []
    for name, load in loaders.items():
        # Weights absent from the checkpoint stay on the meta device; diffusers then fails on them.
        hint = f"does the architecture in {config}/{name} (--config) match the checkpoint, e.g. SD 1.x vs 2.x?"
        try:
            model = load()
        except (ValueError, RuntimeError, NotImplementedError, KeyError, SingleFileComponentError) as err:
            reason = "weights are missing" if isinstance(err, NotImplementedError) else str(err).splitlines()[0]
            raise InvalidArgumentError("src", f"cannot load the {name} of {src}: {reason}; {hint}") from err
        absent = [key for key, value in model.state_dict().items() if value.is_meta]
        if absent:
            raise InvalidArgumentError("src", f"{src} lacks {len(absent)} {name} weights (e.g. {absent[0]}); {hint}")
        models.append(model)
    return models


def load_sd_pipeline(
    src: str | os.PathLike,
    num_frames: int = 16,
    temporal_attention: str = "directed",
    config: str | os.PathLike | None = None,
    scheduler: str = "ddim",
    dtype: torch.dtype = torch.float32,
    extract_ema: bool = False,
    **unet_overrides,
) -> MagicVideoPipeline:
    """Build (in memory) the MagicVideo pipeline initialised from the SD model at `src`.

    Arguments as for `init_from_sd`.
    """
    if temporal_attention not in TEMPORAL_ATTENTION_MODES:
        raise InvalidArgumentError("temporal_attention", f"unknown mode {temporal_attention!r}; "
                         f"choose one of {', '.join(TEMPORAL_ATTENTION_MODES)}")
    if scheduler not in SCHEDULERS:
        raise InvalidArgumentError("scheduler", f"unknown scheduler {scheduler!r}; choose one of {', '.join(sorted(SCHEDULERS))}")
    if not isinstance(num_frames, int) or num_frames < 1:
        raise InvalidArgumentError("num_frames", f"must be an integer >= 1, got {num_frames!r}")
    src = Path(src)
    if not src.exists():
        raise InvalidArgumentError("src", f"{src} does not exist")
    if src.is_dir():
        if config is not None:
            raise InvalidArgumentError("config", "only used with a single-file SRC; a diffusers folder carries its own configs")
        _check_sd_folder(src, "src")
        unet2d, vae, text_encoder = _load_folder(src)
        config_dir = src
    else:
        if src.suffix.lower() not in SINGLE_FILE_SUFFIXES:
            raise InvalidArgumentError("src", f"{src} is neither a diffusers folder nor a single-file checkpoint "
                             f"({', '.join(SINGLE_FILE_SUFFIXES)})")
        if config is None:
            raise InvalidArgumentError("config", f"the single-file checkpoint {src} holds weights only; give a local "
                             "diffusers-format SD folder of the same architecture (its json configs and "
                             "tokenizer; its weights are not needed)")
        config_dir = Path(config)
        if not config_dir.is_dir():
            raise InvalidArgumentError("config", f"{config_dir} is not a folder")
        _check_sd_folder(config_dir, "config")
        unet2d, vae, text_encoder = _load_single_file(src, config_dir, extract_ema)

    unet = MagicVideoUNet3D.from_unet2d(unet2d.float(), num_frames=num_frames, temporal_attention=temporal_attention,
                                        **unet_overrides)
    tokenizer = CLIPTokenizer.from_pretrained(config_dir, subfolder="tokenizer")
    pipe = MagicVideoPipeline(unet=unet.eval(), vae=vae.eval(), text_encoder=text_encoder.eval(),
                              tokenizer=tokenizer, scheduler=_scheduler(config_dir, scheduler))
    return pipe.to(dtype=dtype)


def init_from_sd(
    src: str | os.PathLike,
    out: str | os.PathLike,
    num_frames: int = 16,
    temporal_attention: str = "directed",
    config: str | os.PathLike | None = None,
    scheduler: str = "ddim",
    dtype: torch.dtype = torch.float32,
    extract_ema: bool = False,
    overwrite: bool = False,
    **unet_overrides,
) -> Path:
    """Write a MagicVideo pipeline folder at `out` initialised from Stable Diffusion at `src`.

    - `src`: an SD diffusers folder, or an original-format `.safetensors` / `.ckpt` file.
    - `config`: for a single-file `src`, a local diffusers-format SD folder of the same
      architecture (json configs + tokenizer; no weights needed). Not used for folders.
    - `num_frames`: frames per clip (length of the frame-wise adaptors).
    - `temporal_attention`: one of `TEMPORAL_ATTENTION_MODES`.
    - `scheduler`: one of `SCHEDULERS`, built from SD's scheduler config (same noise schedule).
    - `dtype`: dtype of the saved weights (float32 by default, also for fp16 checkpoints).
    - `extract_ema`: single files holding both EMA and non-EMA U-Net weights: take the EMA ones.
    - `overwrite`: replace a non-empty `out`. The folder is written next to `out` and moved into
      place only when complete.
    - `unet_overrides`: further `MagicVideoUNet3D` arguments (e.g. `temporal_attention_heads`).

    Returns the output folder; `MagicVideoPipeline.from_pretrained(out)` loads it.
    """
    src, out = Path(src), Path(out)
    if out.exists() and not out.is_dir():
        raise InvalidArgumentError("out", f"{out} exists and is not a folder")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise InvalidArgumentError("out", f"{out} exists and is not empty; choose another folder or overwrite it (--overwrite)")
    if src.exists() and out.resolve() in (src.resolve(), *src.resolve().parents):
        raise InvalidArgumentError("out", f"{out} would replace the source model {src}")
    pipe = load_sd_pipeline(src, num_frames, temporal_attention, config, scheduler, dtype, extract_ema,
                            **unet_overrides)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        pipe.save_pretrained(staging)
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out
