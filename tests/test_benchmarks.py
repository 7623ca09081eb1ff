"""The GPU benchmark runs on the CPU with a flag (its test): both U-Nets, every figure present."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"


def test_gpu_benchmark_runs_on_cpu():
    result = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--widths", "tiny", "--dtype", "fp32",
                             "--frames", "4", "--size", "8", "--steps", "2", "--repeats", "1", "--json"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [r["model"] for r in rows] == ["MagicVideoUNet3D", "UNet3DConditionModel"]
    for r in rows:
        assert r["step_s"] > 0 and r["peak_gib"] > 0 and r["generation_2_steps_s"] > 0
    assert "time ratio" in result.stdout
