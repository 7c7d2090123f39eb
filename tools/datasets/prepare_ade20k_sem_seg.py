#!/usr/bin/env python3
"""
Write ADE20K-150 label PNGs in detectron2's convention.

Input (under ``--root``, default ``$DETECTRON2_DATASETS``, else ``datasets``)::

    ADEChallengeData2016/annotations/{training,validation}/*.png   # 0 = unlabeled, 1..150 classes

Output::

    ADEChallengeData2016/annotations_detectron2/{training,validation}/*.png

Label convention: ``label - 1`` in uint8 arithmetic, so classes become 0..149 and "unlabeled"
(0) wraps to 255, the ignore label of ``ade20k_sem_seg_*`` and ``ade20k_panoptic_*``.

Example::

    python tools/datasets/prepare_ade20k_sem_seg.py --root datasets
"""
import argparse
import os
import sys
import time
from typing import List, Optional

import numpy as np
from PIL import Image


def convert_label(label: np.ndarray) -> np.ndarray:
    """Raw ADE20K label (uint8, 0 = unlabeled) -> detectron2 label (0..149, 255 = ignore)."""
    if label.dtype != np.uint8:
        raise ValueError(f"Expected a uint8 label map, got {label.dtype}.")
    return label - np.uint8(1)  # uint8 wrap-around: 0 -> 255


def convert_split(root: str, dirname: str) -> int:
    """Convert one split folder ("training" or "validation"); returns the number of PNGs."""
    ade = os.path.join(root, "ADEChallengeData2016")
    src_dir = os.path.join(ade, "annotations", dirname)
    dst_dir = os.path.join(ade, "annotations_detectron2", dirname)
    if not os.path.isdir(src_dir):
        raise FileNotFoundError(
            f"ADE20K annotation folder {src_dir} is missing (unzip ADEChallengeData2016.zip "
            "into the dataset root; see datasets/README.md)."
        )
    os.makedirs(dst_dir, exist_ok=True)
    files = sorted(f for f in os.listdir(src_dir) if f.endswith(".png"))
    print(f"[{dirname}] {len(files)} label PNGs: {src_dir} -> {dst_dir}")
    start = time.time()
    step = max(1, len(files) // 20)
    for i, name in enumerate(files, 1):
        label = np.asarray(Image.open(os.path.join(src_dir, name)))
        Image.fromarray(convert_label(label)).save(os.path.join(dst_dir, name))
        if i % step == 0 or i == len(files):
            print(f"[{dirname}] {i}/{len(files)} ({time.time() - start:.0f}s)")
    return len(files)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument(
        "--root",
        default=os.getenv("DETECTRON2_DATASETS", "datasets"),
        help="dataset root containing ADEChallengeData2016/ "
        "(default: $DETECTRON2_DATASETS, else ./datasets)",
    )
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        for dirname in ("training", "validation"):
            convert_split(args.root, dirname)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
