import numpy as np
import pytest

from magicvideo.video_io import contact_sheet, read_video, write_video


def gradient_clip(frames=9, height=32, width=48):
    y, x = np.mgrid[0:height, 0:width]
    clip = [np.stack([(x * 5 + 10 * i) % 256, y * 7 % 256, np.full_like(x, 128)], -1) for i in range(frames)]
    return np.stack(clip).astype(np.uint8)


def test_mp4_round_trip_keeps_count_size_rate_and_content(tmp_path):
    clip = gradient_clip()
    write_video(tmp_path / "a.mp4", clip, fps=12, crf=0)
    frames, fps = read_video(tmp_path / "a.mp4")
    assert frames.shape == clip.shape and fps == pytest.approx(12)
    assert np.abs(frames.astype(int) - clip).mean() < 3  # yuv420 chroma subsampling, lossless luma


def test_gif_round_trip_and_float_frames(tmp_path):
    clip = np.zeros((4, 16, 16, 3), np.float32)
    for i in range(4):
        clip[i, 4:12, 2 + i : 10 + i] = 1.0
    write_video(tmp_path / "a.gif", clip, fps=10)
    frames, _ = read_video(tmp_path / "a.gif")
    assert frames.shape == (4, 16, 16, 3)
    assert np.array_equal(frames, (clip * 255).astype(np.uint8))


def test_bad_output_is_refused(tmp_path):
    with pytest.raises(ValueError, match="even"):
        write_video(tmp_path / "a.mp4", gradient_clip(height=31), fps=8)
    with pytest.raises(ValueError, match=".avi"):
        write_video(tmp_path / "a.avi", gradient_clip(), fps=8)
    with pytest.raises(ValueError, match="shape"):
        write_video(tmp_path / "a.mp4", np.zeros((4, 16, 16)), fps=8)


def test_contact_sheet_places_every_frame_and_takes_uint8_or_float_clips():
    """Row i, column j of the sheet is frame j of clip i, on a white grid; uint8 clips (what read_video
    returns) give the same sheet as the same clips as floats in [0, 1]."""
    first, second = gradient_clip(frames=3, height=8, width=6), gradient_clip(frames=4, height=8, width=6)[::-1]
    sheet = contact_sheet([first, second], gap=2)
    assert sheet.dtype == np.uint8 and sheet.shape == (2 * 8 + 2, 3 * 6 + 2 * 2, 3)  # the shorter row sets the count
    for i, clip in enumerate((first, second)):
        for j in range(3):
            np.testing.assert_array_equal(sheet[i * 10 : i * 10 + 8, j * 8 : j * 8 + 6], clip[j])
    assert (sheet[8:10] == 255).all() and (sheet[:, 6:8] == 255).all()
    np.testing.assert_array_equal(contact_sheet([first / 255.0, second / 255.0], gap=2), sheet)


def test_the_same_frames_always_give_the_same_file(tmp_path):
    """An mp4 depends only on its frames: 64 writes of one clip (C-ordered, as reversed and channel-first
    views of other arrays, as floats), half of them from 4 threads at once, decode to the same frames
    and are the same bytes. Without X264_OPTIONS, 15 of 60 such writes differed on a CPU with AVX-512
    (x264's macroblock-tree rate control)."""
    import hashlib
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:64, 0:64]
    clip = np.stack([np.stack([(x * 5 + 10 * i) % 256, (y * 7 + 3 * i) % 256, (x * y + i) % 256], -1) for i in range(16)])
    clip = np.clip(clip + rng.normal(0, 13, clip.shape), 0, 255).round().astype(np.uint8)
    views = [clip, np.ascontiguousarray(clip[::-1])[::-1], np.ascontiguousarray(clip.transpose(0, 3, 1, 2)).transpose(0, 2, 3, 1),
             clip.astype(np.float32) / 255]
    assert not views[1].flags.c_contiguous and not views[2].flags.c_contiguous

    def write(i: int) -> tuple[str, str]:
        path = write_video(tmp_path / f"clip-{i % 4}.mp4", views[i % len(views)], fps=8)
        return hashlib.sha256(path.read_bytes()).hexdigest(), hashlib.sha256(read_video(path)[0].tobytes()).hexdigest()

    results = [write(i) for i in range(32)]
    with ThreadPoolExecutor(4) as pool:
        results += list(pool.map(write, range(32)))
    assert len(set(results)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"clip-{i}.mp4" for i in range(4)]  # no temporary file left


def test_an_interrupted_write_leaves_the_existing_file_untouched(tmp_path):
    """write_video writes under a temporary name and renames when complete: while a long write is under
    way, and after it is interrupted (SIGINT) or killed (SIGKILL), `path` holds the old clip; an
    interrupted write removes its temporary file."""
    import signal
    import subprocess
    import sys
    import time

    out = write_video(tmp_path / "out.mp4", gradient_clip(), fps=8)
    before = out.read_bytes()
    code = ("import sys, numpy as np; from magicvideo.video_io import write_video; "
            "write_video(sys.argv[1], np.random.default_rng(0).integers(0, 256, (2000, 128, 128, 3), dtype=np.uint8))")
    for sig in (signal.SIGINT, signal.SIGKILL):
        # SIGINT at its default (a shell's background job starts with it ignored, and Python then never
        # raises KeyboardInterrupt)
        process = subprocess.Popen([sys.executable, "-c", code, str(out)], stderr=subprocess.PIPE, text=True,
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        while not [p for p in tmp_path.iterdir() if p.suffix == ".tmp" and p.stat().st_size > 0]:
            assert process.poll() is None, process.communicate()[1][-2000:]
            time.sleep(0.01)
        assert out.read_bytes() == before
        process.send_signal(sig)
        stderr = process.communicate(timeout=60)[1]
        assert process.returncode != 0, "the write ended before it was interrupted"
        assert out.read_bytes() == before
        if sig == signal.SIGINT:
            assert "KeyboardInterrupt" in stderr and sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]
    assert read_video(out)[0].shape == gradient_clip().shape
