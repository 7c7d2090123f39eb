"""tools/benchmark.py runs end to end and writes the fields its JSON promises (no timing asserted)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def bench(*args):
    r = subprocess.run([sys.executable, "tools/benchmark.py", *map(str, args)], cwd=REPO,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.mark.slow
@pytest.mark.parametrize(
    "config",
    ["configs/mask2former/toy/maskformer2_R18_toy_instance.yaml", "configs/baselines/mask_rcnn_R18_FPN_toy.yaml"],
)
def test_model_mode_writes_inference_train_params_and_flops(config, tmp_path):
    out = tmp_path / "b.json"
    r = bench("--config-file", config, "--train", "--threads", 1, "--runs", 1, "--warmup", 0,
              "--batch-size", 1, "--input-size", 64, 96, "--json", out, "INPUT.IMAGE_SIZE", 64,
              "INPUT.MIN_SIZE_TRAIN", "(64,)")
    res = json.loads(out.read_text())
    assert res["header"]["threads"] == 1 and res["header"]["device"] == "cpu"
    assert res["test_size"] == [64, 96]
    assert res["parameters"] > 1e6 and res["gflops"] > 0
    for part in ("inference", "train"):
        assert res[part]["median_ms"] > 0 and res[part]["peak_memory_mb"] > 0
    assert res["train"]["batch_size"] == 1
    first = res["train"]["first_step"]
    assert first["grad_norm"] > 0 and all(v == v for v in first["losses"].values())  # finite, not NaN
    assert "images/s" in r.stdout and "train step" in r.stdout


def import_benchmark():
    sys.path.insert(0, str(REPO / "tools"))
    try:
        import benchmark
    finally:
        sys.path.pop(0)
    return benchmark


def test_op_mode_reports_reference_and_fast_path_fields(tmp_path, monkeypatch):
    benchmark = import_benchmark()
    # one small case keeps the test quick; the real shapes are the script's default
    monkeypatch.setattr(benchmark, "MSDEFORM_CASES", [("small", [(8, 8), (4, 4)], 10)])
    out = tmp_path / "op.json"
    assert benchmark.main(["--op", "msdeform", "--backward", "--runs", "1", "--warmup", "0", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    (case,) = res["cases"]
    assert res["backward"] is True and case["reference_ms"] > 0
    assert set(case) >= {"fast_ms", "speedup", "max_abs_diff"}
    if res["fast_path"]:
        assert case["max_abs_diff"] < 1e-4


def test_roialign_op_mode_compares_torchvision_and_project_kernels(tmp_path, monkeypatch):
    benchmark = import_benchmark()
    small = benchmark._roialign_inputs
    monkeypatch.setattr(benchmark, "ROIALIGN_CASES", [("small", 14, 6)])
    monkeypatch.setattr(benchmark, "_roialign_inputs", lambda rois: small(rois, image=(96, 128), channels=8))
    out = tmp_path / "op.json"
    assert benchmark.main(["--op", "roialign", "--backward", "--runs", "1", "--warmup", "0", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    (case,) = res["cases"]
    assert res["op"] == "roialign" and res["backward"] is True and case["reference_ms"] > 0
    if res["fast_path"]:
        assert case["max_abs_diff"] == 0.0  # bitwise equal, forward and backward
        assert case["speedup"] > 0
