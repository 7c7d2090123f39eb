"""
Mapillary Vistas v1.2: ``mapillary_vistas_sem_seg_{train,val}`` and
``mapillary_vistas_panoptic_{train,val}`` (65 classes, 37 things).

Layout under the dataset root, as released (no preparation needed; see ``datasets/README.md``)::

    mapillary_vistas/{training,validation}/images/*.jpg
    mapillary_vistas/{training,validation}/labels/*.png       # label = class index, 65 = unlabeled
    mapillary_vistas/{training,validation}/panoptic/*.png
    mapillary_vistas/{training,validation}/panoptic/panoptic_2018.json   # category ids 1..65

The ignore label is 65 (the "unlabeled" class), not 255.
"""
import os
from typing import Any, Dict, List, Optional, Sequence

from ._common import (
    dataset_root,
    load_panoptic_json_with_sem_seg,
    panoptic_metadata,
    register_panoptic_with_sem_seg,
    register_sem_seg,
    register_splits,
)
from .meta.mapillary_vistas import MAPILLARY_VISTAS_CATEGORIES

__all__ = [
    "get_mapillary_vistas_sem_seg_metadata",
    "get_mapillary_vistas_panoptic_metadata",
    "load_mapillary_vistas_panoptic",
    "register_all_mapillary_vistas_sem_seg",
    "register_all_mapillary_vistas_panoptic",
    "register_all_mapillary_vistas",
]

_SPLIT_DIRS = {"train": "training", "val": "validation"}
# "unlabeled" is class 65 of the release; it is not evaluated
_IGNORE_LABEL = 65


def get_mapillary_vistas_sem_seg_metadata() -> Dict[str, Any]:
    """``stuff_classes`` (65 readable names) and ``stuff_colors``."""
    return {
        "stuff_classes": [c["name"] for c in MAPILLARY_VISTAS_CATEGORIES],
        "stuff_colors": [c["color"] for c in MAPILLARY_VISTAS_CATEGORIES],
    }


def get_mapillary_vistas_panoptic_metadata() -> Dict[str, Any]:
    """
    Class metadata of Mapillary Vistas panoptic. As in the official code, ``thing_classes`` and
    ``thing_colors`` repeat all 65 classes (so the Visualizer can index them with any
    contiguous id); ``thing_dataset_id_to_contiguous_id`` has the 37 things only and
    ``stuff_dataset_id_to_contiguous_id`` all 65 (json id k -> k - 1).
    """
    return panoptic_metadata(MAPILLARY_VISTAS_CATEGORIES, thing_classes_from_all=True)


def load_mapillary_vistas_panoptic(
    json_file: str,
    image_root: str,
    panoptic_root: str,
    sem_seg_root: str,
    metadata: Optional[Dict[str, Any]] = None,
) -> List[Dict]:
    """Load ``panoptic_2018.json`` into dicts with ``file_name``, ``image_id`` (str),
    ``pan_seg_file_name``, ``sem_seg_file_name`` and ``segments_info`` (contiguous
    ``category_id``, ``isthing``)."""
    meta = metadata or get_mapillary_vistas_panoptic_metadata()
    return load_panoptic_json_with_sem_seg(json_file, image_root, panoptic_root, sem_seg_root, meta)


def register_all_mapillary_vistas_sem_seg(
    root: Optional[str] = None,
    name_format: str = "mapillary_vistas_sem_seg_{split}",
    splits: Sequence[str] = ("train", "val"),
) -> List[str]:
    """
    Register Mapillary Vistas semantic segmentation rooted at ``root`` (default
    ``$DETECTRON2_DATASETS``). Metadata: :func:`get_mapillary_vistas_sem_seg_metadata` plus
    ``image_root``, ``sem_seg_root``, ``evaluator_type`` "sem_seg", ``ignore_label`` 65.
    """
    root = dataset_root(root, "mapillary_vistas")
    meta = get_mapillary_vistas_sem_seg_metadata()

    def register(name: str, split: str) -> None:
        split_dir = os.path.join(root, _SPLIT_DIRS[split])
        register_sem_seg(
            name,
            os.path.join(split_dir, "images"),
            os.path.join(split_dir, "labels"),
            meta,
            ignore_label=_IGNORE_LABEL,
        )

    return register_splits(name_format, splits, register)


def register_all_mapillary_vistas_panoptic(
    root: Optional[str] = None,
    name_format: str = "mapillary_vistas_panoptic_{split}",
    splits: Sequence[str] = ("train", "val"),
) -> List[str]:
    """
    Register Mapillary Vistas panoptic segmentation rooted at ``root``.

    Metadata: :func:`get_mapillary_vistas_panoptic_metadata` plus ``image_root``,
    ``panoptic_root``, ``panoptic_json``, ``sem_seg_root``, ``json_file`` None (there is no
    instance json), ``evaluator_type`` "mapillary_vistas_panoptic_seg", ``ignore_label`` 65,
    ``label_divisor`` 1000.
    """
    root = dataset_root(root, "mapillary_vistas")
    meta = get_mapillary_vistas_panoptic_metadata()

    def register(name: str, split: str) -> None:
        split_dir = os.path.join(root, _SPLIT_DIRS[split])
        panoptic_root = os.path.join(split_dir, "panoptic")
        register_panoptic_with_sem_seg(
            name,
            load_mapillary_vistas_panoptic,
            image_root=os.path.join(split_dir, "images"),
            panoptic_root=panoptic_root,
            panoptic_json=os.path.join(panoptic_root, "panoptic_2018.json"),
            sem_seg_root=os.path.join(split_dir, "labels"),
            json_file=None,  # there is no instance json
            evaluator_type="mapillary_vistas_panoptic_seg",
            metadata=meta,
            ignore_label=_IGNORE_LABEL,
        )

    return register_splits(name_format, splits, register)


def register_all_mapillary_vistas(root: Optional[str] = None) -> List[str]:
    """Register the semantic and panoptic Mapillary Vistas datasets under their standard names."""
    names = register_all_mapillary_vistas_sem_seg(root)
    return names + register_all_mapillary_vistas_panoptic(root)
