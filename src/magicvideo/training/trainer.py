"""The training loop shared by the 3D U-Net (`magicvideo train`) and the VAE (`magicvideo train-vae`).

One `accelerate` loop runs on one CPU, one GPU or many processes (`accelerate launch` /
`torchrun`, gloo on CPU, NCCL on GPUs; FSDP with `train.fsdp`, see fsdp.py), with
mixed precision and gradient accumulation. A *task* supplies the model, the loss of a batch, the
validation samples and the final save; this module owns data streaming, optimisation (AdamW,
warmup schedule, gradient clipping, EMA), checkpoints, `metrics.csv`, the loss curve and the
progress bar.

Every sample's randomness (clip, noise, timestep, caption dropout) is a function of its position
in the data stream (see `data.py`), so P processes with batch b follow exactly the trajectory of
one process with batch P*b, and a resumed run that of an uninterrupted one.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from torch.utils.data import DataLoader, IterableDataset
from tqdm.auto import tqdm

from .checkpoint import STATE, latest_checkpoint, load_checkpoint, save_checkpoint
from .config import Config, save_config
from ..loading import follow_umask
from ..manifest import ManifestColumns, read_manifest
from .data import ClipSpec, StreamSampler, VideoClipDataset, WebDatasetClips, collate, expand_shards
from .metrics import MetricsLog

logger = logging.getLogger("magicvideo.training")


def sample_generator(seed: int, position: int, salt: int = 0) -> torch.Generator:
    """A torch generator for one stream position (noise, timestep, posterior sample)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + position * 7919 + salt) % (1 << 63))


def clip_spec(config: Config) -> ClipSpec:
    data = config.data
    return ClipSpec(data.num_frames, data.resolution, data.min_stride, data.max_stride, data.first_frame_share)


def video_dataset(config: Config, rank: int, world_size: int, start_micro_batch: int):
    """The raw-video data set of a config: a CSV manifest or WebDataset shards."""
    data, clip = config.data, clip_spec(config)
    if data.manifest:
        columns = ManifestColumns(data.path_column, data.caption_column, data.fps_column)
        return VideoClipDataset(read_manifest(data.manifest, data.root, columns), clip, config.train.seed, data.shuffle)
    if data.shards:
        urls = expand_shards(data.shards)
        if not urls:
            raise ValueError(f"data.shards: no .tar files match {data.shards}")
        start = start_micro_batch * config.train.batch_size
        return WebDatasetClips(urls, clip, config.train.seed, rank, world_size, start)
    raise ValueError("the config names no data: set data.manifest or data.shards (or pass --data)")


class Trainer:
    """Runs one task (see module docstring) as the config says; `run()` returns the `final/` folder."""

    def __init__(self, config: Config, task_cls, resume: bool = False):
        self.config, self.resume = config, resume
        train = config.train
        self.output_dir = Path(config.output.output_dir)
        self.accelerator = Accelerator(mixed_precision=train.mixed_precision,
                                       gradient_accumulation_steps=train.gradient_accumulation_steps,
                                       cpu=not torch.cuda.is_available())
        if train.fsdp and self.accelerator.num_processes < 2:
            raise ValueError("train.fsdp: FSDP shards the model over several processes and this run has one: launch "
                             "it with `accelerate launch --multi_gpu --num_processes N` or `torchrun --nproc_per_node N`")
        set_seed(train.seed)
        self.task = task_cls(config, self.accelerator)
        self.lora_base = None  # with train.lora: the hash of the base U-Net's weights, recorded in the LoRA file
        if train.lora is not None:
            from ..lora import add_lora, base_hash, lora_config

            lora = train.lora
            self.lora_base = base_hash(self.task.model)
            add_lora(self.task.model, lora_config(self.task.model, lora.rank, lora.alpha, lora.targets, lora.adaptors))

    # -- data -----------------------------------------------------------------------------------
    def dataloader(self, start_micro_batch: int) -> DataLoader:
        acc, data = self.accelerator, self.config.data
        dataset = self.task.dataset(acc.process_index, acc.num_processes, start_micro_batch)
        kwargs = dict(batch_size=self.config.train.batch_size, num_workers=data.num_workers, collate_fn=collate,
                      persistent_workers=data.num_workers > 0)
        if isinstance(dataset, IterableDataset):
            return DataLoader(dataset, **kwargs)
        sampler = StreamSampler(self.config.train.batch_size, acc.process_index, acc.num_processes, start_micro_batch)
        return DataLoader(dataset, sampler=sampler, **kwargs)

    # -- model, optimizer, EMA: what a checkpoint holds -----------------------------------------
    def prepare(self):
        """(model, params, optimizer, lr_scheduler, ema), registered with accelerate so that a
        checkpoint saves and restores all of them."""
        acc, train = self.accelerator, self.config.train
        model = self.task.model
        if train.fsdp:  # sharded by the trainer, not accelerate (training/fsdp.py); checkpointed by ShardedState
            from .fsdp import shard

            model = shard(model, train.mixed_precision)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=train.learning_rate, betas=(train.adam_beta1, train.adam_beta2),
                                      eps=train.adam_epsilon, weight_decay=train.weight_decay)
        # stepped by hand once per optimizer step: accelerate's wrapper would step it once per process
        lr_scheduler = get_scheduler(train.lr_scheduler, optimizer, num_warmup_steps=train.warmup_steps,
                                     num_training_steps=train.max_steps)
        ema = EMAModel(params, decay=train.ema_decay) if train.ema else None
        if not train.fsdp:
            model, optimizer = acc.prepare(model, optimizer)
        acc.register_for_checkpointing(lr_scheduler)
        if train.fsdp:
            from .fsdp import ShardedState

            acc.register_for_checkpointing(ShardedState(model, optimizer))
        if ema is not None:
            ema.to(acc.device)
            acc.register_for_checkpointing(ema)
        return model, params, optimizer, lr_scheduler, ema

    def export(self, folder: Path, checkpoint: Path | None = None) -> Path:
        """Write the model of a checkpoint (the newest in the output dir unless named; EMA weights when
        the run keeps an EMA) to `folder` as `final/` would be written, without training."""
        checkpoint = checkpoint or latest_checkpoint(self.output_dir)
        if checkpoint is None or not (Path(checkpoint) / STATE).is_file():
            raise FileNotFoundError(f"no checkpoint to export in {checkpoint or self.output_dir / 'checkpoints'}")
        model, params, _, _, ema = self.prepare()
        state = load_checkpoint(self.accelerator, Path(checkpoint))
        if ema is not None:
            ema.copy_to(params)
        self.save_final(model, Path(folder))
        if self.accelerator.is_main_process:
            self.accelerator.print(f"exported {checkpoint} (step {state['step']}) to {folder}")
        self.accelerator.wait_for_everyone()
        return Path(folder)

    # -- main loop ------------------------------------------------------------------------------
    def run(self) -> Path:
        acc, config, train, out = self.accelerator, self.config, self.config.train, self.config.output
        task = self.task
        self.output_dir.mkdir(parents=True, exist_ok=True)
        if acc.is_main_process:
            save_config(config, self.output_dir / "config.yaml")

        model, params, optimizer, lr_scheduler, ema = self.prepare()
        step, skipped = 0, 0
        checkpoint = latest_checkpoint(self.output_dir) if self.resume else None
        if self.resume and checkpoint is None:
            logger.warning("--resume: no checkpoint in %s, starting from scratch", self.output_dir / "checkpoints")
        if checkpoint is not None:
            state = load_checkpoint(acc, checkpoint)
            step, skipped = state["step"], state["skipped"]
            acc.print(f"resumed from {checkpoint} (step {step})")
        metrics = MetricsLog(self.output_dir, step) if acc.is_main_process else None

        accum = train.gradient_accumulation_steps
        clips_per_step = train.batch_size * acc.num_processes * accum
        batches = iter(self.dataloader(step * accum))
        bar = tqdm(total=train.max_steps, initial=step, desc=task.name, unit="step", disable=not acc.is_main_process,
                   dynamic_ncols=True)
        seen_skips: set[str] = set()
        while step < train.max_steps:
            started = time.perf_counter()
            total_loss = torch.zeros((), device=acc.device)
            for _ in range(accum):
                batch = next(batches)
                seen_skips.update(entry.split(": ")[0] for entry in batch["skipped"])
                skipped_here = torch.tensor(len(batch["skipped"]), device=acc.device)
                skipped += int(acc.reduce(skipped_here, "sum").item())
                with acc.accumulate(model):
                    loss = task.loss(model, batch)
                    acc.backward(loss)
                    if acc.sync_gradients:  # the last micro-batch of the step
                        if train.max_grad_norm > 0:
                            acc.clip_grad_norm_(params, train.max_grad_norm)
                        optimizer.step()
                        optimizer.zero_grad(set_to_none=True)
                total_loss += loss.detach() / accum
            lr = lr_scheduler.get_last_lr()[0]  # the rate this step used
            lr_scheduler.step()
            if ema is not None:
                ema.step(params)
            step += 1
            loss_value = acc.reduce(total_loss, "mean").item()
            if not math.isfinite(loss_value):
                raise FloatingPointError(f"loss is {loss_value} at step {step}: lower train.learning_rate?")
            clips_per_s = clips_per_step / (time.perf_counter() - started)
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4f}", clips_s=f"{clips_per_s:.2f}", skipped=skipped)
            if metrics is not None and (step % out.log_every == 0 or step == train.max_steps):
                metrics.log(step, loss_value, lr, clips_per_s, skipped)
            if out.checkpoint_every and step % out.checkpoint_every == 0 and step < train.max_steps:
                save_checkpoint(acc, self.output_dir, step, {"step": step, "data_micro_batch": step * accum,
                                                             "skipped": skipped}, out.keep_checkpoints)
                if metrics is not None:
                    metrics.plot()
            if out.sample_every and step % out.sample_every == 0 and step < train.max_steps:
                self.samples(model, ema, step)
        bar.close()

        final = self.output_dir / "final"
        if out.checkpoint_every:
            save_checkpoint(acc, self.output_dir, step, {"step": step, "data_micro_batch": step * accum,
                                                         "skipped": skipped}, out.keep_checkpoints)
        self.samples(model, ema, step)
        if ema is not None:
            ema.copy_to(params)
        self.save_final(model, final)
        if acc.is_main_process:
            metrics.plot()
            acc.print(f"finished {step} steps; {skipped} skips of {len(seen_skips)} unreadable videos; final model in {final}")
        acc.wait_for_everyone()
        acc.end_training()
        return final

    def whole_model(self, model):
        """The model as one module on the main process (None elsewhere): gathered from the shards with
        FSDP (a collective: every process calls this), else unwrapped."""
        acc = self.accelerator
        if self.config.train.fsdp:
            from .fsdp import gathered_model

            return gathered_model(model, acc.is_main_process)
        return acc.unwrap_model(model) if acc.is_main_process else None

    def save_final(self, model, folder: Path) -> None:
        """`final/` (or an export): the task's model folder; with train.lora only the LoRA file."""
        whole = self.whole_model(model)
        if whole is not None:
            if self.lora_base is not None:
                from ..lora import save_lora

                save_lora(whole, folder, base=self.lora_base)
            else:
                self.task.save_final(whole, folder)
            follow_umask(folder)
        self.accelerator.wait_for_everyone()

    def samples(self, model, ema, step: int) -> None:
        """Validation samples with the EMA weights (main process only)."""
        acc = self.accelerator
        params = [p for p in model.parameters() if p.requires_grad]
        if ema is not None:
            ema.store(params)
            ema.copy_to(params)
        try:
            whole = self.whole_model(model)
            if whole is not None:
                self.task.sample(whole, self.output_dir / "samples" / f"step-{step:08d}")
        finally:
            if ema is not None:
                ema.restore(params)
        acc.wait_for_everyone()
