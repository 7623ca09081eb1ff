"""The training loop shared by the 3D U-Net (`magicvideo train`) and the VAE (`magicvideo train-vae`).

One `accelerate` loop runs on one CPU, one GPU or many processes (`accelerate launch` /
`torchrun`, gloo on CPU, NCCL on GPUs; FSDP/DeepSpeed through accelerate's own config), with
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
from collections.abc import Sequence
from pathlib import Path

import torch
from diffusers.training_utils import compute_snr
from accelerate import Accelerator
from accelerate.utils import set_seed
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from torch.utils.data import DataLoader, IterableDataset
from tqdm.auto import tqdm

from .checkpoint import STATE, latest_checkpoint, load_checkpoint, save_checkpoint
from .config import Config, save_config
from ..manifest import ManifestColumns, read_manifest
from ..sampling import share_noise_across_frames
from .data import ClipSpec, StreamSampler, VideoClipDataset, WebDatasetClips, collate, expand_shards
from .metrics import MetricsLog

logger = logging.getLogger("magicvideo.training")


def sample_generator(seed: int, position: int, salt: int = 0) -> torch.Generator:
    """A torch generator for one stream position (noise, timestep, posterior sample)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + position * 7919 + salt) % (1 << 63))


def position_noise(seed: int, positions, shape, num_timesteps: int, device,
                   noise_sharing: float = 0.0, staggered_fraction: float = 0.0,
                   staggered_max_slope: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The diffusion noise (B, *shape) and timesteps of the samples at these stream positions: each
    drawn from its position's generator, so any batching or resume draws the same. Timesteps are one
    per clip (B,), or one per frame (B, F) with `staggered_fraction` > 0 (`staggered_timesteps`).
    `noise_sharing` a > 0 mixes in a part shared by the frames (axis 1 of `shape` = (C, F, H, W)):
    `sampling.share_noise_across_frames`, drawn after the timestep (a = 0 draws as before)."""
    noise, timesteps = [], []
    for position in positions:
        generator = sample_generator(seed, int(position))
        own = torch.randn(tuple(shape), generator=generator)
        t = torch.randint(0, num_timesteps, (), generator=generator)
        if noise_sharing:
            shared = torch.randn((shape[0], 1, *shape[2:]), generator=generator)
            own = share_noise_across_frames(own, shared, noise_sharing)
        if staggered_fraction:
            t = staggered_timesteps(t, shape[1], num_timesteps, staggered_fraction, staggered_max_slope, generator)
        noise.append(own)
        timesteps.append(t)
    return torch.stack(noise).to(device), torch.stack(timesteps).to(device)


def staggered_timesteps(t: torch.Tensor, frames: int, num_timesteps: int, fraction: float, max_slope: float,
                        generator: torch.Generator) -> torch.Tensor:
    """Per-frame timesteps (F,) of one clip: with probability `fraction` a ramp t0 + slope * f, clamped
    to 0 ... T - 1, slope uniform in [0, max_slope] timesteps per frame and t0 uniform in
    [-slope * (F - 1), T - 1] (from all but the last frame clean to all pure noise); otherwise `t` for
    every frame. The noise pattern of staggered sampling: the frames before a frame are cleaner."""
    u, slope, start = torch.rand(3, generator=generator).tolist()
    if u >= fraction:
        return t.expand(frames).clone()
    slope *= max_slope
    t0 = -slope * (frames - 1) + start * (num_timesteps - 1 + slope * (frames - 1))
    ramp = t0 + slope * torch.arange(frames, dtype=torch.float64)
    return ramp.round().clamp(0, num_timesteps - 1).long()


def frames_as_batch(fn, sample: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """`fn(sample, noise, timesteps)` of a scheduler (add_noise, get_velocity, ...) on (B, C, F, h, w)
    clips with timesteps per clip (B,) or per frame (B, F): per frame, the frames as a batch."""
    if timesteps.dim() < 2:
        return fn(sample, noise, timesteps)
    b, c, f = sample.shape[:3]
    flat = lambda x: x.transpose(1, 2).reshape(b * f, c, *x.shape[3:])  # noqa: E731
    out = fn(flat(sample), flat(noise), timesteps.reshape(b * f))
    return out.reshape(b, f, c, *out.shape[2:]).transpose(1, 2)


def prediction_target(scheduler, sample: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """What a model trained with `scheduler`'s prediction type predicts for `sample` noised with `noise`
    at `timesteps`: the noise (epsilon), the velocity (v_prediction) or the sample itself (x0)."""
    kind = scheduler.config.prediction_type
    if kind == "v_prediction":
        return scheduler.get_velocity(sample, noise, timesteps)
    return sample if kind == "sample" else noise


def min_snr_weight(scheduler, timesteps: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-gamma weights (Hang et al. 2023) of per-sample MSEs: min(SNR(t), gamma) / SNR(t), with
    SNR(t) + 1 as the denominator for v-prediction (the target's scale), balancing the timesteps."""
    snr = compute_snr(scheduler, timesteps)
    return torch.clamp(snr, max=gamma) / (snr + 1 if scheduler.config.prediction_type == "v_prediction" else snr)


def video_mse(prediction: torch.Tensor, target: torch.Tensor, frame_difference_weight: float = 0.0,
              frame_difference_lags: Sequence[int] = (1,), weights: torch.Tensor | None = None) -> torch.Tensor:
    """Per-clip (B,) mean squared error of (B, C, F, h, w) predictions, each frame's weighted by
    `weights` (per clip (B,) or per frame (B, F); default 1), plus `frame_difference_weight`
    times the mean over `frame_difference_lags` of the MSE of the error's differences between frames
    `lag` apart: e = prediction - target, ||e[f + lag] - e[f]||^2 (weighted by the clip's mean weight).
    An error shared by the frames costs nothing extra; one drawn independently for every frame (a shape
    that drifts or flickers) costs 1 + 2 * weight times as much (more if it alternates), so a model of
    limited capacity is pushed to make the frames agree."""
    error = prediction.float() - target.float()
    per_frame = error.pow(2).mean(dim=(1, 3, 4))
    if weights is None:
        weights = torch.ones_like(per_frame)
    weights = weights.float().reshape(len(per_frame), -1).expand_as(per_frame)
    per_clip = (weights * per_frame).mean(1)
    lags = [lag for lag in frame_difference_lags if lag < error.shape[2]]
    if frame_difference_weight and lags:
        difference = sum((error[:, :, lag:] - error[:, :, :-lag]).pow(2).flatten(1).mean(1) for lag in lags)
        per_clip = per_clip + frame_difference_weight * weights.mean(1) * difference / len(lags)
    return per_clip


def clip_spec(config: Config) -> ClipSpec:
    data = config.data
    return ClipSpec(data.num_frames, data.resolution, data.min_stride, data.max_stride)


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
        set_seed(train.seed)
        self.task = task_cls(config, self.accelerator)

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
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(parameter_groups(model, train.learning_rate, train.lr_scale),
                                      lr=train.learning_rate, betas=(train.adam_beta1, train.adam_beta2),
                                      eps=train.adam_epsilon, weight_decay=train.weight_decay)
        # stepped by hand once per optimizer step: accelerate's wrapper would step it once per process
        lr_scheduler = get_scheduler(train.lr_scheduler, optimizer, num_warmup_steps=train.warmup_steps,
                                     num_training_steps=train.max_steps)
        ema = EMAModel(params, decay=train.ema_decay) if train.ema else None
        model, optimizer = acc.prepare(model, optimizer)
        acc.register_for_checkpointing(lr_scheduler)
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
        if self.accelerator.is_main_process:
            if ema is not None:
                ema.copy_to(params)
            self.task.save_final(self.accelerator.unwrap_model(model), Path(folder))
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
                    if acc.sync_gradients and train.max_grad_norm > 0:
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
        if acc.is_main_process:
            unwrapped = acc.unwrap_model(model)
            if ema is not None:
                ema.copy_to(params)
            task.save_final(unwrapped, final)
            metrics.plot()
            acc.print(f"finished {step} steps; {skipped} skips of {len(seen_skips)} unreadable videos; final model in {final}")
        acc.wait_for_everyone()
        acc.end_training()
        return final

    def samples(self, model, ema, step: int) -> None:
        """Validation samples with the EMA weights (main process only)."""
        acc = self.accelerator
        if acc.is_main_process:
            folder = self.output_dir / "samples" / f"step-{step:08d}"
            params = [p for p in acc.unwrap_model(model).parameters() if p.requires_grad]
            if ema is not None:
                ema.store(params)
                ema.copy_to(params)
            try:
                self.task.sample(acc.unwrap_model(model), folder)
            finally:
                if ema is not None:
                    ema.restore(params)
        acc.wait_for_everyone()


def parameter_groups(model: torch.nn.Module, learning_rate: float, lr_scale: dict[str, float]) -> list[dict]:
    """The trainable parameters as optimizer groups: those whose name contains a key of `lr_scale`
    (the first that matches) at `learning_rate * lr_scale[key]`, the rest at `learning_rate`."""
    groups = {None: []} | {key: [] for key in lr_scale}
    for name, param in model.named_parameters():
        if param.requires_grad:
            groups[next((key for key in lr_scale if key in name), None)].append(param)
    unmatched = [key for key in lr_scale if not groups[key]]
    if unmatched:
        raise ValueError(f"train.lr_scale: no trainable parameter name contains {unmatched}")
    return [{"params": params, "lr": learning_rate * (1.0 if key is None else lr_scale[key])}
            for key, params in groups.items() if params]
