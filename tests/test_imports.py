"""Start-up: `magicvideo generate` imports only what it uses (issue #18). Each command runs in a
fresh interpreter, as `python -m magicvideo` runs it, and then lists the unused modules it loaded."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# never needed by `generate`: the web demo, training, evaluation and the digits tools
NEVER = ("gradio", "magicvideo.demo", "magicvideo.training", "magicvideo.evaluation", "magicvideo.digits")
INTERPOLATION = ("magicvideo.models.interpolation", "magicvideo.pipelines.interpolation")
SUPER_RESOLUTION = ("magicvideo.models.super_resolution", "magicvideo.pipelines.upscale")

RUN = """
import json, sys
from magicvideo.cli import main
code = main(sys.argv[2:])
print(json.dumps({"code": code, "loaded": sorted(m for m in json.loads(sys.argv[1]) if m in sys.modules)}))
"""


def loaded_modules(args: list[str], modules: tuple[str, ...]) -> list[str]:
    """Which of `modules` the command `magicvideo ARGS` has imported when it is done."""
    result = subprocess.run([sys.executable, "-c", RUN, json.dumps(modules), *args], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["code"] == 0, result.stderr
    return report["loaded"]


@pytest.fixture(scope="module")
def cascade_dir(tmp_path_factory):
    """A cascade folder with every stage: keyframes, interpolation and super-resolution."""
    from test_cascade import tiny_cascade

    path = tmp_path_factory.mktemp("cascade") / "cascade"
    tiny_cascade().save_pretrained(path)
    return path


def test_keyframes_only_with_the_bundled_model(tmp_path):
    args = ["generate", "the digit 7 moves to the right", "--keyframes-only", "--steps", "1", "--device", "cpu",
            "--out", str(tmp_path / "clip.mp4")]
    assert loaded_modules(args, NEVER + INTERPOLATION + SUPER_RESOLUTION) == []
    assert (tmp_path / "clip.mp4").is_file()


def test_keyframes_only_loads_no_other_stage_of_a_cascade(cascade_dir, tmp_path):
    args = ["generate", "a red ball bounces", "--model", str(cascade_dir), "--keyframes-only", "--steps", "1",
            "--device", "cpu", "--out", str(tmp_path / "clip.mp4")]
    assert loaded_modules(args, NEVER + INTERPOLATION + SUPER_RESOLUTION) == []


def test_super_resolution_is_loaded_only_with_upscale(cascade_dir, tmp_path):
    args = ["generate", "a red ball bounces", "--model", str(cascade_dir), "--steps", "1", "--device", "cpu",
            "--out", str(tmp_path / "clip.mp4")]
    assert loaded_modules(args, NEVER + INTERPOLATION + SUPER_RESOLUTION) == list(INTERPOLATION)
