"""The one check of a `device` argument: a torch device that exists on this machine.

Every command that takes `--device` resolves it here before loading anything, so that a device
that is not there (`cuda` on a machine without CUDA, `mps` off a Mac, a typo) is refused with the
devices that are, instead of failing inside torch with a stack trace.
"""

from __future__ import annotations

from .errors import InvalidArgumentError


def _accelerator() -> tuple[str, int] | None:
    """(type, device count) of this machine's accelerator (cuda, mps, xpu, ...), or None."""
    import torch

    if not torch.accelerator.is_available():
        return None
    return torch.accelerator.current_accelerator().type, torch.accelerator.device_count()


def available_devices() -> list[str]:
    """The devices of this machine: `cpu`, then every device of its accelerator (`cuda:0`, ..., or `mps:0`)."""
    accelerator = _accelerator()
    if accelerator is None:
        return ["cpu"]
    kind, count = accelerator
    return ["cpu", *(f"{kind}:{i}" for i in range(count))]


def resolve_device(device: str | None, argument: str = "device") -> str:
    """`device` (e.g. "cpu", "cuda", "cuda:1", "mps"), checked to exist here; None: "cuda" when it is
    available, else "cpu". Raises `InvalidArgumentError(argument)` naming the devices that are available."""
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    accelerator = _accelerator()
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise InvalidArgumentError(argument, f"{device!r} is not a device name; available here: "
                                   f"{', '.join(available_devices())}") from None
    if parsed.type == "cpu" or (accelerator is not None and parsed.type == accelerator[0]
                                and (parsed.index is None or parsed.index < accelerator[1])):
        return device
    raise InvalidArgumentError(argument, f"{device!r} is not available on this machine; available here: "
                               f"{', '.join(available_devices())}")
