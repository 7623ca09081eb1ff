"""Training: data sampling, config checking, DDP equivalence, exact resume after SIGKILL, skipped
unreadable videos, and cached == uncached losses. Tiny models (16 px, 4 frames), a few steps."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).parent))
from _train_utils import tiny_config  # noqa: E402
from conftest import assert_modes_follow_umask  # noqa: E402

from magicvideo.training.config import ConfigError, config_from_dict  # noqa: E402
from magicvideo.training.clips import VideoTooShort, sample_clip  # noqa: E402
from magicvideo.training.synthetic import write_synthetic_dataset  # noqa: E402

SRC = str(Path(__file__).resolve().parents[1] / "src")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": SRC}
STEPS, EVERY = 6, 2


def magicvideo(*args: str, launcher: tuple[str, ...] = (sys.executable,), **kwargs) -> subprocess.Popen:
    return subprocess.Popen([*launcher, "-m", "magicvideo", *args], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kwargs)


def finish(process: subprocess.Popen) -> str:
    output = process.communicate(timeout=300)[0]
    assert process.returncode == 0, output[-3000:]
    return output


def unet_weights(run: Path) -> dict:
    return load_file(str(run / "final" / "unet" / "diffusion_pytorch_model.safetensors"))


def assert_same_weights(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst <= atol, worst


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Data, tiny config (batch 2, 6 steps, checkpoint every 2) and its uninterrupted reference run."""
    tmp = tmp_path_factory.mktemp("train")
    manifest = write_synthetic_dataset(tmp / "data", 6, num_frames=10, size=24, seed=1)
    config = tiny_config(tmp, manifest, train={"max_steps": STEPS, "caption_dropout": 0.3},
                         output={"checkpoint_every": EVERY})
    finish(magicvideo("train", str(config), "--output-dir", str(tmp / "reference")))
    return tmp, manifest, config


def test_sample_clip_paper_sampling():
    rng = random.Random(0)
    for _ in range(200):
        clip = sample_clip(40, 24.0, 16, 1, 4, rng)
        steps = {b - a for a, b in zip(clip.indices, clip.indices[1:])}
        assert steps == {clip.stride} and 1 <= clip.stride <= 2  # 16 frames at stride 3 need 46 frames
        assert 0 <= clip.indices[0] and clip.indices[-1] < 40
        assert clip.fps == 24.0 / clip.stride
    with pytest.raises(VideoTooShort):
        sample_clip(15, 24.0, 16, 1, 4, rng)


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"^train\.lr: unknown key"):
        config_from_dict({"train": {"lr": 1e-4}})
    with pytest.raises(ConfigError, match=r"^data\.num_frames: expected int, got str"):
        config_from_dict({"data": {"num_frames": "sixteen"}})
    assert config_from_dict({"train": {"learning_rate": "1e-4"}}).train.learning_rate == 1e-4  # YAML's 1e-4 string
    with pytest.raises(ConfigError, match=r"^model\.text_max_length: must be at least 1, got 0"):
        config_from_dict({"model": {"text_max_length": 0}})
    assert config_from_dict({"model": {"text_max_length": None}}).model.text_max_length is None


def test_set_overrides_reach_the_config_and_are_checked(tmp_path):
    from magicvideo.training.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"model": {"unet": {"num_frames": 8}}, "train": {"batch_size": 2}}))
    config = load_config(path, ["model.unet.temporal_attention=bidirectional", "train.batch_size=4",
                                "output.validation_prompts=[a, b]"])
    assert config.model.unet == {"num_frames": 8, "temporal_attention": "bidirectional"}
    assert config.train.batch_size == 4 and config.output.validation_prompts == ["a", "b"]
    with pytest.raises(ConfigError, match=r"^train\.batch_size: expected int"):
        load_config(path, ["train.batch_size=many"])
    with pytest.raises(ConfigError, match=r"^train\.lr: unknown key"):
        load_config(path, ["train.lr=1"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(path, ["train.batch_size"])
    for removed in ("train.lr_scale={adaptor: 5}", "train.noise_sharing=0.5", "model.space_time_attention=[true]",
                    "model.temporal_attention=directed"):
        key = removed.split("=")[0].replace(".", "\\.")
        with pytest.raises(ConfigError, match=rf"^{key}: removed"):
            load_config(path, [removed])


def test_train_flags_are_checked_like_the_config(tmp_path):
    from magicvideo.cli import UserError, build_parser
    from magicvideo.cli.train import _load

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"train": {"max_steps": 10}}))
    parse = build_parser().parse_args
    config = _load(parse(["train", str(path), "--max-steps", "3", "--output-dir", "123", "--checkpoint-every", "0"]))
    assert (config.train.max_steps, config.output.output_dir, config.output.checkpoint_every) == (3, "123", 0)
    with pytest.raises(UserError, match=r"^train\.max_steps: must be at least 1, got 0"):
        _load(parse(["train", str(path), "--max-steps", "0"]))
    with pytest.raises(UserError, match=r"^output\.checkpoint_every: must be at least 0, got -1"):
        _load(parse(["train-vae", str(path), "--checkpoint-every", "-1"]))


def test_run_outputs_and_final_pipeline(setup):
    tmp, _, _ = setup
    run = tmp / "reference"
    rows = (run / "metrics.csv").read_text().splitlines()
    assert rows[0] == "step,loss,lr,clips_per_s,skipped" and len(rows) == STEPS + 1
    assert (run / "loss.png").stat().st_size > 0
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["checkpoint-00000004", "checkpoint-00000006"]  # keep_checkpoints: 2, no temp left behind
    from magicvideo import MagicVideoPipeline

    pipe = MagicVideoPipeline.from_pretrained(run / "final")
    assert pipe.unet.config.num_frames == 4
    assert_modes_follow_umask(run)  # final model and checkpoints


def test_two_processes_match_one_process_with_double_batch(setup):
    tmp, _, config = setup
    data = yaml.safe_load(config.read_text())
    data["train"]["batch_size"] = 1
    half = tmp / "half.yaml"
    half.write_text(yaml.safe_dump(data))
    torchrun = (str(Path(sys.executable).with_name("torchrun")), "--nproc_per_node", "2", "--master_port", "29641")
    finish(magicvideo("train", str(half), "--output-dir", str(tmp / "ddp"), launcher=torchrun))
    assert_same_weights(unet_weights(tmp / "ddp"), unet_weights(tmp / "reference"), atol=1e-5)
    assert (tmp / "ddp" / "metrics.csv").read_text().split("\n")[1].split(",")[:3] == \
        (tmp / "reference" / "metrics.csv").read_text().split("\n")[1].split(",")[:3]


def test_sigkill_then_resume_matches_uninterrupted_run(setup):
    tmp, _, config = setup
    run = tmp / "killed"
    process = magicvideo("train", str(config), "--output-dir", str(run))
    first = run / "checkpoints" / f"checkpoint-{EVERY:08d}"
    while not first.exists():
        assert process.poll() is None, process.communicate()[0][-3000:]
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert not (run / "final").exists(), "the run ended before it could be killed"
    kept = sorted(p.name for p in (run / "checkpoints").iterdir())
    refused = magicvideo("train", str(config), "--output-dir", str(run))  # a new run into it, without --resume
    message = refused.communicate(timeout=300)[0]
    assert refused.returncode == 2 and "Traceback" not in message, message
    assert f"{run} already holds a run (checkpoints up to step" in message and "pass --resume" in message
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == kept  # nothing changed
    output = finish(magicvideo("train", str(config), "--output-dir", str(run), "--resume"))
    assert "resumed from" in output
    assert_same_weights(unet_weights(run), unet_weights(tmp / "reference"), atol=0.0)
    assert (run / "metrics.csv").read_text().count("\n") == STEPS + 1  # no duplicated rows


def test_truncated_and_missing_videos_are_skipped(setup):
    tmp, manifest, config = setup
    videos = sorted((tmp / "data" / "videos").glob("*.mp4"))[:3]
    truncated = tmp / "data" / "videos" / "truncated.mp4"
    data = videos[0].read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    bad = tmp / "data" / "bad.csv"
    rows = [f"videos/{v.name},a clip,8" for v in videos] + ["videos/truncated.mp4,cut,8", "videos/missing.mp4,gone,8"]
    bad.write_text("path,caption,fps\n" + "\n".join(rows) + "\n")
    run = tmp / "skips"
    output = finish(magicvideo("train", str(config), "--data", str(bad), "--output-dir", str(run), "--max-steps", "3",
                               "--checkpoint-every", "0"))
    assert "truncated.mp4" in output and "missing.mp4" in output
    skipped = int((run / "metrics.csv").read_text().splitlines()[-1].split(",")[-1])
    assert skipped >= 2  # 6 clips drawn from 5 videos: every video was tried at least once
    assert f"{skipped} skips of 2 unreadable videos" in output
    assert (run / "final" / "model_index.json").exists()


def test_cached_and_uncached_batches_give_the_same_loss(setup):
    tmp, _, config_path = setup
    from accelerate import Accelerator

    from magicvideo.training.cache import CachedClipDataset, build_cache_from_config
    from magicvideo.training.config import load_config
    from magicvideo.training.data import collate
    from magicvideo.training.diffusion import DiffusionTask

    config = load_config(config_path)
    config.train.caption_dropout = 0.5
    config.data.cache_dir, config.data.cache_dtype = str(tmp / "cache"), "float32"
    index = build_cache_from_config(config)
    assert len(index["videos"]) == 6 and not index["skipped"]
    torch.manual_seed(0)
    task = DiffusionTask(config, Accelerator(cpu=True))
    cached = task.dataset(0, 1, 0)
    assert isinstance(cached, CachedClipDataset)
    config.data.cache_dir = None
    uncached = task.dataset(0, 1, 0)
    dropped = 0
    for positions in ([0, 1, 2], [7, 8, 9], [13, 14, 15]):
        a, b = collate([uncached[p] for p in positions]), collate([cached[p] for p in positions])
        assert torch.equal(a["fps"], b["fps"])
        torch.testing.assert_close(task.loss(task.model, a), task.loss(task.model, b), rtol=1e-5, atol=1e-6)
        dropped += sum(torch.equal(c, task.null_text) for c in task.conditioning(b)[1])
    assert dropped > 0  # the empty-caption path was compared too

    # A shorter context (model.text_max_length) reuses the 77-token cache, cut: the same losses as
    # encoding the captions at that length.
    config.model.text_max_length, config.data.cache_dir = 12, str(tmp / "cache")
    task = DiffusionTask(config, Accelerator(cpu=True))
    cached = task.dataset(0, 1, 0)
    assert cached[0]["text_embeds"].shape[0] == 12 and task.null_text.shape[0] == 12
    config.data.cache_dir = None
    uncached = task.dataset(0, 1, 0)
    assert max(len(task.tokenizer(uncached[p]["caption"]).input_ids) for p in range(6)) <= 12  # captions fit
    for positions in ([0, 1, 2], [7, 8, 9]):
        a, b = collate([uncached[p] for p in positions]), collate([cached[p] for p in positions])
        assert task.conditioning(a)[1].shape[1] == 12
        torch.testing.assert_close(task.loss(task.model, a), task.loss(task.model, b), rtol=1e-5, atol=1e-6)
    # ... and a longer context than the cache holds asks for a rebuild.
    shutil.rmtree(tmp / "cache")
    config.model.text_max_length, config.data.cache_dir = 8, str(tmp / "cache")
    build_cache_from_config(config)
    config.model.text_max_length = 12
    with pytest.raises(ValueError, match="holds 8-token text embeddings, the model uses 12: rebuild it"):
        DiffusionTask(config, Accelerator(cpu=True)).dataset(0, 1, 0)
    shutil.rmtree(tmp / "cache")


def test_min_snr_weighting(setup):
    """snr_gamma weights each clip's MSE by min(SNR, gamma) / SNR: a huge gamma gives plain MSE,
    and the weighted loss equals the hand-computed one."""
    _, _, config_path = setup
    from accelerate import Accelerator
    from diffusers.training_utils import compute_snr

    from magicvideo.training.config import load_config
    from magicvideo.training.data import collate
    from magicvideo.training.diffusion import DiffusionTask

    config = load_config(config_path)
    torch.manual_seed(0)
    task = DiffusionTask(config, Accelerator(cpu=True))
    batch = collate([task.dataset(0, 1, 0)[p] for p in (0, 1, 2)])
    plain = task.loss(task.model, batch)
    config.train.snr_gamma = 1e12
    torch.testing.assert_close(task.loss(task.model, batch), plain, rtol=1e-5, atol=0)

    config.train.snr_gamma = 0.0
    per_clip = []
    for i in range(3):  # each clip's plain loss is its own MSE (noise and timestep are seeded by position)
        per_clip.append(task.loss(task.model, collate([task.dataset(0, 1, 0)[p] for p in (i,)])))
    from magicvideo.training.trainer import sample_generator

    steps, timesteps = task.scheduler.config.num_train_timesteps, []
    for p in (0, 1, 2):
        generator = sample_generator(config.train.seed, p)
        torch.randn(task.conditioning(collate([task.dataset(0, 1, 0)[p]]))[0].shape[1:], generator=generator)
        timesteps.append(torch.randint(0, steps, (), generator=generator))
    snr = compute_snr(task.scheduler, torch.stack(timesteps))
    expected = (torch.stack(per_clip) * torch.clamp(snr, max=1.0) / snr).mean()
    config.train.snr_gamma = 1.0
    torch.testing.assert_close(task.loss(task.model, batch), expected, rtol=1e-5, atol=1e-7)

    # context clips: the context frames leave the loss; the other frames' mean MSE stays
    config.train.context_fraction, config.train.snr_gamma = 1.0, 0.0
    context_loss = task.loss(task.model, batch)
    assert torch.isfinite(context_loss) and not torch.allclose(context_loss, torch.stack(per_clip).mean())


def test_fine_tuning_from_the_bundled_model_keeps_its_context_length(setup, tmp_path):
    """`model.pretrained: <bundled folder>`: the packaged MiniLM is taken from the installed package
    (the folder has no text_encoder/), and the saved tokenizer's 16-token context is kept."""
    from magicvideo import MagicVideoPipeline
    from magicvideo.loading import BUNDLED_MODEL

    _, manifest, _ = setup
    config = {
        "model": {"pretrained": str(BUNDLED_MODEL)},
        "data": {"manifest": str(manifest), "num_frames": 4, "resolution": 32, "min_stride": 1, "max_stride": 2},
        "train": {"batch_size": 1, "max_steps": 1, "learning_rate": 1e-5, "warmup_steps": 0, "ema": False},
        "output": {"output_dir": str(tmp_path / "run"), "checkpoint_every": 0},
    }
    path = tmp_path / "finetune.yaml"
    path.write_text(yaml.safe_dump(config))
    finish(magicvideo("train", str(path)))
    pipe = MagicVideoPipeline.from_pretrained(tmp_path / "run" / "final")
    assert pipe.tokenizer.model_max_length == 16
    assert not (tmp_path / "run" / "final" / "text_encoder").exists()
    assert pipe.unet.config.num_frames == 16


def test_staggered_training_noise_ramps_up_with_the_frame_index():
    """train.staggered_fraction: the noise is drawn exactly as before, and a clip's timesteps are per
    frame: its own t for every frame, or (with that probability) a ramp t0 + slope * f clamped to
    0 ... T - 1 with slope <= staggered_max_slope, never decreasing from frame to frame."""
    from magicvideo.training.diffusion import NoiseSchedule, position_noise

    plain_noise, t, mask = position_noise(0, range(400), (4, 16, 2, 2), 1000, "cpu")
    assert mask is None and t.shape == (400,)
    noise, per_frame, _ = position_noise(0, range(400), (4, 16, 2, 2), 1000, "cpu",
                                         NoiseSchedule(staggered_fraction=0.5, staggered_max_slope=80))
    assert torch.equal(noise, plain_noise) and per_frame.shape == (400, 16)
    assert per_frame.min() >= 0 and per_frame.max() <= 999
    steps = per_frame[:, 1:] - per_frame[:, :-1]
    assert steps.min() >= 0 and steps.max() <= 81
    constant = (steps == 0).all(1)
    assert torch.equal(per_frame[constant, 0], t[constant])  # the clips left synchronous keep their timestep
    assert constant.float().mean().item() == pytest.approx(0.5, abs=0.08)
    ramps = per_frame[~constant]
    assert ((ramps == 0).any(1) | (ramps == 999).any(1)).any() and (ramps[:, 0] < ramps[:, -1]).all()
    _, every, _ = position_noise(0, range(50), (4, 16, 2, 2), 1000, "cpu",
                                 NoiseSchedule(staggered_fraction=1.0, staggered_max_slope=80))
    assert ((every[:, 1:] - every[:, :-1]) > 0).any(1).float().mean() > 0.9


def test_per_frame_timesteps_noise_each_frame_at_its_own_level():
    """frames_as_batch: a scheduler function applied with a timestep per frame equals applying it to
    each frame alone; with one timestep per clip it is the function itself. video_mse with per-frame
    weights weighs each frame's MSE."""
    from diffusers import DDPMScheduler

    from magicvideo.training.diffusion import frames_as_batch, video_mse

    scheduler = DDPMScheduler(prediction_type="v_prediction")
    g = torch.Generator().manual_seed(0)
    x, n = torch.randn(2, 4, 3, 2, 2, generator=g), torch.randn(2, 4, 3, 2, 2, generator=g)
    t = torch.tensor([[0, 500, 999], [10, 10, 10]])
    for fn in (scheduler.add_noise, scheduler.get_velocity):
        out = frames_as_batch(fn, x, n, t)
        for b in range(2):
            for f in range(3):
                torch.testing.assert_close(out[b, :, f], fn(x[b, :, f], n[b, :, f], t[b, f].reshape(1)))
        torch.testing.assert_close(frames_as_batch(fn, x, n, t[:, 0]), fn(x, n, t[:, 0]))
    weights = torch.tensor([[1.0, 0.0, 2.0], [1.0, 1.0, 1.0]])
    per_frame = (x - n).pow(2).mean(dim=(1, 3, 4))
    torch.testing.assert_close(video_mse(x, n, weights=weights), (weights * per_frame).mean(1))
    torch.testing.assert_close(video_mse(x, n, weights=torch.tensor([2.0, 3.0])), video_mse(x, n) * torch.tensor([2.0, 3.0]))
    mask = torch.tensor([[0.0, 1.0, 1.0], [1.0, 1.0, 1.0]])  # the first clip's frame 0 is context
    torch.testing.assert_close(video_mse(x, n, weights=weights, mask=mask),
                               torch.stack([(weights[0, 1:] * per_frame[0, 1:]).mean(), (weights[1] * per_frame[1]).mean()]))


def test_context_clips_and_per_frame_levels():
    """train.context_fraction: the noise is drawn as before; that share of clips has its first k frames
    (k in 1 ... F - 1) at context timesteps in [0, context_max_timestep] and out of the loss (mask 0), the
    other frames at the clip's level; noise_schedule per_frame draws a level for every frame."""
    from magicvideo.training.diffusion import NoiseSchedule, position_noise

    plain_noise, t, _ = position_noise(0, range(400), (4, 16, 2, 2), 1000, "cpu")
    noise, levels, mask = position_noise(0, range(400), (4, 16, 2, 2), 1000, "cpu",
                                         NoiseSchedule(context_fraction=0.5, context_max_timestep=50))
    assert torch.equal(noise, plain_noise) and levels.shape == mask.shape == (400, 16)
    context = mask == 0
    with_context = context.any(1)
    assert with_context.float().mean().item() == pytest.approx(0.5, abs=0.08)
    assert not context[:, -1].any()  # at least one frame is made
    k = context.sum(1)
    assert torch.equal(context, torch.arange(16)[None] < k[:, None])  # a prefix of frames
    assert k[with_context].min() == 1 and k.max() == 15
    assert levels[context].max() <= 50 and torch.equal(levels[~context], t[:, None].expand(-1, 16)[~context])
    _, free, _ = position_noise(0, range(50), (4, 16, 2, 2), 1000, "cpu", NoiseSchedule(kind="per_frame"))
    assert free.shape == (50, 16) and (free.float().std(1) > 100).all()


def test_clips_that_start_later_are_given_context():
    """train.context_after_start: a clip that starts after its video's first frame always has at least
    that many context frames; clips that start at frame 0 keep the context_fraction draw exactly, and the
    default draws what it always drew. data.first_frame_share: that share of clips starts at frame 0, the
    stream of clip choices unchanged when it is 0."""
    import random

    from magicvideo.training.clips import sample_clip
    from magicvideo.training.diffusion import NoiseSchedule, position_noise

    schedule = NoiseSchedule(context_fraction=0.5, context_max_timestep=50)
    starts = torch.tensor([0, 5] * 200)
    _, base_t, base_mask = position_noise(0, range(400), (4, 16, 2, 2), 1000, "cpu", schedule, starts)
    _, same_t, same_mask = position_noise(0, range(400), (4, 16, 2, 2), 1000, "cpu", schedule)
    assert torch.equal(base_t, same_t) and torch.equal(base_mask, same_mask)  # off: starts do not matter
    forced = NoiseSchedule(context_fraction=0.5, context_max_timestep=50, context_after_start=2)
    _, t, mask = position_noise(0, range(400), (4, 16, 2, 2), 1000, "cpu", forced, starts)
    k = (mask == 0).sum(1)
    later = starts > 0
    assert k[later].min() == 2 and k[later].max() == 15
    assert torch.equal(t[~later], base_t[~later]) and torch.equal(mask[~later], base_mask[~later])
    assert torch.equal(mask == 0, torch.arange(16)[None] < k[:, None]) and t[mask == 0].max() <= 50
    # only the later-starting clips are forced: with no context_fraction, clips at frame 0 have none
    _, _, only = position_noise(0, range(400), (4, 16, 2, 2), 1000, "cpu", NoiseSchedule(context_after_start=3), starts)
    assert (only[~later] == 1).all() and ((only[later] == 0).sum(1) >= 3).all()

    def draws(share):
        rng = random.Random(0)
        return [sample_clip(48, 24, 16, 1, 3, rng, share).indices[0] for _ in range(400)]

    rng = random.Random(0)
    assert draws(0.0) == [sample_clip(48, 24, 16, 1, 3, rng).indices[0] for _ in range(400)]
    firsts = sum(start == 0 for start in draws(0.5)) / 400
    assert 0.45 < firsts < 0.62  # half at frame 0, plus the uniform draws that land on 0


def test_export_writes_a_checkpoints_model_as_final_would(setup):
    """--export: the newest checkpoint of a finished run (saved at its last step) exports exactly the
    final/ weights (EMA included); an earlier checkpoint exports other weights; bad uses are refused."""
    tmp, _, config = setup
    run = tmp / "reference"
    finish(magicvideo("train", str(config), "--output-dir", str(run), "--export", str(tmp / "exported-6")))
    exported = load_file(str(tmp / "exported-6" / "unet" / "diffusion_pytorch_model.safetensors"))
    assert_same_weights(exported, unet_weights(run), atol=0.0)
    finish(magicvideo("train", str(config), "--output-dir", str(run), "--export", str(tmp / "exported-4"),
                      "--checkpoint", str(run / "checkpoints" / "checkpoint-00000004")))
    earlier = load_file(str(tmp / "exported-4" / "unet" / "diffusion_pytorch_model.safetensors"))
    assert max((earlier[k] - exported[k]).abs().max().item() for k in exported) > 0
    for args in (("--output-dir", str(tmp / "no-run"), "--export", str(tmp / "x")),
                 ("--output-dir", str(run), "--checkpoint", str(run / "checkpoints" / "checkpoint-00000004"))):
        process = magicvideo("train", str(config), *args)
        output = process.communicate(timeout=300)[0]
        assert process.returncode != 0 and "Traceback" not in output and "error" in output.lower(), output[-2000:]


def test_a_damaged_newest_checkpoint_is_reported_and_the_one_before_is_resumed(setup):
    """Every checkpoint carries checksums.json (size and SHA-256 of each of its files). A newest
    checkpoint with a flipped byte inside a tensor (which would load without complaint) or a
    truncated file is reported in one line; --resume continues from the checkpoint before it and ends
    with exactly the weights of the uninterrupted run."""
    import json

    from magicvideo.training.checkpoint import MANIFEST, checkpoint_dirs, latest_checkpoint

    tmp, _, config = setup
    reference = tmp / "reference"
    for checkpoint in checkpoint_dirs(reference):
        listed = set(json.loads((checkpoint / MANIFEST).read_text())["files"])
        assert listed == {p.relative_to(checkpoint).as_posix() for p in checkpoint.rglob("*") if p.is_file()} - {MANIFEST}
    assert latest_checkpoint(reference).name == f"checkpoint-{STEPS:08d}"

    truncated = tmp / "truncated"
    shutil.copytree(reference, truncated)
    newest = truncated / "checkpoints" / f"checkpoint-{STEPS:08d}"
    optimizer = next(newest.glob("optimizer*"))
    optimizer.write_bytes(optimizer.read_bytes()[: optimizer.stat().st_size // 2])
    assert latest_checkpoint(truncated).name == f"checkpoint-{STEPS - EVERY:08d}"

    run = tmp / "flipped"
    shutil.copytree(reference, run)
    shutil.rmtree(run / "final")
    weights = run / "checkpoints" / f"checkpoint-{STEPS:08d}" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    position = 8 + int.from_bytes(data[:8], "little") + (len(data) - 8 - int.from_bytes(data[:8], "little")) // 2
    data[position] ^= 0x10  # a bit of one weight: still a valid safetensors file
    weights.write_bytes(bytes(data))
    load_file(str(weights))
    output = finish(magicvideo("train", str(config), "--output-dir", str(run), "--resume"))
    damaged = [line for line in output.splitlines() if "damaged" in line]
    assert len(damaged) == 1 and f"checkpoint-{STEPS:08d}" in damaged[0] and "model.safetensors" in damaged[0], output
    assert f"checkpoint-{STEPS - EVERY:08d} (step {STEPS - EVERY})" in output and "Traceback" not in output
    assert_same_weights(unet_weights(run), unet_weights(reference), atol=0.0)
    assert latest_checkpoint(run).name == f"checkpoint-{STEPS:08d}"  # written again, whole


def test_the_config_offers_exactly_the_lora_target_groups():
    from magicvideo.lora import TARGET_GROUPS
    from magicvideo.training.config import CHOICES

    assert CHOICES["train.lora.targets"] == TARGET_GROUPS
