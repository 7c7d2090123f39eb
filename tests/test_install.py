"""The installed stack: Detectron2 and the project's packages import and expose what we rely on."""
import importlib
import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize("name", ["detectron2", "segcommon", "mask2former", "sotr", "transfiner", "cft"])
def test_packages_import(name):
    importlib.import_module(name)


@pytest.mark.parametrize("name", ["add_maskformer2_config", "add_sotr_config", "add_transfiner_config", "add_cft_config"])
def test_model_packages_expose_config_functions(name):
    from segcommon.engine.defaults import MODEL_PACKAGES

    package = next(p for p, fn in MODEL_PACKAGES.items() if fn == name)
    assert callable(getattr(importlib.import_module(package), name))


def test_model_zoo_configs_are_packaged():
    from detectron2 import model_zoo

    path = model_zoo.get_config_file("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml")
    assert os.path.isfile(path)
    cfg = model_zoo.get_config("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml")
    assert cfg.MODEL.MASK_ON


def test_point_rend_project_importable():
    from detectron2.projects.point_rend.point_features import get_uncertain_point_coords_with_randomness, point_sample

    assert callable(point_sample) and callable(get_uncertain_point_coords_with_randomness)


def test_lsj_transforms_available():
    from detectron2.data.transforms import FixedSizeCrop, ResizeScale

    assert ResizeScale and FixedSizeCrop


def test_numpy_pillow_compat_patches():
    """The code paths that used np.bool / np.int / np.float and Image.LINEAR run."""
    import numpy as np
    from detectron2.data.transforms.transform import ExtentTransform
    from detectron2.structures.masks import polygons_to_bitmask

    mask = polygons_to_bitmask([np.array([0, 0, 4, 0, 4, 4, 0, 4], dtype=np.float64)], 8, 8)
    assert mask.dtype == bool and mask.sum() > 0
    t = ExtentTransform(src_rect=(0, 0, 8, 8), output_size=(4, 4))
    assert t.apply_image(np.zeros((8, 8, 3), np.uint8)).shape == (4, 4, 3)


def test_coco_evaluator_falls_back_to_pycocotools_and_says_so_once(tmp_path):
    from detectron2 import _C

    if not _C.__file__.endswith(".py"):
        pytest.skip("an official compiled detectron2 is installed: the fast COCOeval is available")
    json_file = tmp_path / "gt.json"
    json_file.write_text('{"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}]}')
    # A fresh interpreter: the message is logged once per process.
    code = f"""
from detectron2.data import MetadataCatalog
from detectron2.evaluation import COCOEvaluator
from detectron2.utils.logger import setup_logger
setup_logger()
MetadataCatalog.get("t").set(json_file={str(json_file)!r}, thing_classes=["a"])
evs = [COCOEvaluator("t", output_dir={str(tmp_path)!r}, use_fast_impl=True) for _ in range(2)]
assert not any(e._use_fast_impl for e in evs)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (r.stdout + r.stderr).count("evaluating with pycocotools") == 1


def test_detectron2_export_without_caffe2():
    from detectron2.export import TracingAdapter, scripting_with_instances  # noqa: F401

    import detectron2.export as export

    with pytest.raises(ImportError, match="caffe2"):
        export.Caffe2Tracer
    assert not hasattr(export, "no_such_name")
