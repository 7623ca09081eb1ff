"""The one place that loads a pipeline folder: the bundled default, the packaged MiniLM text encoder,
dtype and device. Used by the CLI, evaluation, training's `model.pretrained` and the web demo."""

from __future__ import annotations

import json
from pathlib import Path

from .errors import InvalidArgumentError

# The small text-to-video model trained by us on Moving MNIST of real digits, shipped in the package.
BUNDLED_MODEL = Path(__file__).parent / "weights" / "digits"
# The bundled cascade: its model_index.json names the stage folders beside the keyframe model.
BUNDLED_CASCADE = Path(__file__).parent / "weights"

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def pipeline_folder(model: str | Path | None, kind: str = "MagicVideoPipeline") -> Path:
    """The folder of `model` (default: the bundled model), checked to hold a pipeline of `kind`."""
    path = Path(model) if model else BUNDLED_MODEL
    index = path / "model_index.json"
    if not index.is_file():
        hint = "" if model else " (the bundled model is missing from this installation)"
        raise InvalidArgumentError("model", f"{path} is not a {kind} folder (no model_index.json){hint}")
    try:
        found = json.loads(index.read_text()).get("_class_name")
    except (OSError, ValueError) as err:
        raise InvalidArgumentError("model", f"cannot read {index}: {err}") from err
    if found != kind:
        raise InvalidArgumentError("model", f"{path} holds a {found}, not a {kind}")
    return path


def load_pipeline(model: str | Path | None = None, device: str | None = None, dtype: str | None = None,
                  progress_bar: bool = True, pipeline_class=None, default: Path = BUNDLED_MODEL):
    """The pipeline saved in `model` (default: `default`, the bundled keyframe model) on `device`
    (default: cuda if available, else cpu) in `dtype` ("fp32", "fp16", "bf16"; default fp16 on cuda,
    fp32 on cpu), as `pipeline_class` (default `MagicVideoPipeline`; the folder must hold one). A
    pipeline saved with the packaged MiniLM text encoder gets it from the installed package. User
    mistakes raise `InvalidArgumentError` naming `model`, `device` or `dtype`."""
    import torch
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    if pipeline_class is None:
        from .pipelines.keyframes import MagicVideoPipeline as pipeline_class

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    kind = pipeline_class.__name__
    if model is None and not (Path(default) / "model_index.json").is_file():
        raise InvalidArgumentError("model", f"the bundled {kind} is missing from this installation ({default}); "
                                   "pass a pipeline folder")
    path = pipeline_folder(model or default, kind)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        torch.device(device)
    except RuntimeError as err:
        raise InvalidArgumentError("device", f"{device!r} is not a torch device: {err}") from err
    dtype = dtype or ("fp16" if device.startswith("cuda") else "fp32")
    if dtype not in DTYPES:
        raise InvalidArgumentError("dtype", f"must be one of {sorted(DTYPES)}, got {dtype!r}")
    try:
        pipe = pipeline_class.from_pretrained(path, dtype=getattr(torch, DTYPES[dtype]))
    except InvalidArgumentError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise InvalidArgumentError("model", f"cannot load a {kind} from {path}: {err}") from err
    pipe.set_progress_bar_config(leave=False, disable=not progress_bar)
    return pipe.to(device)
