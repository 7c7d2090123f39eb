"""CFT's training data pieces (``cft/data``).

* ``RandomRescaleInBox`` follows MMSeg's ``RandomResize(keep_ratio=True)`` rule: box
  (int(A r), int(B r)), orientation-free, factor min(long / long_edge, short / short_edge), sizes
  rounded with int(x + 0.5).
* The "cft_semantic" mapper on the toy set returns an unpadded crop-sized image and label and the
  MaskFormer-style per-class instances.
* The Pascal Context sets are registered with the semantic evaluator.
"""
from unittest import mock

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog

from cft.data.dataset_mapper import RandomRescaleInBox
from conftest import REPO


@pytest.mark.parametrize(
    "h, w, r, expected",
    [
        (512, 683, 1.0, (512, 683)),  # short edge bound
        (683, 512, 1.0, (683, 512)),  # portrait: the same box, orientation-free
        (300, 3000, 1.0, (205, 2048)),  # long edge bound: f = 2048 / 3000
        (512, 512, 0.5, (256, 256)),  # box (1024, 256)
        (375, 500, 1.5, (768, 1024)),  # box (3072, 768): f = 768 / 375
    ],
)
def test_random_rescale_in_box(h, w, r, expected):
    aug = RandomRescaleInBox((2048, 512), (0.5, 2.0))
    with mock.patch("numpy.random.uniform", return_value=r):
        t = aug.get_transform(np.zeros((h, w, 3), dtype=np.uint8))
    assert (t.new_h, t.new_w) == expected


def test_cft_semantic_mapper_on_toy(toy_root):
    from segcommon.data import build_dataset_mapper
    from segcommon.engine.defaults import setup_cfg

    cfg = setup_cfg(
        str(REPO / "configs" / "cft" / "toy" / "cft_R18_toy.yaml"),
        ["INPUT.DATASET_MAPPER_NAME", "cft_semantic", "INPUT.CFT_RESIZE.SCALE", "(512, 128)"],
        check_datasets=False,
    )
    mapper = build_dataset_mapper(cfg, is_train=True)
    out = mapper(DatasetCatalog.get("toy_sem_seg_train")[0])
    assert out["image"].dtype == torch.uint8 and out["image"].shape[0] == 3
    assert out["image"].shape[-2:] == out["sem_seg"].shape
    assert max(out["sem_seg"].shape) <= 128
    assert set(out["instances"].gt_classes.tolist()) == set(out["sem_seg"].unique().tolist()) - {255}


def test_pascal_context_registered():
    import cft  # noqa: F401

    for k in (59, 60):
        for split in ("train", "val"):
            meta = MetadataCatalog.get(f"pascal_context_{k}_sem_seg_{split}")
            assert meta.evaluator_type == "sem_seg" and meta.ignore_label == 255
            assert len(meta.stuff_classes) == k
