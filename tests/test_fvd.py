"""FVD: TF-style preprocessing, the Fréchet distance, caching and bad input."""

import warnings

import numpy as np
import pytest
import scipy.linalg
import torch

from _eval_utils import random_clip, write_mp4
from magicvideo.evaluation import fvd
from magicvideo.evaluation.fvd import (
    FewSamplesWarning,
    compute_fvd,
    feature_statistics,
    frechet_distance,
    preprocess,
    tf_resize_matrix,
)
from magicvideo.evaluation.i3d import I3D
from magicvideo.evaluation.videos import EvaluationError, list_videos, read_frames


def test_tf1_bilinear_known_answers():
    """Legacy TF sampling: output i reads input i * in/out, no half-pixel shift, edge clamped."""
    row = torch.tensor([10.0, 20.0, 30.0, 40.0])
    assert torch.equal(tf_resize_matrix(4, 2) @ row, torch.tensor([10.0, 30.0]))
    assert torch.allclose(tf_resize_matrix(4, 8) @ row,
                          torch.tensor([10, 15, 20, 25, 30, 35, 40, 40.0]))  # fmt: skip
    assert torch.allclose(tf_resize_matrix(4, 3) @ row, torch.tensor([10.0, 23.3333, 36.6667]))
    assert torch.equal(tf_resize_matrix(224, 224), torch.eye(224))


def test_preprocess_range_and_shape():
    clip = np.zeros((2, 16, 48, 64, 3), np.uint8)
    clip[..., 0], clip[..., 1] = 255, 51
    out = preprocess(clip)
    assert out.shape == (2, 16, 224, 224, 3)
    assert torch.allclose(out[..., 0], torch.tensor(1.0))
    assert torch.allclose(out[..., 2], torch.tensor(-1.0))
    assert torch.allclose(out[..., 1], torch.tensor(2 * 51 / 255 - 1))


def test_frechet_distance_closed_form_commuting():
    """Commuting covariances (same eigenvectors): FD = |dmu|^2 + sum (sqrt s1 - sqrt s2)^2."""
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(20, 20)))
    s1, s2 = rng.uniform(0.1, 3, 20), rng.uniform(0, 3, 20)
    s2[:5] = 0  # singular
    mu1, mu2 = rng.normal(size=20), rng.normal(size=20)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2)
    got = frechet_distance(mu1, (q * s1) @ q.T, mu2, (q * s2) @ q.T)
    assert got == pytest.approx(expected, rel=1e-7)  # sqrt of ~1e-16 round-off is ~1e-8
    assert frechet_distance(mu1, np.diag(s1), mu1, np.diag(s1)) == pytest.approx(0, abs=1e-9)


def test_frechet_distance_matches_sqrtm_on_full_covariances():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(500, 30)), rng.normal(size=(500, 30)) @ rng.normal(size=(30, 30))
    (mu1, c1), (mu2, c2) = feature_statistics(a), feature_statistics(b)
    sqrt = scipy.linalg.sqrtm(c1 @ c2).real
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(c1 + c2 - 2 * sqrt)
    assert frechet_distance(mu1, c1, mu2, c2) == pytest.approx(expected, rel=1e-8)
    assert frechet_distance(mu2, c2, mu1, c1) == pytest.approx(expected, rel=1e-8)


def test_few_samples_warn_and_too_few_fail():
    with pytest.warns(FewSamplesWarning, match="rank"):
        feature_statistics(np.random.default_rng(0).normal(size=(10, 400)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        feature_statistics(np.random.default_rng(0).normal(size=(401, 400)))
    with pytest.raises(EvaluationError, match="at least 2"):
        feature_statistics(np.zeros((1, 400)))


def test_bad_inputs(tmp_path):
    with pytest.raises(EvaluationError, match="no videos"):
        list_videos(tmp_path)
    short = write_mp4(tmp_path / "short.mp4", random_clip(0, frames=12))
    with pytest.raises(EvaluationError, match="12 frames.*at least 16"):
        fvd.read_clip(short)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    write_mp4(mixed / "a.mp4", random_clip(0, size=(32, 32)))
    write_mp4(mixed / "b.mp4", random_clip(1, size=(32, 48)))
    paths = [item.path for item in list_videos(mixed)]
    with pytest.raises(EvaluationError, match="one frame size"):
        fvd.extract_features(paths, i3d=None)  # refused before any I3D call
    with pytest.raises(EvaluationError, match="does not exist"):
        (tmp_path / "m.csv").write_text("path,caption\nmissing.mp4,a cat\n")
        list_videos(tmp_path / "m.csv")


@pytest.fixture(scope="module")
def video_sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("sets")
    (root / "real").mkdir(), (root / "fake").mkdir()
    for i in range(2):
        write_mp4(root / "real" / f"{i}.mp4", random_clip(i, frames=18))
        write_mp4(root / "fake" / f"{i}.mp4", random_clip(10 + i))
    (root / "real.csv").write_text(
        "path,caption,fps\n" + "".join(f"real/{i}.mp4,clip {i},8\n" for i in range(2))
    )
    return root


def test_compute_fvd_end_to_end(video_sets, tmp_path):
    """compute_fvd == the Fréchet distance of I3D(preprocess(first 16 decoded frames))."""
    torch.set_num_threads(1)
    i3d = I3D.from_pretrained()

    def features(folder):
        clips = np.stack([read_frames(p)[:16] for p in sorted(folder.glob("*.mp4"))])
        with torch.no_grad():
            return i3d(preprocess(clips)).double().numpy()

    real, fake = features(video_sets / "real"), features(video_sets / "fake")
    with pytest.warns(FewSamplesWarning):
        expected = frechet_distance(*feature_statistics(real), *feature_statistics(fake))
        result = compute_fvd(video_sets / "real.csv", video_sets / "fake", batch_size=2,
                             cache_dir=tmp_path)  # fmt: skip
    assert result["num_real"] == 2 and result["num_fake"] == 2
    assert result["fvd"] == pytest.approx(expected, rel=1e-4)
    assert expected > 1
    with pytest.warns(FewSamplesWarning):
        same = compute_fvd(video_sets / "real", video_sets / "real.csv", cache_dir=tmp_path)
    assert same["fvd"] == pytest.approx(0, abs=1e-3)


def test_cache_is_reused_and_keyed_by_files(video_sets, tmp_path, monkeypatch):
    paths = [item.path for item in list_videos(video_sets / "fake")]
    calls = []

    def fake_extract(paths, i3d, *args):
        calls.append(list(paths))
        return np.full((len(paths), 400), float(len(calls)))

    monkeypatch.setattr(fvd, "extract_features", fake_extract)
    first = fvd.cached_features(paths, None, tmp_path)
    again = fvd.cached_features(paths, None, tmp_path)
    assert len(calls) == 1 and np.array_equal(first, again)
    fvd.cached_features(paths[:1], None, tmp_path)
    assert len(calls) == 2 and len(list(tmp_path.glob("fvd-i3d-*.npz"))) == 2
