"""The tiny_coco registration reads the real COCO subset in ../shared/data/tiny_coco."""
from detectron2.data import DatasetCatalog, MetadataCatalog

from conftest import shared_path
from segcommon.data.datasets import register_tiny_coco


def test_tiny_coco_registration():
    root = shared_path("data", "tiny_coco")
    name = register_tiny_coco(str(root), name="_test_tiny_coco")
    dicts = DatasetCatalog.get(name)
    meta = MetadataCatalog.get(name)
    assert len(dicts) == 16
    assert sum(len(d["annotations"]) for d in dicts) == 197
    assert len(meta.thing_classes) == 80 and meta.evaluator_type == "coco"
    assert sorted(meta.thing_dataset_id_to_contiguous_id.values()) == list(range(80))
    assert all(0 <= a["category_id"] < 80 for d in dicts for a in d["annotations"])


def test_tiny_coco_registered_by_default():
    import segcommon.data  # noqa: F401

    assert "tiny_coco" in DatasetCatalog.list()
