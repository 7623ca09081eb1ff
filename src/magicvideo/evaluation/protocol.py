"""Benchmark protocol: render one clip per prompt (UCF-101 class prompts, MSR-VTT captions, ...),
then FVD against a real set and CLIPSIM against the prompts, recorded with every setting."""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import torch
from tqdm.auto import tqdm

from magicvideo.errors import InvalidArgumentError
from magicvideo.evaluation.fvd import NUM_FRAMES, compute_fvd
from magicvideo.evaluation.videos import EvaluationError, EvaluationWarning, list_videos
from magicvideo.generation import ClipJob, for_this_process, generate_clips, job_records, pipeline_fingerprint
from magicvideo.manifest import write_manifest

MANIFEST = "clips.csv"  # path,caption,fps of the generated clips, in the output folder
LOCK = "generation.json"  # how the clips of the output folder were made (checked on resume)


def generation_settings(pipe, num_frames: int | None = None, height: int | None = None, width: int | None = None,
                        num_inference_steps: int = 25, guidance_scale: float = 7.5,
                        negative_prompt: str | None = None, fps: float = 8, chunk_size: int | None = None,
                        frame_lag: int | None = None) -> dict:
    """The effective settings of a pipeline call (defaults resolved from the model)."""
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    frames = pipe.unet.config.num_frames if num_frames is None else num_frames
    chunk_size, frame_lag = pipe.sampling_plan(frames, chunk_size, frame_lag)
    return {
        "steps": num_inference_steps,
        "guidance": guidance_scale,
        "fps": fps,
        "frames": frames,
        "height": size if height is None else height,
        "width": size if width is None else width,
        "scheduler": type(pipe.scheduler).__name__,
        "negative_prompt": negative_prompt or "",
        "dtype": str(pipe.unet.dtype).removeprefix("torch."),
        "chunk_size": chunk_size,
        "frame_lag": frame_lag,
    }


def _pipe_kwargs(settings: dict) -> dict:
    return dict(num_inference_steps=settings["steps"], guidance_scale=settings["guidance"],
                num_frames=settings["frames"], height=settings["height"], width=settings["width"],
                negative_prompt=settings["negative_prompt"] or None, chunk_size=settings.get("chunk_size"),
                frame_lag=settings.get("frame_lag"))


def _update_lock(out_dir: Path, model: str, fingerprint: str, settings: dict, jobs: Sequence[ClipJob],
                 skip_existing: bool, write: bool = True) -> None:
    """Record how the clips of `out_dir` are made (model and its `pipeline_fingerprint`, settings, seed
    per file). On resume, refuse to reuse a clip made by other weights (even at the same path), with
    other settings or another seed: that would be a silently wrong FVD. `write`: False checks only
    (the processes other than the main one)."""
    lock = out_dir / LOCK
    previous = json.loads(lock.read_text()) if lock.is_file() else None
    seeds = {job.path.name: job.seed for job in jobs}
    if skip_existing:
        existing = [job for job in jobs if job.path.is_file()]
        if existing and previous is None:
            raise InvalidArgumentError("skip_existing", f"{out_dir} holds clips but no {LOCK}, so how they were made is "
                             "unknown; use another output folder or regenerate")
        if existing:
            changed = ["model weights"] if previous.get("model_sha256") != fingerprint else []
            changed += [f"settings.{key}" for key in settings if previous["settings"].get(key) != settings[key]]
            changed += [f"seed of {job.path.name}" for job in existing if previous["seeds"].get(job.path.name) != job.seed]
            if changed:
                raise InvalidArgumentError("skip_existing", f"clips in {out_dir} were made differently ({', '.join(changed[:5])} "
                                 f"differ, see {lock}); use another output folder or regenerate")
        seeds = {**(previous or {}).get("seeds", {}), **seeds}
    if not write:
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    lock.write_text(json.dumps({"model": model, "model_sha256": fingerprint, "settings": settings, "seeds": seeds},
                               indent=2))


def run_protocol(pipe, jobs: Sequence[ClipJob], out_dir: str | Path, real: str | Path, model: str,
                 settings: dict, clip_path: str | Path | None = None, cache_dir: str | Path | None = None,
                 i3d_path: str | Path | None = None, skip_existing: bool = False, extra: dict | None = None) -> dict | None:
    """Generate `jobs` (see `generation.plan_clips`) with `settings` (see `generation_settings`), then
    compute FVD against `real` and, with `clip_path`, CLIPSIM; returns the report (a JSON-able dict).

    Run as several processes (`accelerate launch`, `torchrun`), each generates its share of the jobs
    (`generation.for_this_process`: the clips of one process); the main process then waits for the others,
    computes the metrics and returns the report, the others return None.

    Bad input raises ValueError naming the argument ("real: ...", "num_frames: ...", "clip: ...")
    before anything is generated, or EvaluationError from the metrics. EvaluationWarnings (e.g. too
    few clips for a full-rank covariance) are collected in the report's "warnings"."""
    from magicvideo import __version__

    out_dir = Path(out_dir)
    if settings["frames"] < NUM_FRAMES:
        raise InvalidArgumentError("num_frames", f"FVD needs clips of at least {NUM_FRAMES} frames, these would have "
                         f"{settings['frames']} (the model makes up to {pipe.unet.config.num_frames})")
    try:
        num_real = len(list_videos(real))
    except EvaluationError as err:
        raise InvalidArgumentError("real", f"{err}") from err
    clip = None
    if clip_path is not None:
        from magicvideo.evaluation.clipsim import load_clip

        try:
            clip = load_clip(clip_path)
        except (EvaluationError, OSError) as err:
            raise InvalidArgumentError("clip", f"{err}") from err

    from accelerate import PartialState
    from accelerate.utils import gather_object

    state = PartialState(cpu=not torch.cuda.is_available())  # gloo on CPU (accelerate's default there: one process)
    fingerprint = pipeline_fingerprint(pipe)
    _update_lock(out_dir, model, fingerprint, settings, jobs, skip_existing, write=False)
    state.wait_for_everyone()  # every process has checked the clips kept from before, then the lock changes
    if state.is_main_process:
        _update_lock(out_dir, model, fingerprint, settings, jobs, skip_existing)

    counts = [0, 0]  # generated, skipped (kept)
    own, _ = for_this_process(jobs)
    for _, frames in generate_clips(pipe, own, fps=settings["fps"], skip_existing=skip_existing,
                                    **_pipe_kwargs(settings)):
        counts[frames is None] += 1
    counts = gather_object([counts]) if state.num_processes > 1 else [counts]
    if not state.is_main_process:
        return None
    generated, skipped = (sum(c[i] for c in counts) for i in (0, 1))
    manifest = write_manifest(out_dir / MANIFEST, job_records(jobs, settings["fps"]))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fvd = compute_fvd(real, manifest, i3d_path=i3d_path, cache_dir=cache_dir)
        clipsim = None
        if clip is not None:
            from magicvideo.evaluation.clipsim import clipsim as clipsim_of

            tqdm.write("CLIPSIM of the generated clips")
            clipsim = clipsim_of(*clip, list_videos(manifest))["clipsim"]
    notes = list(dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, EvaluationWarning)))
    return {
        "fvd": fvd["fvd"],
        "clipsim": clipsim,
        "num_clips": len(jobs),
        "num_generated": generated,
        "num_skipped": skipped,
        "num_real": fvd["num_real"],
        "num_fake": fvd["num_fake"],
        "warnings": notes,
        "model": model,
        "real": str(Path(real).resolve()),
        "clip_model": None if clip_path is None else str(Path(clip_path).resolve()),
        "clips": str(manifest.resolve()),
        "seeds": [job.seed for job in jobs],
        "settings": settings,
        **(extra or {}),
        "magicvideo_version": __version__,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
