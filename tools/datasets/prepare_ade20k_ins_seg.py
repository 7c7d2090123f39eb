#!/usr/bin/env python3
"""
Build COCO-format ADE20K instance annotations (100 thing classes) from the instance
annotations of the SceneParsing release.

Input (under ``--root``, default ``$DETECTRON2_DATASETS``, else ``datasets``)::

    ADEChallengeData2016/images/{training,validation}/*.jpg
    ADEChallengeData2016/annotations_instance/{training,validation}/*.png
        # R: instance class 1..100 (0 = none), G: instance id (0 = none)
Output::

    ADEChallengeData2016/ade20k_instance_{train,val}.json

Format (as the official Mask2Former script): ``images`` with string ``id`` (the file's base
name), ``file_name``, ``width``, ``height``; one annotation per instance with ``id`` (from 1,
per split), ``image_id``, ``category_id`` = the class's 0-based ADE-150 id, ``iscrowd`` 0,
``bbox`` [x, y, w, h], ``segmentation`` as compressed RLE and ``area``; ``categories`` = the 100
instance classes (``id`` = ADE-150 id, ``name`` = instance-challenge name). The same ids are
used by ``prepare_ade20k_pan_seg.py``, which is what lets ``ade20k_panoptic_*`` evaluate
instance AP against this json.

Needs pycocotools (a detectron2 dependency), neither panopticapi nor detectron2's compiled ops.

Example::

    python tools/datasets/prepare_ade20k_ins_seg.py --root datasets
"""
import argparse
import json
import os
import sys
from typing import Dict, List, Optional, Sequence

import numpy as np
from PIL import Image
from pycocotools import mask as mask_util

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:  # imported by file path (as the tests do) rather than run
    sys.path.insert(0, _HERE)
import _common  # noqa: E402


def instances_of_image(
    instance: np.ndarray, thing_ids: Sequence[int], source: str = ""
) -> List[Dict]:
    """
    COCO annotations (without ``id``/``image_id``) of one instance PNG.

    Args:
        instance: (H, W, >=2) uint8 (R: instance class 1..100 or 0, G: instance id, 0 = none).
        thing_ids: ADE-150 id of instance class k at index k - 1.
        source: file name, for error messages.
    """
    if instance.ndim != 3:
        raise ValueError(f"{source}: expected an RGB instance map, got shape {instance.shape}.")
    anns = []
    for mask, category_id in _common.ade_instances(instance, thing_ids, source):
        rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
        rle["counts"] = rle["counts"].decode("ascii")
        anns.append(
            {
                "category_id": int(category_id),
                "iscrowd": 0,
                "bbox": _common.bbox_xywh(mask),
                "segmentation": rle,
                "area": int(mask_util.area(rle)),
            }
        )
    return anns


def convert_split(root: str, split: str) -> int:
    """Convert one split ("train" or "val"); returns the number of annotations."""
    meta = _common.load_meta("ade20k")
    image_dir, instance_dir = _common.ade_split_folders(
        root, split, "images", "annotations_instance"
    )
    out_json = os.path.join(root, "ADEChallengeData2016", f"ade20k_instance_{split}.json")

    files = sorted(f for f in os.listdir(image_dir) if f.endswith(".jpg"))
    print(f"[{split}] {len(files)} images -> {out_json}")
    images, annotations = [], []
    for file_name in _common.progress(
        files, len(files), f"[{split}] ", note=lambda: f", {len(annotations)} instances"
    ):
        image = _common.ade_image_record(image_dir, file_name)
        images.append(image)
        image_id = image["id"]
        ins_file = os.path.join(instance_dir, image_id + ".png")
        if not os.path.isfile(ins_file):
            raise FileNotFoundError(f"Instance annotation {ins_file} of {file_name} is missing.")
        instance = np.asarray(Image.open(ins_file))
        for ann in instances_of_image(instance, meta.ADE20K_THING_IDS, ins_file):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, **ann})

    categories = [
        {"id": cat_id, "name": name}
        for cat_id, name in zip(meta.ADE20K_THING_IDS, meta.ADE20K_INSTANCE_CLASSES)
    ]
    with open(out_json, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    return len(annotations)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    return _common.make_parser(__doc__, "ADEChallengeData2016/", ["train", "val"]).parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    return _common.run(convert_split, [(args.root, split) for split in args.splits])


if __name__ == "__main__":
    sys.exit(main())
