"""
COCO-Stuff-10k semantic segmentation: ``coco_2017_{train,test}_stuff_10k_sem_seg``.

Layout under the dataset root (see ``datasets/README.md``)::

    coco/coco_stuff_10k/images_detectron2/{train,test}/*.jpg
    coco/coco_stuff_10k/annotations_detectron2/{train,test}/*.png

both written by ``tools/datasets/prepare_coco_stuff_10k_sem_seg.py``. The label PNGs store the
contiguous id over the 171 COCO-Stuff classes (80 things then 91 stuff, in COCO id order),
255 = unlabeled.
"""
import os
from typing import Any, Dict, List, Optional, Sequence

from ._common import dataset_root, register_sem_seg, register_splits
from .meta.coco_stuff import COCO_STUFF_CATEGORIES

__all__ = ["get_coco_stuff_metadata", "register_all_coco_stuff_10k"]


def get_coco_stuff_metadata() -> Dict[str, Any]:
    """``stuff_classes`` (171 names), ``stuff_dataset_id_to_contiguous_id`` (COCO id -> index)."""
    return {
        "stuff_classes": [c["name"] for c in COCO_STUFF_CATEGORIES],
        "stuff_dataset_id_to_contiguous_id": {
            c["id"]: i for i, c in enumerate(COCO_STUFF_CATEGORIES)
        },
    }


def register_all_coco_stuff_10k(
    root: Optional[str] = None,
    name_format: str = "coco_2017_{split}_stuff_10k_sem_seg",
    splits: Sequence[str] = ("train", "test"),
) -> List[str]:
    """
    Register COCO-Stuff-10k rooted at ``root`` (default ``$DETECTRON2_DATASETS``).

    Metadata: :func:`get_coco_stuff_metadata` plus ``image_root``, ``sem_seg_root``,
    ``evaluator_type`` "sem_seg" and ``ignore_label`` 255. ``name_format`` is formatted with
    ``split`` (tests pass private names). Returns the registered names.
    """
    root = dataset_root(root, "coco", "coco_stuff_10k")
    meta = get_coco_stuff_metadata()

    def register(name: str, split: str) -> None:
        register_sem_seg(
            name,
            os.path.join(root, "images_detectron2", split),
            os.path.join(root, "annotations_detectron2", split),
            meta,
        )

    return register_splits(name_format, splits, register)
