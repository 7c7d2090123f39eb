#!/usr/bin/env python3
"""
Write COCO semantic label PNGs from the COCO panoptic annotations.

Input (under ``--root``, default ``$DETECTRON2_DATASETS``, else ``datasets``)::

    coco/annotations/panoptic_{train,val}2017.json
    coco/panoptic_{train,val}2017/*.png      # id = R + 256 G + 256^2 B

Output::

    coco/panoptic_semseg_{train,val}2017/*.png   # uint8, same file names as the panoptic PNGs

Label convention: the pixels of a segment get the index of its category in detectron2's
133-entry ``COCO_CATEGORIES`` list (things 0..79, then stuff 80..132); crowd segments keep
their class; pixels covered by no segment (VOID) get 255. These are the labels of the
``coco_2017_{train,val}_panoptic_with_sem_seg`` datasets.

Example::

    python tools/datasets/prepare_coco_semantic_annos_from_panoptic.py --root datasets
"""
import argparse
import functools
import json
import multiprocessing as mp
import os
import sys
from typing import Dict, List, Optional, Sequence

import numpy as np
from PIL import Image

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:  # imported by file path (as the tests do) rather than run
    sys.path.insert(0, _HERE)
import _common  # noqa: E402


def rgb2id(color: np.ndarray) -> np.ndarray:
    """Panoptic segment ids from an (H, W, 3) uint8 PNG: R + 256 G + 256^2 B."""
    color = color.astype(np.int64)
    return color[..., 0] + 256 * color[..., 1] + 256 * 256 * color[..., 2]


def panoptic_to_semantic(
    pan_rgb: np.ndarray, segments_info: Sequence[Dict], category_to_label: Dict[int, int]
) -> np.ndarray:
    """
    Semantic label map of one panoptic annotation.

    Args:
        pan_rgb: (H, W, 3) uint8 panoptic PNG.
        segments_info: the json's segments (``id``, ``category_id`` = COCO category id).
        category_to_label: COCO category id -> label written to the output.

    Returns:
        (H, W) uint8 array, 255 where no segment lies.
    """
    pan = rgb2id(pan_rgb)
    out = np.full(pan.shape, 255, dtype=np.uint8)
    for seg in segments_info:
        out[pan == seg["id"]] = category_to_label[seg["category_id"]]
    return out


def _convert_one(ann: Dict, panoptic_dir: str, out_dir: str, category_to_label: Dict[int, int]):
    src = os.path.join(panoptic_dir, ann["file_name"])
    pan_rgb = np.asarray(Image.open(src).convert("RGB"))
    sem = panoptic_to_semantic(pan_rgb, ann["segments_info"], category_to_label)
    Image.fromarray(sem).save(os.path.join(out_dir, ann["file_name"]))


def _coco_category_to_label() -> Dict[int, int]:
    # Imported here: importing detectron2 is slow and `--help` should not need it.
    from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

    assert len(COCO_CATEGORIES) == 133
    return {c["id"]: i for i, c in enumerate(COCO_CATEGORIES)}


def convert_split(root: str, split: str, workers: int = 0) -> int:
    """Convert one split; returns the number of PNGs written."""
    coco = os.path.join(root, "coco")
    json_file = os.path.join(coco, "annotations", f"panoptic_{split}2017.json")
    panoptic_dir = os.path.join(coco, f"panoptic_{split}2017")
    out_dir = os.path.join(coco, f"panoptic_semseg_{split}2017")
    for path, kind in ((json_file, "file"), (panoptic_dir, "folder")):
        exists = os.path.isfile(path) if kind == "file" else os.path.isdir(path)
        if not exists:
            raise FileNotFoundError(
                f"COCO panoptic {kind} {path} is missing (download "
                "panoptic_annotations_trainval2017.zip and unzip it and the inner "
                f"panoptic_{split}2017.zip into coco/; see datasets/README.md)."
            )
    os.makedirs(out_dir, exist_ok=True)
    with open(json_file) as f:
        annotations = json.load(f)["annotations"]
    print(f"[{split}] {len(annotations)} panoptic annotations: {panoptic_dir} -> {out_dir}")

    work = functools.partial(
        _convert_one,
        panoptic_dir=panoptic_dir,
        out_dir=out_dir,
        category_to_label=_coco_category_to_label(),
    )
    prefix = f"[{split}] "
    if workers > 0:
        with mp.Pool(processes=workers) as pool:
            done = pool.imap_unordered(work, annotations, chunksize=16)
            for _ in _common.progress(done, len(annotations), prefix):
                pass
    else:
        for ann in _common.progress(annotations, len(annotations), prefix):
            work(ann)
    return len(annotations)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = _common.make_parser(__doc__, "coco/", ["train", "val"])
    parser.add_argument(
        "--workers",
        type=int,
        default=min(8, os.cpu_count() or 1),
        help="worker processes (0 = convert in this process)",
    )
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    calls = [(args.root, split, args.workers) for split in args.splits]
    return _common.run(convert_split, calls)


if __name__ == "__main__":
    sys.exit(main())
