"""demo/demo.py draws one image per input and counts unreadable inputs without stopping."""
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from conftest import shared_path

REPO = Path(__file__).resolve().parents[1]
TOY_CONFIG = "configs/baselines/mask_rcnn_R18_FPN_toy.yaml"


def run_demo(*args):
    return subprocess.run([sys.executable, "demo/demo.py", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)


def test_demo_writes_one_image_per_input_and_counts_failures(toy_root, tmp_path):
    images = sorted(Path(toy_root, "val", "images").glob("*.png"))[:2]
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"not an image")
    out = tmp_path / "vis"
    r = run_demo("--config-file", TOY_CONFIG, "--input", *images, corrupt, tmp_path / "missing.png",
                 "--output", out, "--confidence-threshold", "0.0")
    assert r.returncode == 2, r.stderr  # the exit status is the number of failed images
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted(p.stem + ".png" for p in images)
    for p in images:
        assert Image.open(out / (p.stem + ".png")).size == Image.open(p).size
    log = r.stdout + r.stderr
    assert "corrupt.jpg: cannot read image" in log and "missing.png: cannot read image" in log
    assert "2 image(s) drawn" in log and "2 failed" in log


def test_demo_folder_input_to_folder(toy_root, tmp_path):
    folder = Path(toy_root, "val", "images")
    r = run_demo("--config-file", TOY_CONFIG, "--input", folder, "--output", tmp_path / "vis")
    assert r.returncode == 0, r.stderr
    assert len(list((tmp_path / "vis").glob("*.png"))) == len(list(folder.glob("*.png")))


def test_demo_bad_config_is_one_line(tmp_path):
    r = run_demo("--config-file", "configs/nope.yaml", "--input", "x.png", "--output", tmp_path)
    assert r.returncode == 2 and r.stderr.strip() == "error: config file not found: configs/nope.yaml"


@pytest.mark.parametrize("task", ["instance", "panoptic", "semantic"])
def test_demo_mask2former_each_task_on_coco_samples(task, tmp_path):
    """Random weights: the drawing path of every task, one output image per input."""
    samples = sorted(shared_path("data", "coco_val2017_samples").glob("*.jpg"))[:2]
    config = f"configs/mask2former/toy/maskformer2_R18_toy_{task}.yaml"
    out = tmp_path / task
    r = run_demo("--config-file", config, "--input", *samples, "--output", out,
                 "--opts", "INPUT.MIN_SIZE_TEST", 96, "INPUT.MAX_SIZE_TEST", 128)
    assert r.returncode == 0, r.stderr[-3000:]
    for p in samples:
        assert Image.open(out / (p.stem + ".png")).size == Image.open(p).size


@pytest.mark.parametrize(
    "config",
    ["configs/sotr/toy/SOTR_R18_toy.yaml", "configs/transfiner/toy/transfiner_R18_FPN_toy.yaml",
     "configs/cft/toy/cft_R18_toy.yaml"],
)
def test_demo_other_models_on_coco_samples(config, tmp_path):
    """Random weights: SOTR and Transfiner instances, CFT semantic maps, one image per input."""
    samples = sorted(shared_path("data", "coco_val2017_samples").glob("*.jpg"))[:2]
    out = tmp_path / "vis"
    r = run_demo("--config-file", config, "--input", *samples, "--output", out, "--confidence-threshold", "0.0",
                 "--opts", "INPUT.MIN_SIZE_TEST", 96, "INPUT.MAX_SIZE_TEST", 128)
    assert r.returncode == 0, r.stderr[-3000:]
    for p in samples:
        assert Image.open(out / (p.stem + ".png")).size == Image.open(p).size
    assert "2 image(s) drawn" in r.stdout + r.stderr
