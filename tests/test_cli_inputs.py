"""Bad input through the command line (#44): sizes beyond the stated limit, devices that are not
there, values given and not used, one keyframe. Each is refused before any work with exit code 2 and
one line naming the flag (or the file), and an existing output file is left as it was, also when a
run is interrupted after its work has started."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from magicvideo.cli import main
from magicvideo.video_io import read_video, write_video

SRC = str(Path(__file__).resolve().parents[1] / "src")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": SRC}
NO_DEVICE = "cuda:99"  # a device no test machine has


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Clips (small: 4 frames of 64x64; big: 1024x1024 frames, 256x the bundled models' 64x64;
    long: 100 frames, 298 once interpolated x3, 18.6x the 16 frames of the interpolation window), an
    existing output clip, a keyframe model without a VideoVAE, a prompts file and a captions folder."""
    from conftest import make_tiny_pipeline

    root = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    write_video(root / "small.mp4", rng.integers(0, 256, (4, 64, 64, 3), dtype=np.uint8), fps=8)
    write_video(root / "big.mp4", rng.integers(0, 256, (2, 1024, 1024, 3), dtype=np.uint8), fps=8)
    write_video(root / "long.mp4", np.zeros((100, 64, 64, 3), np.uint8), fps=8)
    write_video(root / "existing.mp4", rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8), fps=8)
    make_tiny_pipeline().save_pretrained(root / "image-vae-model")
    (root / "prompts.txt").write_text("the digit 1 moves up\n")
    (root / "captions.csv").write_text("path,caption\nsmall.mp4,the digit 1 moves up\n")
    (root / "config.yaml").write_text("model: {}\n")
    return root


def refused(capsys, argv: list[str], *expected: str, out: Path | None = None) -> str:
    """Run the command in this process: exit code 2, one error line holding `expected`, `out` untouched."""
    before = out.read_bytes() if out is not None else None
    assert main(argv) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"magicvideo {argv[0]}: error: "), lines
    for text in expected:
        assert text in lines[0], lines[0]
    if out is not None:
        assert out.read_bytes() == before
        assert sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")) == []
    return lines[0]


# (command line with {f} for the fixture folder, what the one error line must hold)
WITH_OUTPUT = [
    # sizes beyond the stated limit: the estimate in the message
    ('generate "the digit 3 moves up" --width 100000 --steps 2 --keyframes-only',
     ("--width: frames of 100000x64 (12500x8 latents) are 1,562.5x the area of the 64x64 frames", "limit is 16x",
      "--allow-large")),
    ('generate "x" --height 2048 --keyframes-only', ("--height: frames of 64x2048", "limit is 16x")),
    ("interpolate {f}/big.mp4", ("IN: frames of 1024x1024 are 256.0x the area", "--allow-large")),
    ("interpolate {f}/long.mp4", ("IN: 298 frames of 64x64, taken in one batch, are 18.6x the 16 frames",)),
    ("upscale {f}/big.mp4", ("IN: frames of 1024x1024 are 256.0x the area", "--allow-large")),
    ("autoencode {f}/big.mp4", ("big.mp4: frames of 1024x1024 are 256.0x the area", "--allow-large")),
    # devices that are not there, and a typo
    (f'generate "x" --device {NO_DEVICE}', (f"--device: '{NO_DEVICE}' is not available on this machine; available here: cpu",)),
    ('generate "x" --device cdua', ("--device: 'cdua' is not a device name; available here: cpu",)),
    (f"interpolate {{f}}/small.mp4 --device {NO_DEVICE}", ("--device:", "available here: cpu")),
    (f"upscale {{f}}/small.mp4 --device {NO_DEVICE}", ("--device:", "available here: cpu")),
    (f"autoencode {{f}}/small.mp4 --device {NO_DEVICE}", ("--device:", "available here: cpu")),
    # values given and not used
    ("interpolate {f}/small.mp4 --fps 0", ("--fps: must be > 0, got 0",)),
    ("interpolate {f}/small.mp4 --guidance 3", ("--guidance: not used without --prompt",)),
    ("upscale {f}/small.mp4 --fps 0", ("--fps: must be > 0",)),
    ("upscale {f}/small.mp4 --prompt hello", ("--prompt: not used: only Stable Diffusion x4 upscaler models",)),
    ('generate "x" --format gif', ("--format: only used with --prompts-file",)),
    ('generate "x" --out-dir {f}/clips', ("--out-dir: only used with --prompts-file",)),
    ('generate "x" --keyframes-only --interpolation-steps 3', ("--interpolation-steps: not used: no interpolation",)),
    ('generate "x" --keyframes-only --upscale-steps 2', ("--upscale-steps: not used without --upscale",)),
    ('generate "x" --keyframes-only --noise-level 5', ("--noise-level: not used without --upscale",)),
    ('generate "x" --negative blurry --guidance 1', ("--negative: not used: --guidance 1 (<= 1) turns guidance off",)),
    ('generate "x" --model {f}/image-vae-model --decoder video', ("--decoder: this model's VAE has no temporal decoder",)),
    # one keyframe with interpolation asked for explicitly: the flag the user typed
    ('generate "x" --frames 1 --interpolate 3', ("--frames: 1 keyframe: interpolation needs at least 2",)),
]


@pytest.mark.parametrize("command,expected", WITH_OUTPUT, ids=[c for c, _ in WITH_OUTPUT])
def test_bad_input_is_refused_and_the_output_file_kept(capsys, files, tmp_path, command, expected):
    import shlex

    out = tmp_path / "out.mp4"
    out.write_bytes((files / "existing.mp4").read_bytes())
    refused(capsys, [*shlex.split(command.format(f=files)), "--out", str(out)], *expected, out=out)


WITHOUT_OUTPUT = [
    ("generate --prompts-file {f}/prompts.txt --out {f}/x.mp4", ("--out: not used with --prompts-file",)),
    ("digits eval --videos {f} --steps 3", ("--steps: not used with --videos",)),
    ("eval-digits --videos {f} --fps 8", ("--fps: not used with --videos",)),
    ("eval-digits --real --lora {f}/zoom", ("--lora: not used with --real",)),
    ("digits eval --real --decoder image", ("--decoder: not used with --real",)),
    ("digits eval --model {f}/image-vae-model --decoder video --limit 1", ("--decoder video: this model's VAE has no",)),
    (f"digits eval --model {{f}}/image-vae-model --device {NO_DEVICE}", ("--device:", "available here: cpu")),
    ("eval clipsim --prompts {f}/captions.csv --videos {f} --clip {f}", ("--videos: not used: a CSV --prompts",)),
    (f"eval protocol --prompts {{f}}/prompts.txt --out-dir {{f}}/p --real {{f}} --device {NO_DEVICE}",
     ("--device:", "available here: cpu")),
    ("train {f}/config.yaml --export {f}/exported --resume", ("--resume: not used with --export",)),
    ("train {f}/config.yaml --export {f}/exported --max-steps 3", ("--max-steps: not used with --export",)),
    (f"demo --device {NO_DEVICE}", ("--device:", "available here: cpu")),
    ("init-from-sd {f} {f}/sd-out --extract-ema", ("--extract-ema: only used with a single-file SRC",)),
]


@pytest.mark.parametrize("command,expected", WITHOUT_OUTPUT, ids=[c for c, _ in WITHOUT_OUTPUT])
def test_bad_input_is_refused(capsys, files, command, expected):
    import shlex

    refused(capsys, shlex.split(command.format(f=files)), *expected)
    assert not (files / "x.mp4").exists() and not (files / "exported").exists()


def test_one_keyframe_skips_interpolation_and_says_so(capsys, tmp_path):
    """--frames 1 with the bundled cascade: the one keyframe is generated and decoded, the interpolation
    stage (which needs two) is skipped with a note naming --frames."""
    out = tmp_path / "one.mp4"
    assert main(["generate", "the digit 3 moves up", "--frames", "1", "--steps", "2", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "note: --frames 1: one keyframe, nothing to interpolate between; the interpolation stage is skipped" in err
    frames, fps = read_video(out)
    assert frames.shape == (1, 64, 64, 3) and fps == pytest.approx(8)


def interrupt(argv: list[str], started, out: Path) -> str:
    """Start `magicvideo ARGV`, send SIGINT once `started(stderr so far)` holds, and return its stderr;
    it must end with exit code 130 and "interrupted", no traceback, `out` as it was, no temporary file."""
    before = out.read_bytes()
    # SIGINT at its default: a shell's background job starts with it ignored, and Python then never raises
    # KeyboardInterrupt (what a user's Ctrl-C in a terminal sends is what is tested)
    process = subprocess.Popen([sys.executable, "-m", "magicvideo", *argv], env=ENV, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: process.stderr.read1(4096), b"")), daemon=True)
    reader.start()
    deadline = time.monotonic() + 600
    while not started(b"".join(chunks).decode(errors="replace")):
        assert process.poll() is None, b"".join(chunks).decode(errors="replace")[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.005)
    process.send_signal(signal.SIGINT)
    process.wait(timeout=120)
    reader.join(timeout=10)
    err = b"".join(chunks).decode(errors="replace")
    assert process.returncode == 130 and f"magicvideo {argv[0]}: interrupted" in err, err[-2000:]
    assert "Traceback" not in err
    assert out.read_bytes() == before
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")] == []
    return err


def denoising(err: str) -> bool:
    """A progress bar has counted a denoising step (tqdm redraws at most every 0.1 s, so on a fast machine the
    first count it prints may be 2 or more, never necessarily 1)."""
    return re.search(r"\| +[1-9]\d*/(200|300) \[", err) is not None


def test_an_interrupted_run_leaves_the_existing_output_file(files, tmp_path):
    """SIGINT while generate, interpolate and upscale denoise, and while autoencode writes its clip
    (a hidden temporary file beside --out exists): the existing --out is untouched."""
    from _train_utils import make_tiny_vae

    out = tmp_path / "out.mp4"
    out.write_bytes((files / "existing.mp4").read_bytes())
    interrupt(["generate", "the digit 3 moves up", "--keyframes-only", "--steps", "300", "--out", str(out)],
              denoising, out)
    interrupt(["interpolate", str(files / "small.mp4"), "--steps", "300", "--out", str(out)], denoising, out)
    interrupt(["upscale", str(files / "small.mp4"), "--steps", "200", "--out", str(out)], denoising, out)

    noise = np.random.default_rng(0).integers(0, 256, (600, 64, 64, 3), dtype=np.uint8)  # about a second to encode
    long = write_video(tmp_path / "long.mp4", noise, fps=8)
    vae = make_tiny_vae(tmp_path / "tiny-vae")

    def writing(_: str) -> bool:
        return any(p.name.startswith(".out.mp4.") and p.stat().st_size > 0 for p in tmp_path.iterdir())

    interrupt(["autoencode", str(long), "--model", str(vae), "--chunk-size", "64", "--out", str(out)], writing, out)
