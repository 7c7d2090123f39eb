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
from typing import List, Optional

import numpy as np
from PIL import Image

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:  # imported by file path (as the tests do) rather than run
    sys.path.insert(0, _HERE)
import _common  # noqa: E402


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
    for name in _common.progress(files, len(files), f"[{dirname}] "):
        label = np.asarray(Image.open(os.path.join(src_dir, name)))
        Image.fromarray(convert_label(label)).save(os.path.join(dst_dir, name))
    return len(files)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    return _common.make_parser(__doc__, "ADEChallengeData2016/").parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    return _common.run(convert_split, [(args.root, d) for d in ("training", "validation")])


if __name__ == "__main__":
    sys.exit(main())
