"""
ADE20K registrations beyond detectron2's ``ade20k_sem_seg_{train,val}``:

* ``ade20k_panoptic_{train,val}``: ADE20K-150 panoptic (100 things, 50 stuff).
* ``ade20k_instance_{train,val}``: COCO-format instances of the 100 thing classes.
* ``ade20k_full_sem_seg_{train,val}``: ADE20K-full semantic segmentation, 847 classes.
* a metadata patch adding ``stuff_colors`` to ``ade20k_sem_seg_{train,val}``.

Layout under the dataset root (see ``datasets/README.md``)::

    ADEChallengeData2016/
      images/{training,validation}/*.jpg
      annotations/{training,validation}/*.png             # raw, 0 = unlabeled
      annotations_instance/{training,validation}/*.png
      annotations_detectron2/{training,validation}/*.png  # prepare_ade20k_sem_seg.py
      ade20k_panoptic_{train,val}.json                    # prepare_ade20k_pan_seg.py
      ade20k_panoptic_{train,val}/*.png                   # prepare_ade20k_pan_seg.py
      ade20k_instance_{train,val}.json                    # prepare_ade20k_ins_seg.py
    ADE20K_2021_17_01/
      images_detectron2/{training,validation}/*.jpg       # prepare_ade20k_full_sem_seg.py
      annotations_detectron2/{training,validation}/*.tif  # prepare_ade20k_full_sem_seg.py

Ids: the panoptic and instance jsons use the 0-based ADE-150 id as ``category_id``; after
loading, panoptic segments carry the contiguous id over all 150 classes (equal to the ADE-150
id) and instances the contiguous id over the 100 things (0..99).
"""
import os
from typing import Any, Dict, List, Optional, Sequence

from detectron2.data import MetadataCatalog
from detectron2.data.datasets import load_coco_json

from ._common import (
    dataset_root,
    load_panoptic_json_with_sem_seg,
    panoptic_metadata,
    patch_metadata,
    register_dataset,
    register_panoptic_with_sem_seg,
    register_sem_seg,
    register_splits,
)
from .meta.ade20k import (
    ADE20K_150_CATEGORIES,
    ADE20K_150_COLORS,
    ADE20K_INSTANCE_CLASSES,
    ADE20K_THING_IDS,
)
from .meta.ade20k_full import ADE20K_FULL_CATEGORIES

__all__ = [
    "get_ade20k_panoptic_metadata",
    "get_ade20k_instance_metadata",
    "get_ade20k_full_metadata",
    "load_ade20k_panoptic",
    "register_all_ade20k_panoptic",
    "register_all_ade20k_instance",
    "register_all_ade20k_full",
    "patch_ade20k_sem_seg_metadata",
    "register_all_ade20k",
]

_SPLIT_DIRS = {"train": "training", "val": "validation"}


def get_ade20k_panoptic_metadata() -> Dict[str, Any]:
    """
    Class metadata of ADE20K panoptic: ``thing_classes``/``thing_colors`` (the 100 things),
    ``stuff_classes``/``stuff_colors`` (all 150), ``thing_dataset_id_to_contiguous_id``
    (100 entries) and ``stuff_dataset_id_to_contiguous_id`` (150 entries, identity maps since
    the json ids are the ADE-150 ids).
    """
    return panoptic_metadata(ADE20K_150_CATEGORIES)


def get_ade20k_instance_metadata() -> Dict[str, Any]:
    """``thing_classes`` (100 instance-challenge names) and ``thing_dataset_id_to_contiguous_id``
    (ADE-150 id of each thing -> 0..99)."""
    return {
        "thing_classes": list(ADE20K_INSTANCE_CLASSES),
        "thing_colors": [ADE20K_150_COLORS[i] for i in ADE20K_THING_IDS],
        "thing_dataset_id_to_contiguous_id": {k: i for i, k in enumerate(ADE20K_THING_IDS)},
    }


def get_ade20k_full_metadata() -> Dict[str, Any]:
    """``stuff_classes`` of ADE20K-full (847 names, in training-id order)."""
    return {"stuff_classes": [c["name"] for c in ADE20K_FULL_CATEGORIES]}


def load_ade20k_panoptic(
    json_file: str,
    image_root: str,
    panoptic_root: str,
    sem_seg_root: str,
    metadata: Optional[Dict[str, Any]] = None,
) -> List[Dict]:
    """
    Load ADE20K panoptic annotations into dicts with ``file_name``, ``image_id`` (the image's
    base name, e.g. "ADE_val_00000001"), ``pan_seg_file_name``, ``sem_seg_file_name`` (the
    ``annotations_detectron2`` PNG) and ``segments_info`` (contiguous ``category_id``,
    ``isthing``).
    """
    meta = metadata or get_ade20k_panoptic_metadata()
    return load_panoptic_json_with_sem_seg(json_file, image_root, panoptic_root, sem_seg_root, meta)


def register_all_ade20k_panoptic(
    root: Optional[str] = None,
    name_format: str = "ade20k_panoptic_{split}",
    splits: Sequence[str] = ("train", "val"),
) -> List[str]:
    """
    Register ``ade20k_panoptic_{train,val}`` rooted at ``root`` (default ``$DETECTRON2_DATASETS``).

    Metadata: :func:`get_ade20k_panoptic_metadata` plus ``image_root``, ``panoptic_root``,
    ``panoptic_json``, ``sem_seg_root``, ``json_file`` (the instance json, for instance AP),
    ``evaluator_type`` "ade20k_panoptic_seg", ``ignore_label`` 255, ``label_divisor`` 1000.
    """
    root = dataset_root(root, "ADEChallengeData2016")
    meta = get_ade20k_panoptic_metadata()

    def register(name: str, split: str) -> None:
        register_panoptic_with_sem_seg(
            name,
            load_ade20k_panoptic,
            image_root=os.path.join(root, "images", _SPLIT_DIRS[split]),
            panoptic_root=os.path.join(root, f"ade20k_panoptic_{split}"),
            panoptic_json=os.path.join(root, f"ade20k_panoptic_{split}.json"),
            sem_seg_root=os.path.join(root, "annotations_detectron2", _SPLIT_DIRS[split]),
            json_file=os.path.join(root, f"ade20k_instance_{split}.json"),
            evaluator_type="ade20k_panoptic_seg",
            metadata=meta,
        )

    return register_splits(name_format, splits, register)


def register_all_ade20k_instance(
    root: Optional[str] = None,
    name_format: str = "ade20k_instance_{split}",
    splits: Sequence[str] = ("train", "val"),
) -> List[str]:
    """
    Register ``ade20k_instance_{train,val}`` (COCO-format json from
    ``tools/datasets/prepare_ade20k_ins_seg.py``), rooted at ``root``.

    Metadata: :func:`get_ade20k_instance_metadata` plus ``json_file``, ``image_root`` and
    ``evaluator_type`` "coco". Dicts are those of detectron2's ``load_coco_json``
    (``annotations`` with RLE ``segmentation``, contiguous ``category_id`` 0..99).
    """
    root = dataset_root(root, "ADEChallengeData2016")
    meta = get_ade20k_instance_metadata()

    def register(name: str, split: str) -> None:
        image_root = os.path.join(root, "images", _SPLIT_DIRS[split])
        json_file = os.path.join(root, f"ade20k_instance_{split}.json")
        register_dataset(
            name,
            lambda: load_coco_json(json_file, image_root, name),
            dict(json_file=json_file, image_root=image_root, evaluator_type="coco", **meta),
            key=(image_root, json_file),
        )

    return register_splits(name_format, splits, register)


def register_all_ade20k_full(
    root: Optional[str] = None,
    name_format: str = "ade20k_full_sem_seg_{split}",
    splits: Sequence[str] = ("train", "val"),
) -> List[str]:
    """
    Register ADE20K-full semantic segmentation (847 classes) rooted at ``root``.

    Labels are 16-bit TIFFs holding the training id, 65535 = ignore. Metadata:
    ``stuff_classes`` (847), ``image_root``, ``sem_seg_root``, ``evaluator_type`` "sem_seg",
    ``ignore_label`` 65535.
    """
    root = dataset_root(root, "ADE20K_2021_17_01")
    meta = get_ade20k_full_metadata()

    def register(name: str, split: str) -> None:
        register_sem_seg(
            name,
            os.path.join(root, "images_detectron2", _SPLIT_DIRS[split]),
            os.path.join(root, "annotations_detectron2", _SPLIT_DIRS[split]),
            meta,
            ignore_label=65535,  # labels are 16-bit: 255 is a valid class here
            gt_ext="tif",
        )

    return register_splits(name_format, splits, register)


def patch_ade20k_sem_seg_metadata(
    names: Sequence[str] = ("ade20k_sem_seg_train", "ade20k_sem_seg_val"),
) -> None:
    """Add the ADE20K-150 palette as ``stuff_colors`` to detectron2's ADE20K semantic datasets
    (those of ``names`` that are registered)."""
    for name in names:
        if name in MetadataCatalog.list():
            patch_metadata(name, stuff_colors=[list(c) for c in ADE20K_150_COLORS])


def register_all_ade20k(root: Optional[str] = None) -> List[str]:
    """Register every ADE20K dataset of this module under its standard name and patch
    ``ade20k_sem_seg_{train,val}``. Returns the registered names."""
    names = register_all_ade20k_panoptic(root)
    names += register_all_ade20k_instance(root)
    names += register_all_ade20k_full(root)
    patch_ade20k_sem_seg_metadata()
    return names
