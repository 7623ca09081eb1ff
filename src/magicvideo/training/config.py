"""One YAML file holds every hyperparameter of an experiment; these dataclasses are its schema.

`load_config(path)` checks every key and type and names the offending key on error
(`ConfigError: train.learning_rate: expected float, got str 'fast'`). Sections: `task`
("diffusion" or "vae"), `model` (3D U-Net, VAE and text encoder sources), `vae` (the autoencoder
trained by `magicvideo train-vae`), `data`, `train` (optimisation) and `output` (checkpoints,
logging and samples). `configs/*.yaml` are commented examples.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml


class ConfigError(ValueError):
    """An unknown key or a value of the wrong type in a training config."""


@dataclass
class DataConfig:
    manifest: str | None = None  # CSV manifest (path,caption[,fps]); paths relative to `root`
    root: str | None = None  # folder the manifest's paths are relative to (default: the manifest's folder)
    shards: str | None = None  # WebDataset shards instead: "dir/shard-{0000..0099}.tar", a folder, or one .tar
    path_column: str = "{path}"  # format string over the CSV columns; WebVid: "{page_dir}/{videoid}.mp4"
    caption_column: str = "caption"  # WebVid: "name"
    fps_column: str = "fps"  # optional column; missing -> the file's own frame rate
    num_frames: int = 16  # frames per training clip (VAE training: frames taken per video sample)
    resolution: int = 256  # square training size in pixels (resize shorter side, centre crop)
    min_stride: int = 1  # frame strides drawn uniformly from [min_stride, max_stride]; fps = native / stride
    max_stride: int = 4
    # share of clips that start at their video's first frame (the rest start anywhere): for captions that
    # describe how a video begins, as the bouncing digits' name the initial direction (with
    # train.context_after_start). 0: every start equally likely
    first_frame_share: float = 0.0
    cache_dir: str | None = None  # latent cache (`magicvideo cache`); used for training when present
    cache_dtype: str = "float16"  # float16 or float32 latents and text embeddings in the cache
    cache_shard_size: int = 256  # videos per safetensors shard of the cache
    num_workers: int = 0  # DataLoader worker processes per training process
    shuffle: bool = True


@dataclass
class ModelConfig:
    pretrained: str | None = None  # a pipeline folder (`magicvideo init-from-sd` output, a previous `final/`)
    unet: dict = field(default_factory=dict)  # MagicVideoUNet3D arguments when training from scratch
    vae: str | None = None  # an AutoencoderKL folder (e.g. `train-vae`'s final/); overrides the pipeline's
    text_encoder: str | None = None  # folder with tokenizer + transformers encoder; "minilm": the bundled MiniLM
    # Tokens per prompt in the cross-attention context (None: the tokenizer's own, at most 77). Short
    # captions train faster with a short context; it is saved with the tokenizer, so pipelines keep it.
    text_max_length: int | None = None
    freeze_spatial: bool = False  # train only adaptors, temporal attention and the FPS embedding
    # give a pretrained keyframe U-Net the first-frame anchor channels (models/anchor.py; zero-initialised);
    # from scratch, set model.unet.in_channels to 2 * out_channels + 1 instead
    first_frame_anchor: bool = False
    gradient_checkpointing: bool = False


@dataclass
class VAEConfig:
    init: str | None = None  # an AutoencoderKL folder to fine-tune instead of starting from scratch
    block_out_channels: list[int] = field(default_factory=lambda: [64, 128, 256, 256])  # one per level: f = 2^(n-1)
    layers_per_block: int = 1
    latent_channels: int = 4
    norm_num_groups: int = 32
    reconstruction_loss: str = "l1"  # l1 or mse, per pixel value
    kl_weight: float = 1.0e-6  # weight of the KL divergence (per pixel value, LDM's convention)
    scaling_samples: int = 64  # clips encoded at the end to measure scaling_factor = 1 / std(latents)


@dataclass
class VideoVAEConfig:
    """`task: video_vae`: a VideoVAE (temporal decoder) fine-tuned from an image VAE (see
    `training/video_vae_task.py` and docs/video-vae.md)."""

    init: str | None = None  # an AutoencoderKL folder (or a VideoAutoencoderKL to continue from)
    temporal_layers: list[str] = field(default_factory=lambda: ["mid", "up0"])  # decoder stages: in, mid, up0, up1, ...
    temporal_attention_heads: int = 4
    temporal_window: int = 16  # frames a frame attends to (itself included)
    temporal_alignment: int = 6  # earlier frames moved onto the current one by the global motion (searched within +- this many px)
    train_decoder: bool = False  # False: only the temporal layers (the image decoder stays exact)
    reconstruction_loss: str = "l1"  # l1 or mse, per pixel value
    difference_weight: float = 1.0  # weight of the loss on frame-to-frame differences
    warp_weight: float = 0.0  # weight of |D[f+1] - shift(D[f])| with the real clip's global motion (rigid scenes)
    warp_clips: str = "generated"  # which clips the warp term applies to: generated (-like) or all
    generated_fraction: float = 0.5  # share of clips decoded from U-Net-denoised latents instead of clean ones
    generated_pipeline: str | None = None  # pipeline folder whose U-Net denoises them (None: the bundled model)
    generated_min_timestep: int = 0  # noise level range of the one-step (x0) denoising
    generated_max_timestep: int = 300
    generated_target: str = "real"  # their target: the real clip, or image_decoder (the initial decoder's frames of them)
    sample_clips: int = 2  # validation clips in the samples (contact sheet + mp4)


@dataclass
class SuperResolutionConfig:
    """The super-resolution stage (`task: super_resolution`): model size and training data."""

    init: str | None = None  # a SuperResolutionUNet (or upscale pipeline) folder to fine-tune
    scale: int = 4  # upscaling factor
    pixel_shuffle: int = 4  # the U-Net runs on the input folded by this factor (pixel_unshuffle)
    block_out_channels: list[int] = field(default_factory=lambda: [64, 128, 128])
    layers_per_block: int = 1
    norm_num_groups: int = 16
    residual_scale: float = 2.0  # diffusion variable: (hr - bicubic(lr)) * residual_scale
    head_channels: int = 0  # width of the full-resolution output head (0: none)
    split: str = "train"  # digits split the high-resolution patches are rendered from
    patch_size: int = 128  # high-resolution training patch (multiple of scale * pixel_shuffle * 2^(levels-1))
    two_digit_prob: float = 0.2  # fraction of patches with a second digit
    max_noise_level: int = 250  # noise augmentation of the low-resolution input: level ~ U[0, max]
    clean_prob: float = 0.2  # fraction of samples with no augmentation (level 0)
    sample_steps: int = 4  # validation samples: DDIM steps and noise level
    sample_noise_level: int = 20


@dataclass
class LoraTrainConfig:
    """`train.lora`: train a LoRA of the 3D U-Net instead of its weights (docs/lora.md, `magicvideo.lora`);
    `final/` then holds only `pytorch_lora_weights.safetensors`."""

    rank: int = 4
    alpha: float = 4.0  # the update is scaled by alpha / rank
    targets: list[str] = field(default_factory=lambda: ["attention"])  # groups of magicvideo.lora.TARGET_GROUPS
    adaptors: bool = False  # the frame-wise adaptors also train (a full update of their scale and shift)


@dataclass
class TrainConfig:
    seed: int = 0
    batch_size: int = 1  # clips per process per micro-batch
    gradient_accumulation_steps: int = 1
    max_steps: int = 1000  # optimizer steps
    learning_rate: float = 1.0e-4
    lr_scheduler: str = "constant_with_warmup"  # any diffusers.optimization.get_scheduler name (warmup included)
    warmup_steps: int = 500
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1.0e-8
    weight_decay: float = 1.0e-2
    max_grad_norm: float = 1.0  # 0 disables gradient clipping
    mixed_precision: str = "no"  # no, fp16 or bf16 (accelerate)
    caption_dropout: float = 0.1  # fraction of captions replaced by "" (classifier-free guidance)
    ema: bool = True
    ema_decay: float = 0.9999
    num_train_timesteps: int = 1000  # DDPMScheduler (from scratch; a pretrained pipeline keeps its own)
    beta_schedule: str = "scaled_linear"
    beta_start: float = 0.00085
    beta_end: float = 0.012
    prediction_type: str = "epsilon"
    snr_gamma: float = 0.0  # Min-SNR-gamma loss weighting (Hang et al. 2023), e.g. 5.0; 0 = plain MSE
    # task diffusion: how a clip's frames are noised (training/diffusion.py, NoiseSchedule). "clip": one
    # level for every frame (the paper); "per_frame": an independent level for every frame (diffusion forcing)
    noise_schedule: str = "clip"
    # fraction of clips noised to *staggered* levels: frame f at t0 + slope * f (clamped to 0 ... T - 1; slope up
    # to `staggered_max_slope` timesteps per frame), the pattern of staggered sampling (`frame_lag`)
    staggered_fraction: float = 0.0
    staggered_max_slope: float = 160.0
    # fraction of clips whose first k frames (k uniform in 1 ... F - 1) are context: clean or lightly noised (a
    # timestep uniform in [0, context_max_timestep] each) and left out of the loss: what causal sampling
    # (`chunk_size`) shows the model beside the frames it makes. 0: none
    context_fraction: float = 0.0
    context_max_timestep: int = 0
    # clips that start after their video's first frame get at least this many context frames (k uniform in
    # this ... F - 1), so that a caption describing how the video begins is never the clip's only cue. 0: off
    context_after_start: int = 0
    lora: LoraTrainConfig | None = None  # a LoRA instead of the whole U-Net (task diffusion or interpolation)
    # shard parameters, gradients and optimizer states over the processes (FSDP2, training/fsdp.py; several
    # processes, no EMA, no LoRA); false: each process holds the whole model (DDP)
    fsdp: bool = False


@dataclass
class OutputConfig:
    output_dir: str = "runs/experiment"
    checkpoint_every: int = 500  # optimizer steps between checkpoints (0: only the final pipeline)
    keep_checkpoints: int = 3  # newest checkpoints kept
    log_every: int = 1  # steps between metrics.csv rows
    sample_every: int = 0  # steps between validation samples (0: only at the end)
    validation_prompts: list[str] = field(default_factory=list)
    sample_steps: int = 25
    sample_guidance_scale: float = 7.5
    sample_fps: float = 8.0
    sample_seed: int = 0


@dataclass
class InterpolationConfig:
    # task: interpolation (docs/interpolation.md). Each training clip is data.num_frames consecutive
    # frames (data.min_stride = max_stride = 1); every keyframe_stride-th frame is a keyframe.
    keyframe_stride: int = 3  # the interpolation factor k: 8 fps keyframes -> 24 fps video
    # denoise the difference from the linear blend of the keyframe latents, predicted as x0 (the
    # scheduler's prediction_type becomes "sample"); a converted keyframe model gets conv_out at zero,
    # so training starts from the blend (models/interpolation.py)
    residual: bool = False


@dataclass
class Config:
    task: str = "diffusion"  # diffusion (3D U-Net), vae (AutoencoderKL, same as `magicvideo train-vae`), video_vae, super_resolution, interpolation
    model: ModelConfig = field(default_factory=ModelConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    video_vae: VideoVAEConfig = field(default_factory=VideoVAEConfig)
    sr: SuperResolutionConfig = field(default_factory=SuperResolutionConfig)
    interpolation: InterpolationConfig = field(default_factory=InterpolationConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


CHOICES = {
    "task": ("diffusion", "vae", "video_vae", "super_resolution", "interpolation"),
    "video_vae.reconstruction_loss": ("l1", "mse"),
    "sr.split": ("train", "test"),
    "train.mixed_precision": ("no", "fp16", "bf16"),
    "train.noise_schedule": ("clip", "per_frame"),
    "train.prediction_type": ("epsilon", "v_prediction", "sample"),  # sample (x0): super_resolution only
    "vae.reconstruction_loss": ("l1", "mse"),
    "data.cache_dtype": ("float16", "float32"),
    "train.lora.targets": ("temporal_attention", "spatial_attention", "attention", "convolutions"),  # lora.TARGET_GROUPS
}
# Lower bounds of counts (None, where allowed, keeps its meaning).
MINIMUM = {
    **dict.fromkeys(("model.text_max_length", "train.batch_size", "train.gradient_accumulation_steps",
                     "train.max_steps", "data.num_frames", "data.resolution", "data.min_stride", "data.max_stride",
                     "data.cache_shard_size", "output.keep_checkpoints", "output.log_every", "output.sample_steps",
                     "vae.layers_per_block", "vae.latent_channels", "vae.scaling_samples",
                     "video_vae.temporal_attention_heads", "video_vae.temporal_window", "video_vae.temporal_alignment",
                     "sr.scale", "sr.pixel_shuffle", "sr.layers_per_block", "sr.norm_num_groups", "sr.patch_size",
                     "sr.sample_steps", "train.lora.rank"), 1),
    **dict.fromkeys(("video_vae.difference_weight", "video_vae.warp_weight", "video_vae.generated_fraction", "video_vae.generated_min_timestep",
                     "video_vae.generated_max_timestep", "video_vae.sample_clips"), 0),
    **dict.fromkeys(("sr.max_noise_level", "sr.sample_noise_level"), 0),
    "interpolation.keyframe_stride": 2,
    **dict.fromkeys(("train.warmup_steps", "data.num_workers", "output.checkpoint_every", "output.sample_every",
                     "train.staggered_fraction", "train.staggered_max_slope", "train.context_fraction",
                     "train.context_max_timestep", "train.context_after_start", "data.first_frame_share"), 0),
}
AT_MOST_ONE = ("train.staggered_fraction", "train.context_fraction", "data.first_frame_share")
# Keys that existed once: a config that still names one fails with what became of it.
_NOT_ADOPTED = "measured and not adopted (docs/experiments.md; the code is in git history at 82abbbb)"
REMOVED_KEYS = {
    **dict.fromkeys(("model.spatial_attention", "model.temporal_attention_scope", "model.space_time_attention",
                     "model.temporal_convolution", "model.spatial_position_encoding", "train.noise_sharing",
                     "train.lr_scale", "train.frame_difference_weight", "train.frame_difference_lags",
                     "video_vae.temporal_radius"), _NOT_ADOPTED),
    **dict.fromkeys(("video_vae.temporal_recency_bias", "video_vae.temporal_gated"),
                    "always on now: the VideoVAE is the shipped gated, aligned one (docs/video-vae.md)"),
    "model.temporal_attention": "set the mode in model.unet.temporal_attention when training from scratch",
}


def _convert(value, kind, key: str):
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        return _convert(value, next(o for o in options if o is not type(None)), key)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__} {value!r}")
        key_kind, value_kind = typing.get_args(kind)
        return {_convert(k, key_kind, f"{key} key"): _convert(v, value_kind, f"{key}.{k}") for k, v in value.items()}
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        (item,) = typing.get_args(kind)
        return [_convert(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of keys, got {type(value).__name__} {value!r}")
        return _from_dict(kind, value, f"{key}.")
    if kind is float and isinstance(value, str):  # YAML reads 1e-4 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise ConfigError(f"{key}: expected {kind.__name__}, got {type(value).__name__} {value!r}")
    return value


def _from_dict(cls, data: dict, prefix: str = ""):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if prefix + key in REMOVED_KEYS:
            raise ConfigError(f"{prefix}{key}: removed ({REMOVED_KEYS[prefix + key]})")
        if key not in names:
            raise ConfigError(f"{prefix}{key}: unknown key (known keys: {', '.join(sorted(names))})")
    values = {}
    for key, value in data.items():
        values[key] = _convert(value, hints[key], prefix + key)
        allowed = CHOICES.get(prefix + key)
        chosen = values[key] if isinstance(values[key], list) else [values[key]]
        if allowed and any(v is not None and v not in allowed for v in chosen):
            raise ConfigError(f"{prefix}{key}: must be one of {', '.join(allowed)}, got {values[key]!r}")
        low = MINIMUM.get(prefix + key)
        items = values[key] if isinstance(values[key], list) else [values[key]]
        if low is not None and any(item is not None and item < low for item in items):
            raise ConfigError(f"{prefix}{key}: must be at least {low}, got {values[key]!r}")
        if prefix + key in AT_MOST_ONE and values[key] > 1:
            raise ConfigError(f"{prefix}{key}: must be at most 1, got {values[key]!r}")
    return cls(**values)


def config_from_dict(data: dict | None) -> Config:
    config = _from_dict(Config, data or {})
    if config.train.prediction_type == "sample" and config.task != "super_resolution":
        raise ConfigError("train.prediction_type: sample (x0) is only supported by task super_resolution")
    lora = config.train.lora
    if lora is not None:
        if config.task not in ("diffusion", "interpolation"):
            raise ConfigError(f"train.lora: a LoRA of the 3D U-Net trains in task diffusion or interpolation, not {config.task}")
        if not lora.targets and not lora.adaptors:
            raise ConfigError("train.lora.targets: no target group and adaptors false: the LoRA would train nothing")
        if lora.alpha <= 0:
            raise ConfigError(f"train.lora.alpha: must be > 0, got {lora.alpha!r}")
        if config.model.freeze_spatial:
            raise ConfigError("model.freeze_spatial: not with train.lora (a LoRA trains only its own parameters)")
    if config.train.context_after_start and config.train.context_after_start >= config.data.num_frames:
        raise ConfigError(f"train.context_after_start: must be below data.num_frames ({config.data.num_frames}), got "
                          f"{config.train.context_after_start}")
    if config.train.fsdp and config.train.ema:
        raise ConfigError("train.ema: not with train.fsdp (the EMA copy is not sharded); set train.ema: false")
    if config.train.fsdp and lora is not None:
        raise ConfigError("train.fsdp: not with train.lora (a LoRA is small: train it with DDP)")
    return config


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Set `section.key=value` overrides (values parsed as YAML) in a raw config mapping."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. train.learning_rate=1e-4")
        *sections, leaf = key.strip().split(".")
        node = data
        for section in sections:
            node = node.setdefault(section, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{key}: {section} is a value, not a section")
        node[leaf] = yaml.safe_load(text)
    return data


def load_config(path: str | Path, overrides: list[str] = ()) -> Config:
    """Read and check a YAML config (see module docstring), with `--set` style overrides applied."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"cannot read config {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {err}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return config_from_dict(apply_overrides(data or {}, list(overrides)))


def save_config(config: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")
