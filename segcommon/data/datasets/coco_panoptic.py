"""
COCO panoptic with semantic labels: ``coco_2017_{train,val}_panoptic_with_sem_seg``, and the
thing-class patch of detectron2's ``coco_2017_{train,val}_panoptic``.

Layout under the dataset root (see ``datasets/README.md``)::

    coco/{train,val}2017/*.jpg
    coco/annotations/instances_{train,val}2017.json
    coco/annotations/panoptic_{train,val}2017.json
    coco/panoptic_{train,val}2017/*.png           # panoptic PNGs, id = R + 256 G + 256^2 B
    coco/panoptic_semseg_{train,val}2017/*.png    # prepare_coco_semantic_annos_from_panoptic.py

Contiguous ids run over the 133 panoptic categories in the order of detectron2's
``COCO_CATEGORIES``: the 80 things come first (ids 0..79, the same as the instance datasets'),
then the 53 stuff classes. The semantic PNGs store that contiguous id, 255 = unlabeled.
"""
import os
from typing import Any, Dict, List, Optional, Sequence

from detectron2.data import MetadataCatalog
from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

from ._common import (
    dataset_root,
    load_panoptic_json_with_sem_seg,
    panoptic_metadata,
    patch_metadata,
    register_panoptic_with_sem_seg,
    register_splits,
)

__all__ = [
    "get_coco_panoptic_with_sem_seg_metadata",
    "load_coco_panoptic_with_sem_seg",
    "register_coco_panoptic_with_sem_seg",
    "patch_coco_panoptic_metadata",
    "register_all_coco_panoptic_with_sem_seg",
]

# split -> (image dir, instances json, panoptic dir, panoptic json, semantic dir), under root
_SPLITS = {
    split: (
        f"coco/{split}2017",
        f"coco/annotations/instances_{split}2017.json",
        f"coco/panoptic_{split}2017",
        f"coco/annotations/panoptic_{split}2017.json",
        f"coco/panoptic_semseg_{split}2017",
    )
    for split in ("train", "val")
}


def get_coco_panoptic_with_sem_seg_metadata() -> Dict[str, Any]:
    """
    Class metadata of the 133-class COCO panoptic datasets with semantic labels.

    ``thing_classes``/``thing_colors``: the 80 things; ``stuff_classes``/``stuff_colors``: all
    133 classes; ``thing_dataset_id_to_contiguous_id``: 80 entries (values 0..79);
    ``stuff_dataset_id_to_contiguous_id``: all 133 (values 0..132).
    """
    return panoptic_metadata(COCO_CATEGORIES)


def load_coco_panoptic_with_sem_seg(
    json_file: str,
    image_root: str,
    panoptic_root: str,
    sem_seg_root: str,
    metadata: Optional[Dict[str, Any]] = None,
) -> List[Dict]:
    """
    Load the COCO panoptic json into dicts with ``file_name``, ``image_id`` (int),
    ``pan_seg_file_name``, ``sem_seg_file_name`` and ``segments_info`` (contiguous
    ``category_id`` over the 133 classes, ``isthing``; other fields as in the json).
    """
    meta = metadata or get_coco_panoptic_with_sem_seg_metadata()
    dicts = load_panoptic_json_with_sem_seg(
        json_file, image_root, panoptic_root, sem_seg_root, meta
    )
    for d in dicts:
        d["image_id"] = int(d["image_id"])
    return dicts


def register_coco_panoptic_with_sem_seg(
    name: str,
    image_root: str,
    panoptic_root: str,
    panoptic_json: str,
    sem_seg_root: str,
    instances_json: Optional[str],
) -> None:
    """
    Register one split of COCO panoptic with semantic labels under ``name``.

    Metadata: the class tables of :func:`get_coco_panoptic_with_sem_seg_metadata` plus
    ``image_root``, ``panoptic_root``, ``panoptic_json``, ``sem_seg_root``, ``json_file``
    (the *instance* json, used by COCOEvaluator for instance AP), ``evaluator_type``
    "coco_panoptic_seg", ``ignore_label`` 255 and ``label_divisor`` 1000.
    """
    register_panoptic_with_sem_seg(
        name,
        load_coco_panoptic_with_sem_seg,
        image_root=image_root,
        panoptic_root=panoptic_root,
        panoptic_json=panoptic_json,
        sem_seg_root=sem_seg_root,
        json_file=instances_json,
        evaluator_type="coco_panoptic_seg",
        metadata=get_coco_panoptic_with_sem_seg_metadata(),
    )


def patch_coco_panoptic_metadata(name: str) -> None:
    """
    Replace ``thing_classes``/``thing_colors`` of a detectron2 "standard" COCO panoptic dataset
    (which lists all 133 classes there) by the 80 thing classes.

    Detectron2 repeats all classes so that its Visualizer can index them with any contiguous
    id; the evaluators need the things only (COCOEvaluator's per-class table has 80 rows).
    The things are the first 80 classes, so indexing by a thing's contiguous id still works.
    """
    meta = get_coco_panoptic_with_sem_seg_metadata()
    patch_metadata(name, thing_classes=meta["thing_classes"], thing_colors=meta["thing_colors"])


def register_all_coco_panoptic_with_sem_seg(
    root: Optional[str] = None,
    name_format: str = "coco_2017_{split}_panoptic_with_sem_seg",
    splits: Sequence[str] = ("train", "val"),
    patch_names: Optional[Sequence[str]] = ("coco_2017_train_panoptic", "coco_2017_val_panoptic"),
) -> List[str]:
    """
    Register ``coco_2017_{train,val}_panoptic_with_sem_seg`` rooted at ``root`` (default
    ``$DETECTRON2_DATASETS``) and patch the thing classes of ``patch_names``.

    Args:
        root: dataset root.
        name_format: dataset name, formatted with ``split`` (tests pass private names).
        splits: subset of ("train", "val").
        patch_names: existing datasets to patch with :func:`patch_coco_panoptic_metadata`
            (those of them that are registered); None or empty to patch nothing.

    Returns:
        the registered names.
    """
    root = dataset_root(root)

    def register(name: str, split: str) -> None:
        image_dir, instances_json, pan_dir, pan_json, sem_dir = (
            os.path.join(root, path) for path in _SPLITS[split]
        )
        register_coco_panoptic_with_sem_seg(
            name, image_dir, pan_dir, pan_json, sem_dir, instances_json
        )

    names = register_splits(name_format, splits, register)
    for name in patch_names or ():
        if name in MetadataCatalog.list():
            patch_coco_panoptic_metadata(name)
    return names
