"""tools/deploy/export_model.py and run_onnx.py end to end on the toy CFT config (the fastest export),
and on the toy Mask R-CNN (the fastest R-CNN export, whose graph also takes the image size)."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import REPO

pytest.importorskip("onnxruntime", reason="needs the deploy extra: pip install -e '.[deploy]'")
pytest.importorskip("onnxscript", reason="needs the deploy extra: pip install -e '.[deploy]'")

CONFIG = "configs/cft/toy/cft_R18_toy.yaml"
RCNN_CONFIG = "configs/baselines/mask_rcnn_R18_FPN_toy.yaml"


def _run(script, *args):
    env = dict(os.environ, OMP_NUM_THREADS="2")
    return subprocess.run([sys.executable, f"tools/deploy/{script}", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_export_then_run_and_compare(tmp_path):
    out = tmp_path / "export"
    r = _run("export_model.py", "--config-file", CONFIG, "--output", out)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (out / "model.onnx").is_file() and (out / "model_init.pth").is_file()

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.RandomState(0)
    for name, size in [("a.png", (90, 120)), ("b.png", (130, 100))]:
        Image.fromarray(rng.randint(0, 256, (*size, 3)).astype(np.uint8)).save(images / name)
    (images / "broken.png").write_bytes(b"not an image")

    vis = tmp_path / "vis"
    r = _run("run_onnx.py", "--config-file", CONFIG, "--model", out / "model.onnx", "--input", images,
             "--output", vis, "--compare", "--perturb", "1e-6", "--opts", "MODEL.WEIGHTS", out / "model_init.pth")
    assert r.returncode == 1, r.stderr[-3000:]  # one unreadable image, reported and counted
    log = r.stdout + r.stderr
    assert "broken.png: cannot read image" in log
    # Random weights (export_model.py draws new ones each run): a near-tied pixel may flip.
    agreements = [float(a) for a in re.findall(r"final masks agree on ([0-9.]+)% of pixels", log)]
    assert len(agreements) == 2 and min(agreements) >= 99.5, agreements
    assert log.count("PyTorch moved by input noise 1e-06: sem_seg_logits") == 2
    assert "2 image(s): onnxruntime mean" in log
    assert sorted(os.listdir(vis)) == ["a.png", "b.png"]
    assert Image.open(vis / "a.png").size == (120, 90)


def test_run_onnx_refuses_compare_without_weights_and_missing_model(tmp_path):
    r = _run("run_onnx.py", "--config-file", CONFIG, "--model", tmp_path / "none.onnx", "--input", tmp_path,
             "--compare")
    assert r.returncode == 2 and "--compare needs MODEL.WEIGHTS" in r.stderr
    r = _run("run_onnx.py", "--config-file", CONFIG, "--model", tmp_path / "none.onnx", "--input", tmp_path)
    assert r.returncode == 2 and "ONNX model not found" in r.stderr


@pytest.mark.slow
def test_export_then_run_a_detector(tmp_path):
    out = tmp_path / "export"
    r = _run("export_model.py", "--config-file", RCNN_CONFIG, "--output", out)
    assert r.returncode == 0, r.stderr[-3000:]
    image = tmp_path / "a.png"
    Image.fromarray(np.random.RandomState(0).randint(0, 256, (100, 140, 3)).astype(np.uint8)).save(image)
    r = _run("run_onnx.py", "--config-file", RCNN_CONFIG, "--model", out / "model.onnx", "--input", image,
             "--output", tmp_path / "vis.png", "--compare", "--opts", "MODEL.WEIGHTS", out / "model_init.pth")
    assert r.returncode == 0, r.stderr[-3000:]
    log = r.stdout + r.stderr
    diffs = {m[0]: float(m[1]) for m in re.findall(r"(boxes|scores|classes|masks) ([0-9.e+-]+) \(max", log)}
    assert sorted(diffs) == ["boxes", "classes", "masks", "scores"] and max(diffs.values()) <= 1e-3, log[-2000:]
    agreement = float(re.search(r"final masks agree on ([0-9.]+)% of pixels", log).group(1))
    assert agreement >= 99.5
    assert Image.open(tmp_path / "vis.png").size == (140, 100)


def test_export_model_reports_a_bad_config(tmp_path):
    r = _run("export_model.py", "--config-file", tmp_path / "missing.yaml", "--output", tmp_path)
    assert r.returncode == 2 and "config file not found" in r.stderr
