#!/usr/bin/env python3
"""
Build the COCO-Stuff-10k semantic segmentation set (171 classes) in detectron2's layout.

Input (under ``--root``, default ``$DETECTRON2_DATASETS``, else ``datasets``), as unzipped from
the cocostuff-10k release::

    coco/coco_stuff_10k/imageLists/{train,test}.txt     # image base names
    coco/coco_stuff_10k/images/*.jpg
    coco/coco_stuff_10k/annotations/*.mat               # label map 'S'

Output::

    coco/coco_stuff_10k/images_detectron2/{train,test}/*.jpg   # copies
    coco/coco_stuff_10k/annotations_detectron2/{train,test}/*.png

Labels are the contiguous ids of the 171 classes (80 things then 91 stuff, COCO id order;
``segcommon/data/datasets/meta/coco_stuff.py``), 255 = unlabeled. Two releases exist:

* v1.1 (MATLAB v5 ``.mat``, read with scipy): ``S`` holds COCO category ids, 0 = unlabeled;
  they are mapped through the 171-class table.
* v1.0 (MATLAB v7.3 = HDF5 ``.mat``, needs ``pip install h5py``): ``S`` is stored transposed and
  holds contiguous id + 2 (1 = unlabeled); as the official MaskFormer script, the label is
  ``S - 2`` in uint8 arithmetic.

Example::

    python tools/datasets/prepare_coco_stuff_10k_sem_seg.py --root datasets
"""
import argparse
import os
import shutil
import sys
from typing import List, Optional

import numpy as np
from PIL import Image

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:  # imported by file path (as the tests do) rather than run
    sys.path.insert(0, _HERE)
import _common  # noqa: E402


def coco_id_lut() -> np.ndarray:
    """256-entry lookup table COCO category id -> contiguous id (255 for 0 and unused ids)."""
    lut = np.full(256, 255, dtype=np.uint8)
    for i, c in enumerate(_common.load_meta("coco_stuff").COCO_STUFF_CATEGORIES):
        lut[c["id"]] = i
    return lut


def read_label(mat_file: str, lut: np.ndarray) -> np.ndarray:
    """Contiguous uint8 label map (255 = unlabeled) of one cocostuff-10k ``.mat`` file."""
    from scipy.io import loadmat

    try:
        s = loadmat(mat_file)["S"]
    except NotImplementedError:  # scipy cannot read MATLAB v7.3 (HDF5) files: release v1.0
        try:
            import h5py
        except ImportError:
            raise RuntimeError(
                f"{mat_file} is a MATLAB v7.3 file (cocostuff-10k v1.0); `pip install h5py` "
                "to read it, or use the v1.1 release."
            ) from None
        with h5py.File(mat_file, "r") as f:
            s = np.asarray(f["S"]).astype(np.uint8).T
        return s - np.uint8(2)  # 1 (unlabeled) -> 255, class k + 2 -> k
    return lut[np.asarray(s).astype(np.int64)]


def convert_split(root: str, split: str) -> int:
    """Convert one split ("train" or "test"); returns the number of images."""
    base = os.path.join(root, "coco", "coco_stuff_10k")
    list_file = os.path.join(base, "imageLists", f"{split}.txt")
    if not os.path.isfile(list_file):
        raise FileNotFoundError(
            f"COCO-Stuff-10k image list {list_file} is missing (unzip cocostuff-10k-v1.1.zip "
            "into coco/coco_stuff_10k/; see datasets/README.md)."
        )
    with open(list_file) as f:
        names = [line.strip() for line in f if line.strip()]
    image_dir = os.path.join(base, "images_detectron2", split)
    label_dir = os.path.join(base, "annotations_detectron2", split)
    os.makedirs(image_dir, exist_ok=True)
    os.makedirs(label_dir, exist_ok=True)
    lut = coco_id_lut()
    print(f"[{split}] {len(names)} images -> {image_dir}, {label_dir}")
    for name in _common.progress(names, len(names), f"[{split}] "):
        src_image = os.path.join(base, "images", name + ".jpg")
        mat_file = os.path.join(base, "annotations", name + ".mat")
        for path in (src_image, mat_file):
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{path} (listed in {list_file}) is missing.")
        label = read_label(mat_file, lut)
        width, height = _common.image_size(src_image)
        if label.shape != (height, width):
            raise ValueError(f"{mat_file}: label size {label.shape} != image {(height, width)}")
        shutil.copyfile(src_image, os.path.join(image_dir, name + ".jpg"))
        Image.fromarray(label).save(os.path.join(label_dir, name + ".png"))
    return len(names)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    return _common.make_parser(__doc__, "coco/coco_stuff_10k/", ["train", "test"]).parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    return _common.run(convert_split, [(args.root, split) for split in args.splits])


if __name__ == "__main__":
    sys.exit(main())
