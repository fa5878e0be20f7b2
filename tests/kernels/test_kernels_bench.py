"""bench/gpu_kernels.py --dry-run: the GPU benchmark's code path, on CPU under Triton's interpreter at tiny sizes."""
import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "gpu_kernels.py"


def test_dry_run_writes_every_case(tmp_path):
    output = tmp_path / "kernels.json"
    environment = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # the script must set it itself
    done = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", str(output)], capture_output=True, text=True,
                          env=environment, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(output.read_text())
    assert report["environment"]["dry_run"] and not report["skipped"]
    assert {(c["kind"], c["dtype"]) for c in report["structured"]} == {("monarch", "float16"), ("btt", "float16")}
    assert len(report["contractions"]) == 5
    for case in report["structured"]:
        assert "error" not in case and case["fused_ms"] > 0 and case["max_rel_error_fused_vs_bmm"] < 1e-2
    for case in report["contractions"]:
        assert "error" not in case and case["contract_pair_ms"] > 0 and case["max_rel_error"] < 1e-2
    assert report["goal"]["cases"] == 0  # the goal is measured at width 4096 on a GPU only


def test_without_a_gpu_it_says_so(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "x.json")], capture_output=True, text=True,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}, timeout=120)
    assert done.returncode != 0 and "needs a CUDA GPU" in done.stderr
