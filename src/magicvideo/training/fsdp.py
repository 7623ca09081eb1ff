"""FSDP (`train.fsdp: true`): parameters, gradients and optimizer states sharded over the processes, with
PyTorch's FSDP2 (`torch.distributed.fsdp.fully_shard`) applied by the trainer itself.

accelerate (1.16) drives FSDP only on accelerators: on CPU processes (gloo) its `MULTI_CPU` mode ignores
an FSDP plugin and wraps the model in DDP. So the trainer shards the model itself, the same way on CPUs
and GPUs, and keeps accelerate for the rest (processes, data, gradient accumulation, RNG states, the LR
scheduler in checkpoints).

Units: every `SpatioTemporalTransformer` of a 3D U-Net (its forward is called, so FSDP gathers its
parameters just before it runs and frees them after), then the root (everything else, gathered for the
whole forward). The 3D U-Net runs its resnet blocks' parts directly (`unet_3d_blocks.resnet`), never their
`forward`, so they cannot be units of their own.

Checkpoints are **consolidated**: `ShardedState.state_dict()` gathers the full model and optimizer state
(a collective: every process takes part) and the main process writes it
(`custom_checkpoint_<i>.pkl` in the checkpoint folder); on resume every process reads it and keeps its
own shards. A checkpoint of an FSDP run can so be resumed with any number of processes.
"""

from __future__ import annotations

import torch
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict, get_optimizer_state_dict,
                                                     set_model_state_dict, set_optimizer_state_dict)
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

from ..models.unet_3d_blocks import SpatioTemporalTransformer

PRECISIONS = {"no": None, "fp16": torch.float16, "bf16": torch.bfloat16}
FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def shard(model: torch.nn.Module, mixed_precision: str = "no") -> torch.nn.Module:
    """Shard `model` in place over the default process group (see module docstring); returns it. With
    mixed precision, parameters are gathered in that precision and gradients reduced in float32."""
    dtype = PRECISIONS[mixed_precision]
    policy = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32 if dtype else None)
    for module in model.modules():
        if isinstance(module, SpatioTemporalTransformer):
            fully_shard(module, mp_policy=policy)
    fully_shard(model, mp_policy=policy)
    return model


class ShardedState:
    """The model and optimizer of an FSDP run as one checkpointable object (`accelerator.register_for_checkpointing`):
    full (consolidated) state dicts, gathered from and scattered to the shards."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer):
        self.model, self.optimizer = model, optimizer

    def state_dict(self) -> dict:
        return {"model": get_model_state_dict(self.model, options=FULL),
                "optimizer": get_optimizer_state_dict(self.model, self.optimizer, options=FULL)}

    def load_state_dict(self, state: dict) -> None:
        options = StateDictOptions(full_state_dict=True)
        set_model_state_dict(self.model, state["model"], options=options)
        set_optimizer_state_dict(self.model, self.optimizer, state["optimizer"], options=options)


def gathered_model(model: torch.nn.Module, is_main_process: bool) -> torch.nn.Module | None:
    """A plain (unsharded) copy of a sharded diffusers model on the main process, None elsewhere. A
    collective: every process calls it."""
    state = get_model_state_dict(model, options=FULL)
    if not is_main_process:
        return None
    cls = next(c for c in type(model).__bases__ if not issubclass(c, FSDPModule))  # fully_shard subclassed it
    plain = cls.from_config(model.config)
    plain.load_state_dict(state)
    return plain.train(model.training)
