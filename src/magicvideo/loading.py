"""Pipeline folders: where the bundled models are, what a folder's `model_index.json` says, and the
one loader that puts the pipeline of a folder on a device in a dtype.

Each pipeline module loads through `load_folder` with its class and its bundled default
(`pipelines.keyframes.load_pipeline`, `pipelines.interpolation.load_interpolation_pipeline`,
`pipelines.upscale.load_upscale_pipeline`); `MagicVideoCascadePipeline.from_pretrained` reads a
cascade folder's index with `read_index` and loads each stage with them. This module imports none
of the pipelines.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path

from .errors import InvalidArgumentError

# The models trained by us and shipped in the package. The bundled cascade's model_index.json names
# its stage folders, one per stage: keyframes, interpolation x3, super-resolution x4.
BUNDLED_CASCADE = Path(__file__).parent / "weights"
BUNDLED_MODEL = BUNDLED_CASCADE / "digits"
BUNDLED_INTERPOLATION_MODEL = BUNDLED_CASCADE / "digits-interpolation"
BUNDLED_SR_MODEL = BUNDLED_CASCADE / "digits-sr"

# `dtype` names (the CLI's --dtype) and the torch dtypes they stand for
DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def follow_umask(path: str | Path) -> Path:
    """Give the files written under `path` (a folder or one file) the mode any new file of this process gets,
    0666 less the umask, where they have 0600. safetensors 0.8 writes each file through a private temporary file
    and keeps its mode 0600 whatever the umask (safetensors#782; diffusers and transformers need >= 0.8), so a
    model saved by one user (a Docker image's root) could not be read by another. Every save of ours ends here."""
    umask = os.umask(0)
    os.umask(umask)
    mode, path = 0o666 & ~umask, Path(path)
    for file in [path] if path.is_file() else path.rglob("*"):
        if file.is_file() and not file.is_symlink() and file.stat().st_mode & 0o777 == 0o600 != mode:
            file.chmod(mode)
    return path


def read_index(folder: str | Path) -> dict:
    """The `model_index.json` of a pipeline folder. A missing folder, a folder without the file and
    an unreadable file raise `InvalidArgumentError("model", ...)`."""
    folder = Path(folder)
    index = folder / "model_index.json"
    if not folder.is_dir():
        raise InvalidArgumentError("model", f"no such model folder {folder}")
    if not index.is_file():
        raise InvalidArgumentError("model", f"{folder} is not a pipeline folder (no model_index.json)")
    try:
        return json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InvalidArgumentError("model", f"cannot read {index}: {err}") from err


def pipeline_folder(folder: str | Path, kind: str) -> Path:
    """`folder`, checked to hold a pipeline of class `kind` (the `_class_name` of its index)."""
    found = read_index(folder).get("_class_name")
    if found != kind:
        raise InvalidArgumentError("model", f"{folder} holds a {found}, not a {kind}")
    return Path(folder)


@contextmanager
def _loading_bars_hidden():
    """diffusers' and transformers' loading progress bars off while one pipeline loads, and back to
    what they were afterwards (no process-wide setting is left changed)."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    enabled = [(library, library.is_progress_bar_enabled()) for library in (diffusers_logging, transformers_logging)]
    for library, _ in enabled:
        library.disable_progress_bar()
    try:
        yield
    finally:
        for library, was_enabled in enabled:
            if was_enabled:
                library.enable_progress_bar()


def load_folder(pipeline_class, model: str | Path | None, default: Path, device: str | None = None,
                dtype: str | None = None, progress_bar: bool = True):
    """The `pipeline_class` pipeline saved in `model` (default: `default`, a bundled folder) on `device`
    (default: cuda if available, else cpu) in `dtype` (a key of `DTYPES`; default fp16 on cuda, fp32
    on cpu), its sampling progress bar shown with `progress_bar`. User mistakes raise
    `InvalidArgumentError` naming `model`, `device` or `dtype`."""
    import torch

    kind = pipeline_class.__name__
    if not model and not (Path(default) / "model_index.json").is_file():
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
        with _loading_bars_hidden():
            pipe = pipeline_class.from_pretrained(path, dtype=getattr(torch, DTYPES[dtype]))
    except InvalidArgumentError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise InvalidArgumentError("model", f"cannot load a {kind} from {path}: {err}") from err
    pipe.set_progress_bar_config(leave=False, disable=not progress_bar)
    return pipe.to(device)
