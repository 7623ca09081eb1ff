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
