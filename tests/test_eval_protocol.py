"""`magicvideo eval protocol`: batch generation + FVD + CLIPSIM in one run, with a JSON report."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from magicvideo.cli import main
from magicvideo.evaluation.clipsim import compute_clipsim
from magicvideo.evaluation.fvd import compute_fvd
from magicvideo.generation import ClipJob, generate_clips, pipeline_fingerprint, plan_clips, read_prompts
from magicvideo.training.synthetic import write_synthetic_dataset
from magicvideo.video_io import read_video

from _eval_utils import save_tiny_clip
from conftest import make_tiny_pipeline

torch.set_num_threads(1)
PROMPTS = ["a red circle moving left", "a cat", "a dog on a green background"]
SETTINGS = ["--steps", "2", "--guidance", "3", "--fps", "6", "--seed", "5", "--negative", "blurry"]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """A tiny 16-frame pipeline (16x16 clips), 3 real synthetic clips of 16 frames, a tiny CLIP."""
    root = tmp_path_factory.mktemp("protocol")
    make_tiny_pipeline(num_frames=16).save_pretrained(root / "pipe")
    real = write_synthetic_dataset(root / "real", clips=3, num_frames=16, size=32)
    (root / "prompts.txt").write_text("\n".join(PROMPTS) + "\n\n")
    return {"root": root, "pipe": root / "pipe", "real": real, "clip": save_tiny_clip(root / "clip"),
            "prompts": root / "prompts.txt"}


def protocol(assets, out, *extra):
    return main(["eval", "protocol", "--prompts", str(assets["prompts"]), "--out-dir", str(out),
                 "--real", str(assets["real"]), "--model", str(assets["pipe"]), *SETTINGS, *extra])


def test_report_equals_the_metrics_run_separately_and_records_the_settings(assets, tmp_path, capsys):
    out = tmp_path / "run"
    assert protocol(assets, out, "--clip", str(assets["clip"]), "--cache", str(tmp_path / "cache"), "--json") == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    report = json.loads((out / "report.json").read_text())
    assert printed == report

    fvd = compute_fvd(assets["real"], out)  # the clip folder, no cache: a separate computation
    assert report["fvd"] == pytest.approx(fvd["fvd"], rel=1e-9)
    assert (report["num_real"], report["num_fake"], report["num_clips"], report["num_prompts"]) == (3, 3, 3, 3)
    prompts_in_order = tmp_path / "ordered.txt"
    prompts_in_order.write_text("\n".join(PROMPTS))
    clipsim = compute_clipsim(out, prompts_in_order, assets["clip"])
    assert report["clipsim"] == pytest.approx(clipsim["clipsim"], rel=1e-9)
    assert any("covariance" in w for w in report["warnings"])  # 3 clips: FVD's few-samples warning

    assert report["seeds"] == [5, 6, 7] and report["seed"] == 5 and report["seeds_per_prompt"] == 1
    assert report["settings"] == {"steps": 2, "guidance": 3.0, "fps": 6.0, "frames": 16, "height": 16, "width": 16,
                                  "scheduler": "DDIMScheduler", "negative_prompt": "blurry", "dtype": "float32",
                                  "chunk_size": 16, "frame_lag": None}
    assert report["model"] == str(assets["pipe"].resolve())
    assert report["magicvideo_version"] and report["date"][:2] == "20"

    # the clips are those of `generate --prompts-file` with the same options: same names, same seeds
    assert main(["generate", "--prompts-file", str(assets["prompts"]), "--out-dir", str(tmp_path / "gen"),
                 "--model", str(assets["pipe"]), *SETTINGS]) == 0
    videos = sorted(p.name for p in out.glob("*.mp4"))
    assert videos == sorted(p.name for p in (tmp_path / "gen").iterdir())
    for name in videos:
        assert np.array_equal(read_video(out / name)[0], read_video(tmp_path / "gen" / name)[0])


def test_skip_existing_resumes_without_regenerating(assets, tmp_path):
    out, cache = tmp_path / "run", str(tmp_path / "cache")
    assert protocol(assets, out, "--limit", "2", "--cache", cache) == 0  # "interrupted" after 2 prompts
    first = {p.name: p.stat().st_mtime_ns for p in out.glob("*.mp4")}
    assert len(first) == 2
    assert protocol(assets, out, "--cache", cache, "--skip-existing", "--report", str(tmp_path / "a.json")) == 0
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.mp4") if p.name in first} == first
    resumed = json.loads((tmp_path / "a.json").read_text())
    assert (resumed["num_generated"], resumed["num_skipped"]) == (1, 2)

    assert protocol(assets, out, "--cache", cache, "--skip-existing", "--report", str(tmp_path / "b.json")) == 0
    again = json.loads((tmp_path / "b.json").read_text())
    assert (again["num_generated"], again["num_skipped"]) == (0, 3)
    strip = ("num_generated", "num_skipped", "date")
    assert {k: v for k, v in again.items() if k not in strip} == {k: v for k, v in resumed.items() if k not in strip}
    assert again["fvd"] == pytest.approx(compute_fvd(assets["real"], out)["fvd"], rel=1e-9)


def test_skip_existing_refuses_clips_made_with_other_settings(assets, tmp_path, capsys):
    out = tmp_path / "run"
    jobs = plan_clips(PROMPTS[:1], out, seed=5)
    out.mkdir()
    jobs[0].path.write_bytes(b"")  # a clip of unknown origin
    assert protocol(assets, out, "--skip-existing") == 2
    assert "--skip-existing:" in capsys.readouterr().err
    (out / "generation.json").write_text(json.dumps({"model": str(assets["pipe"].resolve()), "seeds": {},
                                                     "settings": {"steps": 50}}))
    assert protocol(assets, out, "--skip-existing") == 2
    err = capsys.readouterr().err
    assert "--skip-existing:" in err and "settings.steps" in err and "Traceback" not in err


def test_fingerprint_survives_a_save_and_load_and_sees_any_weight_change(tmp_path):
    from magicvideo import MagicVideoPipeline

    pipe = make_tiny_pipeline(num_frames=4)
    pipe.save_pretrained(tmp_path / "pipe")
    loaded = MagicVideoPipeline.from_pretrained(tmp_path / "pipe")
    assert pipeline_fingerprint(loaded) == pipeline_fingerprint(pipe)
    with torch.no_grad():
        loaded.vae.decoder.conv_out.bias[0] += 1e-6
    assert pipeline_fingerprint(loaded) != pipeline_fingerprint(pipe)
    other_scheduler = make_tiny_pipeline(num_frames=4)
    other_scheduler.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing")
    assert pipeline_fingerprint(other_scheduler) != pipeline_fingerprint(pipe)


def test_skip_existing_refuses_clips_of_a_model_retrained_in_the_same_folder(assets, tmp_path, capsys):
    out, model = tmp_path / "run", tmp_path / "model"
    shutil.copytree(assets["pipe"], model)
    args = ["eval", "protocol", "--prompts", str(assets["prompts"]), "--out-dir", str(out), "--real",
            str(assets["real"]), "--model", str(model), *SETTINGS, "--limit", "2"]
    assert main(args) == 0
    assert main([*args, "--skip-existing"]) == 0  # same weights: the clips are reused
    retrained = make_tiny_pipeline(num_frames=16, temporal_attention="bidirectional")
    shutil.rmtree(model)
    retrained.save_pretrained(model)
    capsys.readouterr()
    assert main([*args, "--skip-existing"]) == 2
    err = capsys.readouterr().err
    assert "--skip-existing:" in err and "model weights" in err and "Traceback" not in err


def test_clips_are_deterministic_for_the_seed_and_seeds_per_prompt(tmp_path):
    pipe = make_tiny_pipeline(num_frames=4)
    jobs = plan_clips(["a cat", "a dog"], tmp_path / "a", seed=3, seeds_per_prompt=2)
    assert [(j.prompt, j.seed, j.path.name) for j in jobs] == [
        ("a cat", 3, "0000-a-cat-s0.mp4"), ("a cat", 4, "0000-a-cat-s1.mp4"),
        ("a dog", 5, "0001-a-dog-s0.mp4"), ("a dog", 6, "0001-a-dog-s1.mp4")]
    kwargs = dict(num_inference_steps=2, guidance_scale=1.0)
    written = [info for _, info in generate_clips(pipe, jobs, **kwargs)]
    assert [(w.frames, w.height, w.width) for w in written] == [(4, 16, 16)] * 4
    frames = [read_video(j.path)[0] for j in jobs]
    # a clip depends on its own prompt and seed only, not on the other clips of the run
    alone_job = ClipJob("a dog", 5, tmp_path / "b" / "x.mp4")
    next(generate_clips(pipe, [alone_job], **kwargs))
    assert np.array_equal(frames[2], read_video(alone_job.path)[0])
    assert not np.array_equal(frames[2], frames[3])
    assert sorted(os.listdir(tmp_path / "a")) == sorted(j.path.name for j in jobs)  # no partial files left


def test_prompts_from_a_csv_caption_column(tmp_path):
    csv_file = tmp_path / "msrvtt.csv"
    csv_file.write_text('video_id,Caption\nvideo7010,"a man, smiling, talks"\nvideo7011,\nvideo7012,a dog runs\n')
    assert read_prompts(csv_file) == ["a man, smiling, talks", "a dog runs"]
    (tmp_path / "bad.csv").write_text("video_id,label\n1,x\n")
    with pytest.raises(ValueError, match="no caption column"):
        read_prompts(tmp_path / "bad.csv")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--prompts": "missing.txt"}, "--prompts: cannot read"),
        ({"--prompts": "empty.txt"}, "has no prompts"),
        ({"--real": "no-such-dir"}, "--real: "),
        ({"--real": "empty-dir"}, "--real: no videos"),
        ({"--clip": "no-clip"}, "--clip: "),
        ({"--scheduler": "foo"}, "--scheduler: unknown scheduler"),
        ({"--frames": "8"}, "--frames: FVD needs clips of at least 16 frames"),
        ({"--limit": "0"}, "--limit: must be >= 1"),
        ({"--seeds-per-prompt": "0"}, "--seeds-per-prompt: must be >= 1"),
        ({"--height": "18"}, "--height: must be a positive multiple of 4"),
    ],
)
def test_bad_input_is_one_clear_line_naming_the_argument(assets, tmp_path, capsys, change, message):
    (tmp_path / "empty.txt").write_text("\n  \n")
    (tmp_path / "empty-dir").mkdir()
    args = {"--prompts": str(assets["prompts"]), "--real": str(assets["real"])}
    args.update({k: str(tmp_path / v) if k in ("--prompts", "--real", "--clip") else v for k, v in change.items()})
    argv = ["eval", "protocol", "--out-dir", str(tmp_path / "out"), "--model", str(assets["pipe"]), "--steps", "1"]
    assert main(argv + [x for kv in args.items() for x in kv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not list(tmp_path.glob("out/*.mp4"))  # refused before generating anything


def test_too_few_clips_is_fvds_error(assets, tmp_path, capsys):
    assert protocol(assets, tmp_path / "out", "--limit", "1") == 2
    assert "at least 2" in capsys.readouterr().err


def test_a_manifest_of_jobs_planned_in_a_relative_folder_reads_back_from_elsewhere(tmp_path, monkeypatch):
    from magicvideo.evaluation.videos import list_videos
    from magicvideo.generation import job_records
    from magicvideo.manifest import write_manifest
    from magicvideo.video_io import write_video

    monkeypatch.chdir(tmp_path)
    jobs = plan_clips(["a 1", "a 2"], "runs/set")  # relative to the working directory, as a CLI user gives it
    for job in jobs:
        job.path.parent.mkdir(parents=True, exist_ok=True)
        write_video(job.path, np.zeros((2, 8, 8, 3), np.uint8), fps=8)
    manifest = write_manifest("runs/set/captions.csv", job_records(jobs, 8))
    assert manifest.read_text().splitlines()[1].startswith("0000-a-1.mp4,")
    monkeypatch.chdir(tmp_path / "runs")
    items = list_videos(tmp_path / "runs/set/captions.csv")
    assert [item.path.resolve() for item in items] == [(tmp_path / job.path).resolve() for job in jobs]
