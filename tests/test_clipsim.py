"""CLIPSIM on a tiny randomly initialised CLIP saved to a temp folder."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from _eval_utils import random_clip, save_tiny_clip, write_mp4
from magicvideo.evaluation.clipsim import clipsim, frame_similarities, load_clip, pair_prompts
from magicvideo.evaluation.videos import EvaluationError, VideoItem, read_frames


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return load_clip(save_tiny_clip(tmp_path_factory.mktemp("clip")))


def test_equals_cosine_of_the_model_embeddings(clip):
    model, processor = clip
    frames = random_clip(0, frames=5, size=(40, 48))
    pixels = processor.image_processor(images=list(frames), return_tensors="pt")["pixel_values"]
    ids = processor.tokenizer(["a cat"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        image = model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)
        text = model.text_projection(model.text_model(input_ids=ids).pooler_output)
    by_hand = F.cosine_similarity(image, text).numpy()
    np.testing.assert_allclose(frame_similarities(model, processor, frames, "a cat", batch_size=2),
                               by_hand, atol=1e-6)  # fmt: skip


def test_score_is_mean_over_frames_then_videos_and_order_free(clip, tmp_path):
    model, processor = clip
    a, b = random_clip(1), random_clip(2)
    paths = {name: write_mp4(tmp_path / f"{name}.mp4", frames) for name, frames in
             {"a": a, "b": b, "ab": np.concatenate([a[:8], b[:8]]),
              "ba": np.concatenate([b[:8], a[:8]])}.items()}  # fmt: skip
    per_frame = {n: frame_similarities(model, processor, read_frames(p), "dog")
                 for n, p in paths.items()}  # fmt: skip
    result = clipsim(model, processor, [VideoItem(paths[n], "dog") for n in ("a", "ab", "ba")])
    assert result["num_videos"] == 3
    assert result["per_video"][0] == pytest.approx(per_frame["a"].mean(), abs=1e-9)
    assert result["per_video"][1] == pytest.approx(result["per_video"][2], abs=1e-6)
    assert result["clipsim"] == pytest.approx(np.mean(result["per_video"]), abs=1e-12)
    # a different prompt changes the score
    other = clipsim(model, processor, [VideoItem(paths["a"], "a cat")])
    assert other["clipsim"] != pytest.approx(result["per_video"][0], abs=1e-6)


def test_prompt_pairing(tmp_path):
    for i in range(2):
        write_mp4(tmp_path / f"{i}.mp4", random_clip(i, frames=2))
    (tmp_path / "p.txt").write_text("a cat\n\ndog\n")
    items = pair_prompts(tmp_path, tmp_path / "p.txt")
    assert [(i.path.name, i.caption) for i in items] == [("0.mp4", "a cat"), ("1.mp4", "dog")]
    (tmp_path / "p.txt").write_text("a cat\n")
    with pytest.raises(EvaluationError, match="1 prompts but"):
        pair_prompts(tmp_path, tmp_path / "p.txt")
    (tmp_path / "m.csv").write_text("1.mp4,dog\n")
    assert [(i.path.name, i.caption) for i in pair_prompts(None, tmp_path / "m.csv")] == [
        ("1.mp4", "dog")
    ]
