"""Prompts across processes: `generate --prompts-file` and `eval protocol` under torchrun (2 CPU processes,
gloo) split the prompts by rank, each prompt keeping its seed, so every clip's frames equal those of one
process bit for bit (float arrays, not mp4 files); the main process writes the report; --skip-existing resumes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import make_tiny_pipeline
from magicvideo.training.synthetic import write_synthetic_dataset

HERE = Path(__file__).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parent / "src")}
PROMPTS = ["a red circle moving left", "a cat", "a dog on a green background", "a blue square", "a fish"]
SETTINGS = ["--steps", "2", "--guidance", "3", "--fps", "6", "--seed", "5"]


def cli(*args: str, processes: int = 1, port: int = 29683) -> str:
    launcher = [sys.executable] if processes == 1 else [str(Path(sys.executable).with_name("torchrun")),
                                                        "--nproc_per_node", str(processes), "--master_port", str(port)]
    done = subprocess.run([*launcher, str(HERE / "_run_cli.py"), *args], env=ENV, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return done.stdout


def arrays(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.load(p) for p in sorted(folder.glob("*.npy"))}


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("processes")
    make_tiny_pipeline(num_frames=16).save_pretrained(root / "pipe")
    (root / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    return {"root": root, "pipe": str(root / "pipe"), "prompts": str(root / "prompts.txt"),
            "real": str(write_synthetic_dataset(root / "real", clips=3, num_frames=16, size=32))}


@pytest.fixture(scope="module")
def reference(assets):
    """The frames of one process: `generate --prompts-file` (keyframes only: the clips of `eval protocol`)."""
    out = assets["root"] / "one"
    cli("generate", "--prompts-file", assets["prompts"], "--model", assets["pipe"], "--keyframes-only", *SETTINGS,
        "--out-dir", str(out))
    frames = arrays(out)
    assert len(frames) == len(PROMPTS) and all(a.dtype == np.float32 for a in frames.values())
    return frames


def test_generate_splits_the_prompts_by_rank_and_makes_the_frames_of_one_process(assets, reference, tmp_path):
    output = cli("generate", "--prompts-file", assets["prompts"], "--model", assets["pipe"], "--keyframes-only",
                 *SETTINGS, "--out-dir", str(tmp_path / "two"), processes=2)
    two = arrays(tmp_path / "two")
    assert two.keys() == reference.keys()
    assert all(np.array_equal(reference[name], two[name]) for name in two)
    written = [line for line in output.splitlines() if line.startswith("wrote ")]
    assert len(written) == len(PROMPTS)  # each clip by one process, with its own seed
    assert sorted(int(line.rsplit("seed ", 1)[1].rstrip(")")) for line in written) == [5, 6, 7, 8, 9]


def test_eval_protocol_resumed_across_processes_makes_the_clips_and_report_of_one_process(assets, reference, tmp_path):
    """A one-process run stopped after 3 prompts (--limit), resumed by 2 processes with --skip-existing: they make
    the 2 missing clips (the frames of one process), the main process writes the report of all 5."""
    from magicvideo.evaluation.fvd import compute_fvd

    out = tmp_path / "run"
    common = ["eval", "protocol", "--prompts", assets["prompts"], "--real", assets["real"], "--model", assets["pipe"],
              *SETTINGS, "--out-dir", str(out)]
    cli(*common, "--limit", "3")
    assert len(arrays(out)) == 3
    cli(*common, "--skip-existing", processes=2)
    made = arrays(out)
    assert made.keys() == reference.keys()
    assert all(np.array_equal(reference[name], made[name]) for name in made)
    report = json.loads((out / "report.json").read_text())
    assert (report["num_clips"], report["num_generated"], report["num_skipped"], report["num_fake"]) == (5, 2, 3, 5)
    assert report["seeds"] == [5, 6, 7, 8, 9]
    assert report["fvd"] == pytest.approx(compute_fvd(assets["real"], out)["fvd"], rel=1e-9)
