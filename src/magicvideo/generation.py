"""Batch generation: one clip per prompt (or several seeds per prompt), written to files.

The one code path behind `magicvideo generate --prompts-file` and `magicvideo eval protocol`.
"""

from __future__ import annotations

import csv  # prompts files
import hashlib
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .errors import InvalidArgumentError
from .manifest import VideoRecord
from .video_io import VideoInfo, VideoWriter, write_video

CAPTION_COLUMNS = ("caption", "prompt", "text", "sentence")


@dataclass(frozen=True)
class ClipJob:
    """One clip to render: its prompt, the seed of its initial noise and its output file."""

    prompt: str
    seed: int
    path: Path


def pipeline_fingerprint(pipe) -> str:
    """SHA-256 of what a pipeline's clips depend on: every weight of its models (names, dtypes,
    shapes, values) and every component's config (e.g. the scheduler's). Clips kept from an earlier
    run are reused only under the same fingerprint, so re-training a model in place is noticed."""
    digest = hashlib.sha256()
    for name, component in sorted(pipe.components.items()):
        config = getattr(component, "config", None)
        if config is not None:
            config = config.to_dict() if hasattr(config, "to_dict") else dict(config)
            config = {k: v for k, v in config.items() if not k.startswith("_")}  # origin, versions
            digest.update(f"{name} config {json.dumps(config, sort_keys=True, default=str)}".encode())
        if isinstance(component, torch.nn.Module):
            for key, tensor in sorted(component.state_dict().items()):
                digest.update(f"{name}.{key} {tensor.dtype} {tuple(tensor.shape)}".encode())
                digest.update(tensor.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def read_prompts(path: str | Path) -> list[str]:
    """Prompts of a text file (one per non-empty line) or of a CSV with a header row naming a
    caption column (`caption`, `prompt`, `text` or `sentence`). Raises OSError / ValueError."""
    path = Path(path)
    if path.suffix.lower() != ".csv":
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = {name.strip().lower(): name for name in reader.fieldnames or ()}
        column = next((columns[c] for c in CAPTION_COLUMNS if c in columns), None)
        if column is None:
            raise ValueError(f"{path} has no caption column (header: {list(columns) or 'none'}; "
                             f"expected one of {list(CAPTION_COLUMNS)})")
        return [row[column].strip() for row in reader if (row[column] or "").strip()]


def clip_name(prompt: str, index: int) -> str:
    """`0007-the-digit-7-moves-right`: the prompt's index and a file-name-safe form of it."""
    return f"{index:04d}-" + (re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")[:60] or "clip")


def plan_clips(prompts: Sequence[str], out_dir: str | Path, seed: int = 0, seeds_per_prompt: int = 1,
               format: str = "mp4") -> list[ClipJob]:
    """The clips of a prompt list: prompt i, sample k gets seed `seed + i * seeds_per_prompt + k`
    (so clip i of a one-seed run uses `seed + i`) and the file `OUT/<index>-<prompt>[-s<k>].<format>`."""
    if seeds_per_prompt < 1:
        raise InvalidArgumentError("seeds_per_prompt", f"must be >= 1, got {seeds_per_prompt}")
    jobs = []
    for i, prompt in enumerate(prompts):
        for k in range(seeds_per_prompt):
            suffix = f"-s{k}" if seeds_per_prompt > 1 else ""
            jobs.append(ClipJob(prompt, seed + i * seeds_per_prompt + k,
                                Path(out_dir) / f"{clip_name(prompt, i)}{suffix}.{format}"))
    return jobs


def for_this_process(jobs: Sequence[ClipJob], device: str | None = None) -> tuple[list[ClipJob], str | None]:
    """(this process's jobs, its device) when a command runs as several processes (`accelerate launch`,
    `torchrun`): job i goes to process i mod N, which keeps the job's seed and file, so every clip is the one
    a single process makes; without a `device`, each process takes its own GPU (cuda:<local rank>). One
    process: all the jobs and `device` unchanged."""
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())  # gloo on CPU (accelerate's default there: one process)
    if state.num_processes == 1:
        return list(jobs), device
    own = list(jobs)[state.process_index::state.num_processes]
    return own, device if device is not None or state.device.type == "cpu" else str(state.device)


def generate_clips(pipe, jobs: Sequence[ClipJob], fps: float = 8, skip_existing: bool = False,
                   **pipe_kwargs) -> Iterator[tuple[ClipJob, VideoInfo | None]]:
    """Render and write each job's clip, yielding (job, what was written: frames, size, rate) as they
    are done; None for a clip skipped because its file exists (`skip_existing`). Each clip is drawn
    with its own CPU generator seeded with `job.seed`, so a clip does not depend on the others. `pipe`
    is a keyframe pipeline or a `MagicVideoCascadePipeline` (whose clips are written at its output
    frame rate, frame by frame as they are made: a long clip is never all in memory). `pipe_kwargs`
    go to the pipeline call (negative_prompt, num_frames, height, width, num_inference_steps,
    guidance_scale); its ValueErrors (bad settings) propagate. Files are written atomically
    (`write_video`, `VideoWriter`): an interrupted run never leaves a truncated clip behind."""
    for job in jobs:
        if not 0 <= job.seed < 2**63:
            raise InvalidArgumentError("seed", f"must be between 0 and 2**63 - 1, got {job.seed}")
    for job in tqdm(jobs, desc="clips", unit="clip", disable=len(jobs) == 1):
        if skip_existing and job.path.is_file():
            yield job, None
            continue
        if hasattr(pipe, "keyframes"):  # the cascade: seeded per stage, may change the frame rate
            out_fps = pipe.output_fps(fps, pipe_kwargs.get("interpolate"))
            with VideoWriter(job.path, out_fps) as writer:
                pipe(job.prompt, fps=fps, seed=job.seed, frame_sink=writer.write, **pipe_kwargs)
            frames, height, width = writer.frames, writer.height, writer.width
        else:
            generator = torch.Generator(device="cpu").manual_seed(job.seed)
            clip, out_fps = pipe(job.prompt, fps=fps, generator=generator, **pipe_kwargs).frames[0], fps
            write_video(job.path, clip, fps=out_fps)
            frames, height, width = clip.shape[:3]
        yield job, VideoInfo(frames, height, width, out_fps)


def job_records(jobs: Sequence[ClipJob], fps: float) -> list[VideoRecord]:
    """The manifest records (path, prompt, fps) of the jobs' clips, for `manifest.write_manifest`. Paths
    are absolute (a job's path may be relative to the working directory), so that the manifest stores
    them relative to its own folder and reads back from any working directory."""
    return [VideoRecord(str(job.path.absolute()), job.prompt, fps) for job in jobs]
