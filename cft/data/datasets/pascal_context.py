"""Pascal Context (VOC2010 + context labels, MMSeg layout) as ``pascal_context_{59,60}_sem_seg_{train,val}``.

Expected under ``$DETECTRON2_DATASETS`` (default ``datasets``)::

    VOCdevkit/VOC2010/JPEGImages/*.jpg
    VOCdevkit/VOC2010/SegmentationClassContext/*.png   # MMSeg's converted labels: 0 background, 1..59
    VOCdevkit/VOC2010/ImageSets/SegmentationContext/{train,val}.txt
    VOCdevkit/VOC2010/SegmentationClassContext_detectron2/pc59/*.png  # written by prepare_pascal_context_59

The 60-class variant uses the MMSeg labels as they are (background is class 0). The 59-class variant
(MMSeg ``reduce_zero_label``) maps 0 -> 255 and c -> c - 1; Detectron2's mapper and evaluator read
label files directly, so that map is written once by :func:`prepare_pascal_context_59`.
Registration is lazy: nothing is read until a set is loaded.
"""
import os
from typing import Dict, List, Optional

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

__all__ = ["PASCAL_CONTEXT_59_CLASSES", "register_all_pascal_context", "prepare_pascal_context_59"]

PASCAL_CONTEXT_59_CLASSES = [
    "aeroplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat", "book", "bottle",
    "building", "bus", "cabinet", "car", "cat", "ceiling", "chair", "cloth", "computer", "cow",
    "cup", "curtain", "dog", "door", "fence", "floor", "flower", "food", "grass", "ground",
    "horse", "keyboard", "light", "motorbike", "mountain", "mouse", "person", "plate", "platform",
    "pottedplant", "road", "rock", "sheep", "shelves", "sidewalk", "sign", "sky", "snow", "sofa",
    "table", "track", "train", "tree", "truck", "tvmonitor", "wall", "water", "window", "wood",
]  # fmt: skip

_VOC = os.path.join("VOCdevkit", "VOC2010")


def _load(root: str, split: str, label_dir: str) -> List[Dict]:
    voc = os.path.join(root, _VOC)
    with open(os.path.join(voc, "ImageSets", "SegmentationContext", f"{split}.txt")) as f:
        names = [line.strip() for line in f if line.strip()]
    return [
        {
            "file_name": os.path.join(voc, "JPEGImages", f"{n}.jpg"),
            "sem_seg_file_name": os.path.join(voc, label_dir, f"{n}.png"),
        }
        for n in names
    ]


def _root(root: Optional[str]) -> str:
    return root or os.getenv("DETECTRON2_DATASETS", "datasets")


def register_all_pascal_context(root: Optional[str] = None) -> List[str]:
    """Registers the four sets (idempotent); returns their names."""
    root = _root(root)
    variants = {
        59: (PASCAL_CONTEXT_59_CLASSES, os.path.join("SegmentationClassContext_detectron2", "pc59")),
        60: (["background"] + PASCAL_CONTEXT_59_CLASSES, "SegmentationClassContext"),
    }
    names = []
    for k, (classes, label_dir) in variants.items():
        for split in ("train", "val"):
            name = f"pascal_context_{k}_sem_seg_{split}"
            names.append(name)
            if name in DatasetCatalog.list():
                continue
            DatasetCatalog.register(name, lambda s=split, d=label_dir: _load(root, s, d))
            MetadataCatalog.get(name).set(
                stuff_classes=list(classes),
                image_root=os.path.join(root, _VOC, "JPEGImages"),
                sem_seg_root=os.path.join(root, _VOC, label_dir),
                evaluator_type="sem_seg",
                ignore_label=255,
            )
    return names


def prepare_pascal_context_59(root: Optional[str] = None) -> int:
    """Writes the 59-class label maps (0 and 255 -> 255, c -> c - 1, as MMSeg's
    ``reduce_zero_label``); returns the number written."""
    voc = os.path.join(_root(root), _VOC)
    src = os.path.join(voc, "SegmentationClassContext")
    dst = os.path.join(voc, "SegmentationClassContext_detectron2", "pc59")
    os.makedirs(dst, exist_ok=True)
    count = 0
    for f in sorted(os.listdir(src)):
        if f.endswith(".png"):
            label = np.asarray(Image.open(os.path.join(src, f))).astype(np.int64)
            out = np.where((label == 0) | (label == 255), 255, label - 1).astype(np.uint8)
            Image.fromarray(out).save(os.path.join(dst, f))
            count += 1
    return count
