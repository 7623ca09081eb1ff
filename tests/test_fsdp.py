"""`train.fsdp` (FSDP2, training/fsdp.py) on 2 CPU processes (torchrun, gloo): the losses and final weights of one
process with the same global batch (max abs difference <= 1e-5, as the DDP test), exact resume from a
consolidated FSDP checkpoint, and FSDP asked for with one process refused in one line. Tiny model, 6 steps."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from _train_utils import tiny_config  # noqa: E402
from test_training import assert_same_weights, finish, magicvideo, unet_weights  # noqa: E402

from magicvideo.training.synthetic import write_synthetic_dataset  # noqa: E402

STEPS = 6


def losses(run: Path) -> list[str]:
    return [row.split(",")[1] for row in (run / "metrics.csv").read_text().splitlines()[1:]]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One process with batch 2, and 2 FSDP processes with batch 1 each (checkpoints every 2 steps); no EMA."""
    tmp = tmp_path_factory.mktemp("fsdp")
    manifest = write_synthetic_dataset(tmp / "data", 6, num_frames=10, size=24, seed=1)
    config = tiny_config(tmp, manifest, train={"max_steps": STEPS, "caption_dropout": 0.3, "ema": False},
                         output={"checkpoint_every": 2})
    finish(magicvideo("train", str(config), "--output-dir", str(tmp / "single")))
    data = yaml.safe_load(config.read_text())
    data["train"].update(batch_size=1, fsdp=True)
    (tmp / "fsdp.yaml").write_text(yaml.safe_dump(data))
    torchrun = (str(Path(sys.executable).with_name("torchrun")), "--nproc_per_node", "2", "--master_port", "29647")
    finish(magicvideo("train", str(tmp / "fsdp.yaml"), "--output-dir", str(tmp / "fsdp"), launcher=torchrun))
    return tmp, torchrun


def test_fsdp_on_two_processes_matches_one_process_with_the_whole_batch(runs):
    tmp, _ = runs
    assert_same_weights(unet_weights(tmp / "fsdp"), unet_weights(tmp / "single"), atol=1e-5)
    single, sharded = losses(tmp / "single"), losses(tmp / "fsdp")
    assert len(single) == len(sharded) == STEPS
    assert max(abs(float(a) - float(b)) for a, b in zip(single, sharded)) <= 1e-5


def test_fsdp_resumes_exactly_from_a_consolidated_checkpoint(runs):
    tmp, torchrun = runs
    run = tmp / "resumed"
    shutil.copytree(tmp / "fsdp", run)
    shutil.rmtree(run / "final")
    shutil.rmtree(run / "checkpoints" / f"checkpoint-{STEPS:08d}")
    checkpoint = run / "checkpoints" / f"checkpoint-{STEPS - 2:08d}"
    assert not list(checkpoint.glob("model*")) and (checkpoint / "custom_checkpoint_1.pkl").is_file()  # ShardedState
    output = finish(magicvideo("train", str(tmp / "fsdp.yaml"), "--output-dir", str(run), "--resume", launcher=torchrun))
    assert f"resumed from {checkpoint} (step {STEPS - 2})" in output
    assert_same_weights(unet_weights(run), unet_weights(tmp / "fsdp"), atol=0.0)
    assert losses(run) == losses(tmp / "fsdp")


def test_fsdp_with_one_process_is_refused_before_anything_is_written(runs):
    tmp, _ = runs
    process = magicvideo("train", str(tmp / "fsdp.yaml"), "--output-dir", str(tmp / "one"))
    output = process.communicate(timeout=300)[0]
    assert process.returncode == 2 and "Traceback" not in output, output[-2000:]
    assert "error: train.fsdp: FSDP shards the model over several processes and this run has one" in output
    assert not (tmp / "one").exists()
