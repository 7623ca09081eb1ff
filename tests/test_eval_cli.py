"""`magicvideo eval fvd|clipsim`: JSON output and one-line errors for bad input."""

import json

import numpy as np
import pytest

from _eval_utils import random_clip, save_tiny_clip, write_mp4
from magicvideo.cli import main


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    for name, seeds in {"real": (0, 1), "fake": (5, 6)}.items():
        (root / name).mkdir()
        for s in seeds:
            write_mp4(root / name / f"{s}.mp4", random_clip(s))
    (root / "empty").mkdir()
    (root / "short").mkdir()
    write_mp4(root / "short" / "s.mp4", random_clip(0, frames=8))
    return root


def test_fvd_json(folders, tmp_path, capsys):
    argv = ["eval", "fvd", "--real", str(folders / "real"), "--fake", str(folders / "fake"),
            "--json", "--cache", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["num_real"] == 2 and out["num_fake"] == 2 and out["fvd"] > 0
    assert any("rank" in w for w in out["warnings"])
    assert main(argv) == 0  # second run reads the cache
    assert json.loads(capsys.readouterr().out)["fvd"] == pytest.approx(out["fvd"], rel=1e-12)


@pytest.mark.parametrize("fake, message", [("empty", "no videos"), ("short", "8 frames"),
                                           ("nowhere", "neither a folder")])  # fmt: skip
def test_fvd_bad_input_is_a_user_error(folders, capsys, fake, message):
    argv = ["eval", "fvd", "--real", str(folders / fake), "--fake", str(folders / "fake")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    last = err.strip().split("\n")[-1]  # after the progress bar, if any
    assert last.startswith("magicvideo eval: error:") and message in last
    assert "Traceback" not in err


def test_clipsim_json(folders, tmp_path, capsys):
    clip = save_tiny_clip(tmp_path / "clip")
    (tmp_path / "prompts.txt").write_text("a cat\ndog\n")
    argv = ["eval", "clipsim", "--videos", str(folders / "fake"), "--prompts",
            str(tmp_path / "prompts.txt"), "--clip", str(clip), "--json"]  # fmt: skip
    capsys.readouterr()
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["num_videos"] == 2 and -1 <= out["clipsim"] <= 1
    assert out["clipsim"] == pytest.approx(np.mean(out["per_video"]))
    assert main(argv[:-3] + ["--clip", str(tmp_path), "--json"]) == 2
    assert "not a saved CLIP model" in capsys.readouterr().err
