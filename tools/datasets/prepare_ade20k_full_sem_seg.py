#!/usr/bin/env python3
"""
Build the ADE20K-full (847 classes) semantic segmentation set from the full ADE20K release.

Input (under ``--root``, default ``$DETECTRON2_DATASETS``, else ``datasets``)::

    ADE20K_2021_17_01/index_ade20k.pkl                       # lists 'folder' and 'filename'
    ADE20K_2021_17_01/images/ADE/{training,validation}/.../*.jpg and *_seg.png

Output::

    ADE20K_2021_17_01/images_detectron2/{training,validation}/*.jpg
    ADE20K_2021_17_01/annotations_detectron2/{training,validation}/*.tif   # uint16

As the official MaskFormer script: an image goes to "validation" if its name is
``ADE_val_*``, else to "training"; the class of a pixel is decoded from ``*_seg.png`` as
``(R // 10) * 256 + G`` (the ADE id); images whose shorter side exceeds 512 are resized so that
it is 512 (bilinear for the image, nearest for the labels); labels are the training id of the
847-class table (``segcommon/data/datasets/meta/ade20k_full.py``), 65535 for any other class
and for unlabeled pixels, saved as 16-bit TIFF.

Example::

    python tools/datasets/prepare_ade20k_full_sem_seg.py --root datasets
"""
import argparse
import os
import pickle
import sys
from typing import Dict, List, Optional, Tuple

import numpy as np
from PIL import Image

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:  # imported by file path (as the tests do) rather than run
    sys.path.insert(0, _HERE)
import _common  # noqa: E402

_MAX_SHORT_SIDE = 512
_IGNORE = 65535


def decode_class_mask(seg_rgb: np.ndarray) -> np.ndarray:
    """ADE id of every pixel of a full-ADE20K ``*_seg.png`` (R // 10 * 256 + G; 0 = unlabeled)."""
    r = seg_rgb[..., 0].astype(np.int32)
    g = seg_rgb[..., 1].astype(np.int32)
    return (r // 10) * 256 + g


def target_size(h: int, w: int, max_short: int = _MAX_SHORT_SIDE) -> Optional[Tuple[int, int]]:
    """(h, w) after resizing the shorter side to ``max_short``, or None if it is not longer."""
    if w >= h > max_short:
        return max_short, round(w / float(h) * max_short)
    if h >= w > max_short:
        return round(h / float(w) * max_short), max_short
    return None


def to_train_ids(class_mask: np.ndarray, id_map: Dict[int, int]) -> np.ndarray:
    """Map ADE ids to training ids; unknown ids and 0 become 65535."""
    out = np.full(class_mask.shape, _IGNORE, dtype=np.uint16)
    for ade_id in np.unique(class_mask):
        train_id = id_map.get(int(ade_id))
        if train_id is not None:
            out[class_mask == ade_id] = train_id
    return out


def convert(root: str) -> int:
    """Convert every image listed in the index; returns their number."""
    import cv2  # opencv-python-headless; imported here so that `--help` works without it

    meta = _common.load_meta("ade20k_full")
    id_map = {c["id"]: c["trainId"] for c in meta.ADE20K_FULL_CATEGORIES}
    base = os.path.join(root, "ADE20K_2021_17_01")
    index_file = os.path.join(base, "index_ade20k.pkl")
    if not os.path.isfile(index_file):
        raise FileNotFoundError(
            f"ADE20K-full index {index_file} is missing (unzip ADE20K_2021_17_01.zip into the "
            "dataset root; see datasets/README.md)."
        )
    with open(index_file, "rb") as f:
        index = pickle.load(f)
    for dirname in ("training", "validation"):
        os.makedirs(os.path.join(base, "images_detectron2", dirname), exist_ok=True)
        os.makedirs(os.path.join(base, "annotations_detectron2", dirname), exist_ok=True)

    items = list(zip(index["folder"], index["filename"]))
    print(f"{len(items)} images -> {base}/{{images,annotations}}_detectron2")
    for folder, file_name in _common.progress(items, len(items), parts=50):
        split = "validation" if file_name.split("_")[1] == "val" else "training"
        # 'folder' is relative to the folder that contains ADE20K_2021_17_01/
        image_file = os.path.join(root, folder, file_name)
        seg_file = image_file[: -len(".jpg")] + "_seg.png"
        for path in (image_file, seg_file):
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{path} (listed in {index_file}) is missing.")
        img = np.asarray(Image.open(image_file))
        label = decode_class_mask(np.asarray(Image.open(seg_file).convert("RGB")))
        size = target_size(*img.shape[:2])
        if size is not None:
            h, w = size
            img = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
            label = cv2.resize(label, (w, h), interpolation=cv2.INTER_NEAREST)
        Image.fromarray(img).save(os.path.join(base, "images_detectron2", split, file_name))
        Image.fromarray(to_train_ids(label, id_map)).save(
            os.path.join(base, "annotations_detectron2", split, file_name[: -len(".jpg")] + ".tif")
        )
    return len(items)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    return _common.make_parser(__doc__, "ADE20K_2021_17_01/").parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    return _common.run(convert, [(args.root,)])


if __name__ == "__main__":
    sys.exit(main())
