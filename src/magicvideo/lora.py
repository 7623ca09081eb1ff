"""LoRA for the MagicVideo 3D U-Net, with peft, in diffusers' LoRA file format.

Target groups (`TARGET_GROUPS`, the `train.lora.targets` of a training config):
- ``temporal_attention``: q, k, v and output projections of the directed temporal attention;
- ``spatial_attention``: q, k, v and output projections of the spatial self- and cross-attention
  (diffusers' usual LoRA targets for an image U-Net);
- ``attention``: both;
- ``convolutions``: every frame-wise convolution (`FrameAdaptedConv2d`).

peft wraps linear layers itself. A frame-wise convolution takes the frame count as an extra argument
and is followed by its frame-wise adaptor, so it gets a LoRA layer of its own (`FrameAdaptedLoraConv2d`,
registered with peft's custom-module dispatch): the low-rank update is added to the convolution's output
*before* the adaptor, so fusing it into the convolution's weight gives the same function. With
`adaptors=True` every frame-wise adaptor also trains: `FrameAdaptorLora` holds a full (frames,
channels) update of its scale and shift per adapter, scaled, fused and unloaded like the low-rank ones.

`LoraMixin` gives `MagicVideoPipeline` diffusers' LoRA API: `load_lora_weights(path, adapter_name=...)`,
`set_adapters(names, weights)`, `fuse_lora()` / `unfuse_lora()` (the unfused weights are restored
bit for bit), `unload_lora_weights()`, `save_lora_weights(...)`. A LoRA file is
`pytorch_lora_weights.safetensors`: the adapter's tensors under `unet.<module>.lora_A.weight` (peft's
names), its peft settings in the `lora_adapter_metadata` entry (diffusers'), and the SHA-256 of the
base U-Net's weights it was trained on (`BASE_HASH_KEY`); loading it on other weights warns.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from pathlib import Path

import torch
from diffusers.loaders.lora_base import LORA_ADAPTER_METADATA_KEY, LORA_WEIGHT_NAME_SAFE, LoraBaseMixin
from peft import LoraConfig, get_peft_model_state_dict, set_peft_model_state_dict
from peft.tuners.lora.layer import Conv2d as PeftLoraConv2d
from peft.tuners.lora.layer import LoraLayer
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from .errors import InvalidArgumentError
from .loading import follow_umask
from .models.adaptor import FrameAdaptedConv2d, FrameAdaptor
from .models.temporal_attention import DirectedTemporalAttention

# the LoRA target groups (`train.lora.targets`); see the module docstring
TARGET_GROUPS = ("temporal_attention", "spatial_attention", "attention", "convolutions")

logger = logging.getLogger(__name__)

BASE_HASH_KEY = "magicvideo_base_unet_sha256"  # safetensors metadata: what the LoRA was trained on
PREFIX = "unet"  # diffusers' prefix of a U-Net's keys in a pipeline LoRA file
ATTENTION_PROJECTIONS = ("to_q", "to_k", "to_v")


class FrameAdaptedLoraConv2d(PeftLoraConv2d):
    """peft's LoRA Conv2d for a `FrameAdaptedConv2d`: conv(x; W) + sum of scaling * B(A(x)), then the
    frame-wise adaptor (whose S^i also scales the update, as it does once the update is fused into W)."""

    # The adaptor stays reachable (and replaceable) under the convolution's own name, so that peft can also wrap
    # `<conv>.adaptor` after it wrapped `<conv>` (adaptors trained beside convolution LoRAs).
    @property
    def adaptor(self) -> nn.Module:
        return self.get_base_layer().adaptor

    def __setattr__(self, name: str, value) -> None:
        if name == "adaptor":
            setattr(self.get_base_layer(), name, value)
        else:
            super().__setattr__(name, value)

    def update_layer(self, adapter_name: str, r: int, lora_alpha: float, config: LoraConfig, **kwargs) -> None:
        # peft builds lora_A/B as type(base_layer), which would be frame-adapted too: plain convolutions here
        if r <= 0:
            raise ValueError(f"`r` should be a positive integer value but the value passed is {r}")
        if config.use_dora or config.lora_bias or config.use_rslora:
            raise ValueError("LoRA of a frame-wise convolution: plain LoRA only (no DoRA, lora_bias, rsLoRA)")
        conv = self.get_base_layer()
        self.r[adapter_name], self.lora_alpha[adapter_name] = r, lora_alpha
        self.scaling[adapter_name] = lora_alpha / r
        self.use_rslora[adapter_name], self.use_dora[adapter_name], self.lora_bias[adapter_name] = False, False, False
        self.lora_dropout[adapter_name] = nn.Dropout(config.lora_dropout) if config.lora_dropout else nn.Identity()
        self.lora_A[adapter_name] = nn.Conv2d(self.in_features, r, conv.kernel_size, conv.stride, conv.padding,
                                              conv.dilation, bias=False)
        self.lora_B[adapter_name] = nn.Conv2d(r, self.out_features, 1, bias=False)
        self.reset_lora_parameters(adapter_name, config.init_lora_weights)
        self._move_adapter_to_device_of_base_layer(adapter_name)
        self.set_adapter(self.active_adapters, inference_mode=config.inference_mode)

    def get_delta_weight(self, adapter: str) -> torch.Tensor:
        # conv(x, A) then conv(., B) as one convolution: W_AB[o, i] = sum_r B[o, r] A[r, i]
        a, b = self.lora_A[adapter].weight, self.lora_B[adapter].weight
        return torch.einsum("or,rikl->oikl", b[:, :, 0, 0], a) * self.scaling[adapter]

    def forward(self, x: torch.Tensor, num_frames: int, frame_offset: int = 0) -> torch.Tensor:
        self._check_forward_args(x)
        active = [a for a in self.active_adapters if a in self.lora_A]
        if self.disable_adapters and self.merged:
            self.unmerge()
        if self.disable_adapters or self.merged or not active:
            return self.base_layer(x, num_frames, frame_offset)
        conv = self.get_base_layer()
        out = conv._conv_forward(x, conv.weight, None)
        for adapter in active:
            lora_x = self._cast_input_dtype(x, self.lora_A[adapter].weight.dtype)
            update = self.lora_B[adapter](self.lora_A[adapter](self.lora_dropout[adapter](lora_x)))
            out = out + (update * self.scaling[adapter]).to(out.dtype)
        return conv.adaptor(out, num_frames, conv.bias, frame_offset)


class FrameAdaptorLora(nn.Module, LoraLayer):
    """A trainable update of a frame-wise adaptor's scale and shift, (frames, channels) each, per adapter:
    S + w * dS, B + w * dB with w the adapter's weight (`set_adapters`). Starts at zero."""

    adapter_layer_names = ("lora_scale", "lora_shift")

    def __init__(self, base_layer: FrameAdaptor, adapter_name: str, config: LoraConfig, **kwargs):
        super().__init__()
        LoraLayer.__init__(self, base_layer)
        self.lora_scale, self.lora_shift = nn.ParameterDict(), nn.ParameterDict()
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, config=config)

    def _get_in_out_features(self, module: FrameAdaptor) -> tuple[int, int]:
        return module.scale.shape[1], module.scale.shape[1]

    def update_layer(self, adapter_name: str, config: LoraConfig | None = None, **kwargs) -> None:
        base = self.get_base_layer()
        self.r[adapter_name], self.lora_alpha[adapter_name], self.scaling[adapter_name] = 1, 1, 1.0
        self.use_rslora[adapter_name] = False
        self.lora_scale[adapter_name] = nn.Parameter(torch.zeros_like(base.scale))
        self.lora_shift[adapter_name] = nn.Parameter(torch.zeros_like(base.shift))
        self.set_adapter(self.active_adapters)

    def scale_layer(self, scale: float) -> None:
        for adapter in self.active_adapters:
            if adapter in self.lora_scale:
                self.scaling[adapter] *= scale

    def get_delta_weight(self, adapter: str) -> tuple[torch.Tensor, torch.Tensor]:
        weight = self.scaling[adapter]
        return weight * self.lora_scale[adapter], weight * self.lora_shift[adapter]

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        base = self.get_base_layer()
        for adapter in adapter_names or self.active_adapters:
            if adapter in self.lora_scale and adapter not in self.merged_adapters:
                scale, shift = self.get_delta_weight(adapter)
                base.scale.data += scale.to(base.scale.dtype)
                base.shift.data += shift.to(base.shift.dtype)
                self.merged_adapters.append(adapter)

    def unmerge(self) -> None:
        base = self.get_base_layer()
        while self.merged_adapters:
            scale, shift = self.get_delta_weight(self.merged_adapters.pop())
            base.scale.data -= scale.to(base.scale.dtype)
            base.shift.data -= shift.to(base.shift.dtype)

    def forward(self, x: torch.Tensor, num_frames: int, bias: torch.Tensor | None = None,
                frame_offset: int = 0) -> torch.Tensor:
        active = [a for a in self.active_adapters if a in self.lora_scale]
        if self.disable_adapters and self.merged:
            self.unmerge()
        base = self.get_base_layer()
        if self.disable_adapters or self.merged or not active:
            return base(x, num_frames, bias, frame_offset)
        scale, shift = base.scale, base.shift
        for adapter in active:
            d_scale, d_shift = self.get_delta_weight(adapter)
            scale, shift = scale + d_scale, shift + d_shift
        return torch.func.functional_call(base, {"scale": scale, "shift": shift}, (x, num_frames, bias, frame_offset))


CUSTOM_MODULES = {FrameAdaptedConv2d: FrameAdaptedLoraConv2d, FrameAdaptor: FrameAdaptorLora}


def _base_name(name: str) -> str:
    """A module or parameter name without peft's `base_layer` levels (the name in the plain model)."""
    return name.replace(".base_layer", "")


def target_modules(unet: nn.Module, targets: list[str], adaptors: bool = False) -> list[str]:
    """The names of the modules of `unet` that a LoRA of these target groups (and, with `adaptors`,
    the frame-wise adaptors) wraps."""
    unknown = sorted(set(targets) - set(TARGET_GROUPS))
    if unknown:
        raise InvalidArgumentError("targets", f"unknown target group {unknown[0]!r}; choose from {', '.join(TARGET_GROUPS)}")
    if not targets and not adaptors:
        raise InvalidArgumentError("targets", "no target group and no adaptors: the LoRA would train nothing")
    temporal = bool({"temporal_attention", "attention"} & set(targets))
    spatial = bool({"spatial_attention", "attention"} & set(targets))
    names = []
    for name, module in unet.named_modules():
        if isinstance(module, BaseTunerLayer) or ".lora_" in name:
            continue
        name = _base_name(name)
        parent, _, leaf = name.rpartition(".")
        owner = unet.get_submodule(parent) if parent else unet
        if isinstance(owner, BaseTunerLayer):
            owner = owner.get_base_layer()
        if temporal and isinstance(owner, DirectedTemporalAttention) and leaf in (*ATTENTION_PROJECTIONS, "to_out"):
            names.append(name)
        elif spatial and ".transformer_blocks." in name and (
                leaf in ATTENTION_PROJECTIONS and parent.rpartition(".")[2] in ("attn1", "attn2")
                or name.endswith((".attn1.to_out.0", ".attn2.to_out.0"))):
            names.append(name)
        elif "convolutions" in targets and isinstance(module, FrameAdaptedConv2d):
            names.append(name)
        elif adaptors and isinstance(module, FrameAdaptor):
            names.append(name)
    return names


def lora_config(unet: nn.Module, rank: int, alpha: float, targets: list[str], adaptors: bool = False) -> LoraConfig:
    """The peft `LoraConfig` of a new LoRA for `unet` (B at zero: the model is unchanged until trained)."""
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise InvalidArgumentError("rank", f"must be an integer >= 1, got {rank!r}")
    config = LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights=True,
                        target_modules=target_modules(unet, targets, adaptors))
    config._register_custom_module(CUSTOM_MODULES)
    return config


def _inject(unet: nn.Module, config: LoraConfig, adapter_name: str) -> None:
    """diffusers' `add_adapter` with this module's LoRA layers, the targets (plain-model names) renamed to
    where the modules are now (an adaptor inside a convolution that an earlier adapter wrapped)."""
    where = {}
    for name, _ in unet.named_modules():
        if ".lora_" not in name:
            where.setdefault(_base_name(name), name)  # the outermost module of that name: the LoRA layer
    targets = list(config.target_modules)
    config = copy.copy(config)
    config.target_modules = [where.get(name, name) for name in targets]
    config._register_custom_module(CUSTOM_MODULES)
    unet.add_adapter(config, adapter_name)
    # peft does not look inside a layer of an earlier adapter: the adaptor of a convolution it wrapped gets this
    # adapter here (reached through the convolution's `adaptor`)
    for name in (name for name in targets if name.endswith(".adaptor")):
        adaptor = unet.get_submodule(name)
        if isinstance(adaptor, FrameAdaptorLora) and adapter_name not in adaptor.lora_scale:
            adaptor.update_layer(adapter_name, config)
        elif isinstance(adaptor, FrameAdaptor):
            setattr(unet.get_submodule(name.rpartition(".")[0]), "adaptor", FrameAdaptorLora(adaptor, adapter_name, config))


def add_lora(unet: nn.Module, config: LoraConfig, adapter_name: str = "default") -> None:
    """Wrap `unet`'s target modules with a new adapter; only the adapter's parameters are left trainable."""
    unet.requires_grad_(False)
    _inject(unet, config, adapter_name)
    for name, param in unet.named_parameters():
        param.requires_grad_(".lora_" in name and (name.endswith(f".{adapter_name}") or f".{adapter_name}." in name))


def base_hash(unet: nn.Module) -> str:
    """SHA-256 of a U-Net's own weights (adapters left out; a fused adapter counts as a change): names,
    shapes and values in float16, so that the float32 and float16 copies of one model agree."""
    digest = hashlib.sha256()
    state = {_base_name(k): v for k, v in unet.state_dict().items() if ".lora_" not in k}
    for key in sorted(state):
        tensor = state[key].detach().to("cpu", torch.float16).contiguous()
        digest.update(f"{key} {tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_lora(unet: nn.Module, folder: str | Path, adapter_name: str = "default", base: str | None = None) -> Path:
    """Write the adapter `adapter_name` of `unet` (exactly its trained tensors) as
    `folder/pytorch_lora_weights.safetensors`; `base` is the hash of the base weights (`base_hash`)."""
    state = get_peft_model_state_dict(unet, adapter_name=adapter_name)
    config = unet.peft_config[adapter_name]
    # the peft settings (diffusers' `lora_adapter_metadata`, keys of `LoraConfig`); the targets are the modules
    # the tensors belong to, by their names in the plain model (peft keeps a shortened form of long lists)
    targets = sorted({_base_name(key.partition(".lora_")[0]) for key in state})
    metadata = {f"{PREFIX}.r": config.r, f"{PREFIX}.lora_alpha": config.lora_alpha, f"{PREFIX}.target_modules": targets}
    path = Path(folder) / LORA_WEIGHT_NAME_SAFE
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({f"{PREFIX}.{k}": v.detach().contiguous() for k, v in state.items()}, str(path),
              metadata={"format": "pt", LORA_ADAPTER_METADATA_KEY: json.dumps(metadata, sort_keys=True),
                        BASE_HASH_KEY: base or base_hash(unet)})
    return follow_umask(path)


def lora_file(path: str | Path, argument: str) -> Path:
    """The LoRA file at `path`: the file itself or `pytorch_lora_weights.safetensors` in a folder."""
    path = Path(path)
    file = path / LORA_WEIGHT_NAME_SAFE if path.is_dir() else path
    if not file.is_file():
        raise InvalidArgumentError(argument, f"{file}: no such LoRA file")
    return file


def read_lora(file: Path, argument: str) -> tuple[dict[str, torch.Tensor], dict, str | None]:
    """(peft state dict without the `unet.` prefix, peft settings, base hash) of a LoRA file."""
    try:
        with safe_open(str(file), framework="pt") as f:
            header = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
        settings = json.loads(header.get(LORA_ADAPTER_METADATA_KEY, "{}"))
    except Exception as err:  # safetensors raises several types for files that are not safetensors
        raise InvalidArgumentError(argument, f"{file}: not a LoRA safetensors file ({err})") from None
    state = {k.removeprefix(f"{PREFIX}."): v for k, v in tensors.items() if k.startswith(f"{PREFIX}.")}
    settings = {k.removeprefix(f"{PREFIX}."): v for k, v in settings.items() if k.startswith(f"{PREFIX}.")}
    if not state or not settings.get("target_modules") or "r" not in settings:
        raise InvalidArgumentError(argument, f"{file}: not a MagicVideo U-Net LoRA (no {PREFIX}.* LoRA tensors "
                                   "and settings in diffusers' format)")
    return state, settings, header.get(BASE_HASH_KEY)


def check_lora(unet: nn.Module, state: dict, settings: dict, file: Path, argument: str) -> None:
    """Refuse a LoRA whose modules or tensor shapes do not fit `unet` (another architecture) or whose
    tensors disagree with its recorded rank."""
    modules = {_base_name(name): module for name, module in unet.named_modules()}
    rank = settings["r"]
    for key, tensor in state.items():
        module_name, _, what = key.partition(".lora_")
        module_name = _base_name(module_name)
        module = modules.get(module_name)
        if isinstance(module, BaseTunerLayer):
            module = module.get_base_layer()
        if module is None:
            raise InvalidArgumentError(argument, f"{file}: a LoRA for another architecture: this U-Net has no "
                                       f"module {module_name}")
        if isinstance(module, FrameAdaptor):
            expected = tuple(getattr(module, what.split(".")[0]).shape)
        elif what.startswith("A."):
            expected = (rank, module.in_features) if isinstance(module, nn.Linear) else \
                (rank, module.in_channels, *module.kernel_size)
        elif what.startswith("B."):
            expected = (module.out_features, rank) if isinstance(module, nn.Linear) else (module.out_channels, rank, 1, 1)
        else:
            raise InvalidArgumentError(argument, f"{file}: unexpected tensor {PREFIX}.{key}")
        if tuple(tensor.shape) != expected:
            problem = ("its rank is not the rank it records" if tensor.shape[1 if what.startswith("B.") else 0] != rank
                       and what[0] in "AB" else "a LoRA for another architecture")
            raise InvalidArgumentError(argument, f"{file}: {problem} ({PREFIX}.{key} is {tuple(tensor.shape)}, "
                                       f"this U-Net at rank {rank} needs {expected})")


class LoraMixin(LoraBaseMixin):
    """diffusers' LoRA API for a pipeline with a `MagicVideoUNet3D` as `unet` (see module docstring)."""

    _lora_loadable_modules = ["unet"]

    def load_lora_weights(self, pretrained_model_name_or_path_or_dict: str | Path, adapter_name: str | None = None,
                          **kwargs) -> str:
        """Load a LoRA file (or a folder holding `pytorch_lora_weights.safetensors`) into the U-Net as adapter
        `adapter_name` (default: the file's folder name) and activate it beside the active ones; returns the
        adapter's name. A file that does not fit the U-Net raises `InvalidArgumentError`; one trained on other
        base weights loads with a warning."""
        argument = kwargs.pop("argument", "pretrained_model_name_or_path_or_dict")
        if kwargs:
            raise InvalidArgumentError(next(iter(kwargs)), "not supported by MagicVideo's load_lora_weights")
        file = lora_file(pretrained_model_name_or_path_or_dict, argument)
        state, settings, trained_on = read_lora(file, argument)
        check_lora(self.unet, state, settings, file, argument)
        loaded = list(getattr(self.unet, "peft_config", {}))
        name = adapter_name or (file.parent.name if file.name == LORA_WEIGHT_NAME_SAFE else file.stem)
        if adapter_name is None:
            stem, i = name, 1
            while name in loaded:
                i, name = i + 1, f"{stem}-{i + 1}"
        elif name in loaded:
            raise InvalidArgumentError("adapter_name", f"an adapter named {name!r} is already loaded")
        if trained_on is not None and trained_on != base_hash(self.unet):
            logger.warning("LoRA %s was trained on other base weights than this U-Net's (base SHA-256 %s..., this "
                           "U-Net %s...): its effect may differ from the one it was trained for", file,
                           trained_on[:12], base_hash(self.unet)[:12])
        active = self.get_active_adapters() if loaded else []
        _inject(self.unet, LoraConfig(**settings), name)
        result = set_peft_model_state_dict(self.unet, {k: v.to(self.unet.dtype) for k, v in state.items()}, name)
        missing = [k for k in result.missing_keys if ".lora_" in k and (k.endswith(f".{name}") or f".{name}." in k)]
        if result.unexpected_keys or missing:
            self.unet.delete_adapters(name)
            raise InvalidArgumentError(argument, f"{file}: does not fit this U-Net "
                                       f"({(result.unexpected_keys or missing)[0]})")
        self.unet.requires_grad_(False)
        self.set_adapters([*active, name], [*self._adapter_weights(active), 1.0])
        return name

    def _adapter_weights(self, names: list[str]) -> list[float]:
        """The current weights (`set_adapters`) of loaded adapters."""
        weights = getattr(self, "_lora_weights", {})
        return [weights.get(name, 1.0) for name in names]

    def set_adapters(self, adapter_names: list[str] | str, adapter_weights: float | list[float] | None = None) -> None:
        """Activate these adapters with these weights (scales; default 1)."""
        names = [adapter_names] if isinstance(adapter_names, str) else list(adapter_names)
        weights = adapter_weights if isinstance(adapter_weights, list) else [adapter_weights] * len(names)
        weights = [1.0 if w is None else w for w in weights]
        for w in weights:
            if not isinstance(w, (int, float)) or isinstance(w, bool):
                raise InvalidArgumentError("adapter_weights", f"a LoRA scale must be a number, got {w!r}")
        super().set_adapters(names, weights)
        self._lora_weights = {**getattr(self, "_lora_weights", {}), **dict(zip(names, map(float, weights)))}

    def fuse_lora(self, components: list[str] | None = None, lora_scale: float = 1.0, safe_fusing: bool = False,
                  adapter_names: list[str] | None = None, **kwargs) -> None:
        """Fuse the active adapters into the U-Net's weights (faster sampling); `unfuse_lora` restores the
        weights of before bit for bit."""
        if not self.num_fused_loras:
            self._unfused = {}
            for module in self.unet.modules():
                if isinstance(module, BaseTunerLayer):
                    base = module.get_base_layer()
                    tensors = {n: p for n, p in base.named_parameters(recurse=False)}
                    self._unfused[module] = ({n: p.detach().clone() for n, p in tensors.items()}, dict(module.scaling))
        super().fuse_lora(components or self._lora_loadable_modules, lora_scale, safe_fusing, adapter_names, **kwargs)

    def unfuse_lora(self, components: list[str] | None = None, **kwargs) -> None:
        super().unfuse_lora(components or self._lora_loadable_modules, **kwargs)
        for module, (tensors, scaling) in getattr(self, "_unfused", {}).items():
            base = module.get_base_layer()
            for n, saved in tensors.items():
                getattr(base, n).data.copy_(saved)
            module.scaling.update(scaling)
        self._unfused = {}

    def unload_lora_weights(self) -> None:
        """Remove every adapter: the U-Net is the base model again (fused adapters are unfused first)."""
        if self.num_fused_loras:
            self.unfuse_lora()
        super().unload_lora_weights()
        # diffusers unwraps the outermost layers only: an adaptor's layer inside a convolution's is left
        for parent in list(self.unet.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, BaseTunerLayer):
                    setattr(parent, name, child.get_base_layer())
        self._lora_weights = {}

    @classmethod
    def save_lora_weights(cls, save_directory: str | Path, unet: nn.Module, adapter_name: str = "default",
                          base: str | None = None) -> Path:
        """Write `unet`'s adapter as a LoRA file in `save_directory` (see `save_lora`)."""
        return save_lora(unet, save_directory, adapter_name, base)


def parse_lora_spec(spec: str, argument: str = "lora") -> tuple[str, float]:
    """`PATH[:SCALE]` -> (path, scale; default 1). A path that exists as given is taken whole (it may hold a ':')."""
    path, sep, scale = spec.rpartition(":")
    if not sep or Path(spec).exists():
        return spec, 1.0
    try:
        value = float(scale)
    except ValueError:
        raise InvalidArgumentError(argument, f"{spec!r}: the scale after ':' must be a number, got {scale!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise InvalidArgumentError(argument, f"{spec!r}: the scale must be a finite number, got {scale!r}")
    return path, value


def load_loras(pipe: LoraMixin, specs: list[str], argument: str = "lora") -> dict[str, float]:
    """Load LoRA files given as `PATH[:SCALE]` into a pipeline, every one active at its scale; returns
    {adapter name: scale} (the names are the files' folder names, made unique)."""
    parsed = [parse_lora_spec(spec, argument) for spec in specs]  # every spec checked before any is loaded
    names = [pipe.load_lora_weights(path, argument=argument) for path, _ in parsed]
    if names:
        pipe.set_adapters(names, [scale for _, scale in parsed])
    return dict(zip(names, (scale for _, scale in parsed)))
