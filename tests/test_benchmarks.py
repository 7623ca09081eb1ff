"""The benchmarks run at tiny sizes on the CPU: every figure present and plausible."""

import json
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
UNET_STEP = BENCHMARKS / "unet_step.py"
TINY = ["--widths", "tiny", "--frames", "4", "--size", "8", "--threads", "1"]


def run(script: Path, *args: str, **kwargs) -> str:
    result = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=600, **kwargs)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_unet_step_guidance_batch_and_generation():
    """The GPU protocol (a guidance batch of 2, a whole generation) on the CPU: both U-Nets, every figure."""
    report = json.loads(run(UNET_STEP, *TINY, "--batch", "2", "--generation-steps", "2", "--repeats", "1",
                            "--no-memory", "--json").splitlines()[-1])
    assert report["batch"] == 2 and report["device"] == "cpu" and report["dtype"] == "fp32"
    assert list(report["models"]) == ["MagicVideoUNet3D", "diffusers UNet3DConditionModel"]
    for figures in report["models"].values():
        assert figures["median_s"] > 0 and figures["generation_s"] > 0


def test_unet_step_profile_splits_the_step_into_module_kinds():
    out = run(UNET_STEP, "--profile", *TINY)
    rows = {}
    for line in out.splitlines():
        parts = line.rsplit(maxsplit=2)
        if len(parts) == 3 and parts[2].endswith("%"):
            rows[parts[0].strip()] = float(parts[1])
    kinds = ["spatial transformer block", "res-block", "directed temporal attention", "frame-wise adaptors", "the rest"]
    for kind in kinds:
        assert any(name.startswith(kind) for name in rows), (kind, out)
    total = float(out.split("one step ")[1].split(" s")[0])
    assert all(seconds > 0 for seconds in rows.values())
    parts = [s for name, s in rows.items() if not name.startswith(("frame-wise", "the rest"))]
    assert sum(parts) <= total * 1.01  # the kinds do not overlap


def test_unet_step_benchmark_reports_matmul_fraction_and_memory():
    """benchmarks/unet_step.py at tiny widths: both U-Nets timed in one run, their achieved GFLOP/s a
    plausible fraction of the matmul rate measured in the same run, a per-model step peak, the ratio."""
    report = json.loads(run(UNET_STEP, *TINY, "--repeats", "2", "--json").splitlines()[-1])
    assert report["widths"] == [32, 32, 64, 64] and report["matmul_gflops"] > 0
    models = report["models"]
    assert list(models) == ["MagicVideoUNet3D", "diffusers UNet3DConditionModel"]
    for figures in models.values():
        assert figures["min_s"] <= figures["median_s"]
        assert 0 < figures["fraction_of_matmul"] < 1.5  # small convolutions run below the big matmul's rate
        assert abs(figures["gflop_per_s"] - figures["gflops"] / figures["min_s"]) < 1e-6 * figures["gflop_per_s"]
        assert figures["peak_mib"] > 0  # a step allocates activations above the weights
    ours, theirs = (figures["median_s"] for figures in models.values())
    assert report["time_ratio_ours_over_theirs"] == ours / theirs


def test_cpu_memory_benchmark_runs_the_whole_pipeline_per_setting():
    """benchmarks/cpu_memory.py at tiny widths: one fresh process per decode chunk size, each a whole
    generation of the requested shape, its peak resident set at or above the weights' resident set."""
    out = run(BENCHMARKS / "cpu_memory.py", "--widths", "tiny", "--frames", "4", "--size", "64", "--chunks", "4", "1",
              "--threads", "1", "--json")
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [r["chunk"] for r in rows] == [4, 1]
    for r in rows:
        assert r["weights_mib"] > 0 and r["peak_mib"] >= r["weights_mib"] and r["seconds"] > 0


def test_video_vae_decode_benchmark_compares_with_the_image_decoder():
    out = run(BENCHMARKS / "video_vae_decode.py", "--threads", "1", "--frames", "5", "--chunk", "2", "--repeats", "1",
              cwd=BENCHMARKS.parent)
    rows = [line.split() for line in out.splitlines() if line.endswith("x")]
    assert [r[:2] for r in rows] == [["5", "frames,"], ["16", "frames,"]]
    # the aligned VideoVAE runs the image decoder for its motion, and more
    assert all(float(r[-3]) > float(r[-2]) > 0 and float(r[-1][:-1]) > 1 for r in rows)



def test_causal_sampling_benchmark_counts_the_calls_of_every_sampler():
    out = run(BENCHMARKS / "causal_sampling.py", "--samplers", "16", "4", "4/1", "--steps", "2", "--repeats", "1",
              "--threads", "1", "--guidance", "1")
    rows = {line.split(":")[0].strip(): line for line in out.splitlines() if " s " in line}
    assert set(rows) == {"chunk 16", "chunk 4", "chunk 4 lag 1"}
    calls = {name: int(line.split("s ")[1].split()[0]) for name, line in rows.items()}
    assert calls == {"chunk 16": 2, "chunk 4": 8, "chunk 4 lag 1": 2 + 3}  # steps; x chunks; steps + lag x 3
    assert "1.00x the first" in rows["chunk 16"]


def test_latent_grid_benchmark_times_both_grids(tmp_path):
    """benchmarks/latent_grid.py on configs/tiny.yaml's U-Net: both grids timed, the baseline's ratios 1."""
    root = Path(__file__).resolve().parents[1]
    out = run(BENCHMARKS / "latent_grid.py", "--config", str(root / "configs" / "tiny.yaml"), "--grids", "4", "8",
              "--repeats", "1", "--threads", "1")
    report = json.loads(out)
    grids = report["grids"]
    assert set(grids) == {"4x4", "8x8"} and grids["4x4"]["train_step_ratio"] == grids["4x4"]["sample_call_ratio"] == 1
    assert all(g["train_step_s"] > 0 and g["sample_call_s"] > 0 for g in grids.values())
