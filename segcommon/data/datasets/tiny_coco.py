"""``tiny_coco``: a 16-image subset of COCO train2017 with its original instance annotations (80 thing
classes, COCO ids 1..90), for overfit tests of whole training pipelines.

Layout: ``$DETECTRON2_DATASETS/tiny_coco/{images/, instances.json}`` (the project's checkout has it
at ``../shared/data/tiny_coco``; link it there, see datasets/README.md).
"""
import os
from typing import Optional

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances

__all__ = ["register_tiny_coco"]


def register_tiny_coco(root: Optional[str] = None, name: str = "tiny_coco") -> str:
    """Registers the COCO-format set at ``root`` (default ``$DETECTRON2_DATASETS/tiny_coco``) as
    ``name`` (evaluator_type "coco"); nothing is read until the set is used. Returns ``name``."""
    if root is None:
        root = os.path.join(os.getenv("DETECTRON2_DATASETS", "datasets"), "tiny_coco")
    if name in DatasetCatalog.list():  # re-registration replaces the previous root
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    register_coco_instances(name, {}, os.path.join(root, "instances.json"), os.path.join(root, "images"))
    return name
