"""tools/compare_transformers.py: both implementations run on the same input and the JSON holds the
ratio; without the transformers package the tool says how to install it (no timing asserted)."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_compare_writes_both_timings_and_ratio_or_explains_the_missing_package(tmp_path):
    out = tmp_path / "cmp.json"
    r = subprocess.run(
        [sys.executable, "tools/compare_transformers.py", "--threads", "1", "--input-size", "128", "192",
         "--runs", "1", "--warmup", "0", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )
    if importlib.util.find_spec("transformers") is None:
        assert r.returncode == 2 and "pip install transformers" in r.stderr
        return
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["input_size"] == [128, 192] and res["header"]["threads"] == 1
    for impl in ("ours", "transformers"):
        assert res[impl]["median_ms"] > 0 and res[impl]["peak_memory_mb"] > 0
    # the same configuration on both sides: parameter counts within 1 %
    assert abs(res["ours"]["parameters"] - res["transformers"]["parameters"]) < 0.01 * res["ours"]["parameters"]
    assert res["speedup"] == pytest.approx(res["transformers"]["median_ms"] / res["ours"]["median_ms"])
    assert "ratio transformers / ours" in r.stdout
