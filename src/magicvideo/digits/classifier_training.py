"""Train the digits classifier on real training digits and measure it on held-out test digits."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from magicvideo.digits.classifier import DigitClassifier, classify, prepare_clips
from magicvideo.digits.data import NATIVE_FPS, STRIDES, digit_clips
from magicvideo.loading import follow_umask

TEST_SEED = 1234


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Imitate imperfect generated videos: blur, contrast, background offset and noise."""
    b = x.shape[0]

    def rand(*shape):
        return torch.rand(*shape, generator=generator)

    sigma = rand(b) * 1.2
    blurred = []
    for clip, s in zip(x, sigma):
        if s < 0.3:
            blurred.append(clip)
            continue
        k = torch.arange(-3, 4, dtype=x.dtype)
        k = torch.exp(-(k**2) / (2 * s**2))
        k = k / k.sum()
        c = clip.reshape(-1, 1, *clip.shape[-2:])
        c = F.conv2d(F.pad(c, (3, 3, 0, 0), mode="replicate"), k.view(1, 1, 1, 7))
        c = F.conv2d(F.pad(c, (0, 0, 3, 3), mode="replicate"), k.view(1, 1, 7, 1))
        blurred.append(c.reshape(clip.shape))
    x = torch.stack(blurred)
    gain = 0.6 + 0.6 * rand(b, 1, 1, 1, 1)
    offset = 0.15 * rand(b, 1, 1, 1, 1)
    noise = 0.08 * rand(b, 1, 1, 1, 1) * torch.randn(x.shape, generator=generator)
    return (x * gain + offset * (1 - x) + noise).clamp(0, 1)


def jitter(theta: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Compose crop transforms (B, K, 2, 3) with a random rotation (+-12 deg), scale (0.9-1.1)
    and shift (+-1.5 px of a 32 px crop): handwriting variety beyond the 400 digits a class."""
    shape = theta.shape[:2]
    angle = (torch.rand(shape, generator=generator) * 2 - 1) * math.radians(12)
    scale = 0.9 + 0.2 * torch.rand(shape, generator=generator)
    shift = (torch.rand(*shape, 2, generator=generator) * 2 - 1) * (1.5 / 16)
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    rot = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # (B, K, 2, 2)
    linear = theta[..., :2]
    return torch.cat([linear @ rot, (linear @ shift[..., None]) + theta[..., 2:]], dim=-1)


def evaluate_classifier(model: DigitClassifier, clips: dict) -> dict:
    """Digit and direction accuracy overall and per fps on a :func:`digit_clips` batch."""
    digit, direction = classify(model, clips["frames"])
    result = {
        "clips": int(len(digit)),
        "digit_accuracy": float((digit == clips["digit"]).mean()),
        "direction_accuracy": float((direction == clips["direction"]).mean()),
        "per_fps": {},
    }
    for fps in sorted(set(clips["fps"].tolist())):
        m = clips["fps"] == fps
        result["per_fps"][f"{fps:g}"] = {
            "digit_accuracy": float((digit[m] == clips["digit"][m]).mean()),
            "direction_accuracy": float((direction[m] == clips["direction"][m]).mean()),
        }
    return result


def train_classifier(
    out: str | Path,
    steps: int = 2400,
    batch_size: int = 32,
    digit_samples: int = 2,
    pool_size: int = 8000,
    test_clips: int = 2000,
    lr: float = 2e-3,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Train on ``pool_size`` clips of training digits (all strides), save to ``out`` and return
    the metrics on ``test_clips`` clips of held-out test digits (also saved as metrics.json)."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    pool = digit_clips(pool_size, "train", seed=seed)
    frames = prepare_clips(pool["frames"])
    digits, directions = torch.from_numpy(pool["digit"]), torch.from_numpy(pool["direction"])
    model = DigitClassifier()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    warmup = max(1, steps // 20)

    def schedule(step):
        return min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / steps))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    model.train()
    bar = tqdm(range(steps), desc="classifier", disable=not progress)
    for _ in bar:
        idx = torch.randint(0, pool_size, (batch_size,), generator=generator)
        video = augment(frames[idx], generator)
        # the digit branch learns from digit_samples random frames per clip, each a jittered crop
        t = torch.randint(0, video.shape[2], (batch_size, digit_samples), generator=generator)
        picked = video[torch.arange(batch_size)[:, None], 0, t]  # (B, digit_samples, H, W)
        crops = model.crops(picked, jitter(model.crop_transforms(picked), generator))
        crops = crops.reshape(-1, 1, *crops.shape[-2:])  # every crop its own example
        loss = F.cross_entropy(model.digit_logits(crops), digits[idx].repeat_interleave(digit_samples))
        loss = loss + F.cross_entropy(model.direction_logits(video), directions[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    metrics = evaluate_classifier(model, digit_clips(test_clips, "test", seed=TEST_SEED))
    metrics.update(
        steps=steps, batch_size=batch_size, digit_samples=digit_samples, pool_size=pool_size, seed=seed,
        strides=list(STRIDES), fps=[NATIVE_FPS / s for s in STRIDES], test_seed=TEST_SEED,
    )
    out = Path(out)
    model.save_pretrained(str(out))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    follow_umask(out)
    return metrics
