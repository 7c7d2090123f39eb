"""tools/analyze_model.py: manifests of a model built from a config, and their comparison."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOY_CONFIG = "configs/baselines/mask_rcnn_R18_FPN_toy.yaml"


def analyze(*args):
    return subprocess.run([sys.executable, "tools/analyze_model.py", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def r50_manifest(tmp_path_factory):
    from detectron2 import model_zoo

    out = tmp_path_factory.mktemp("manifest") / "m.json"
    config = model_zoo.get_config_file("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml")
    r = analyze("--config-file", config, "--tasks", "manifest", "--output", out)
    assert r.returncode == 0, r.stderr
    return config, out


def test_manifest_of_mask_rcnn(r50_manifest):
    import torch
    from detectron2.modeling import build_model

    from segcommon.engine import setup_cfg

    config, path = r50_manifest
    manifest = json.loads(path.read_text())
    model = build_model(setup_cfg(config, ["MODEL.DEVICE", "cpu"], check_datasets=False))
    assert manifest["num_params"] == sum(p.numel() for p in model.parameters())
    assert manifest["state_dict"] == {k: list(v.shape) for k, v in model.state_dict().items()}
    assert manifest["state_dict"]["backbone.bottom_up.stem.conv1.weight"] == [64, 3, 7, 7]
    assert isinstance(torch.Size(manifest["state_dict"]["roi_heads.mask_head.predictor.weight"]), torch.Size)


def test_compare_identical_manifest_passes(r50_manifest):
    config, path = r50_manifest
    r = analyze("--config-file", config, "--compare", path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "matches" in r.stdout


def test_compare_reports_every_difference(r50_manifest, tmp_path):
    config, path = r50_manifest
    manifest = json.loads(path.read_text())
    del manifest["state_dict"]["roi_heads.mask_head.predictor.bias"]
    manifest["state_dict"]["extra.key"] = [1]
    manifest["state_dict"]["roi_heads.box_predictor.cls_score.weight"] = [3, 1024]
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(manifest))
    r = analyze("--config-file", config, "--compare", broken)
    assert r.returncode == 1
    assert "unexpected key (in model, not in reference): roi_heads.mask_head.predictor.bias" in r.stdout
    assert "missing key (in reference, not in model): extra.key" in r.stdout
    assert "shape mismatch: roi_heads.box_predictor.cls_score.weight" in r.stdout


def test_parameter_and_flop_tasks():
    r = analyze("--config-file", TOY_CONFIG, "--tasks", "parameter,flop", "--input-size", 64, 96)
    assert r.returncode == 0, r.stderr
    assert "FLOPs at 64x96" in r.stdout + r.stderr
    assert "backbone" in r.stdout + r.stderr


def test_bad_config_is_one_line():
    r = analyze("--config-file", "configs/nope.yaml", "--tasks", "manifest")
    assert r.returncode == 2 and r.stderr.strip().startswith("error: config file not found")
