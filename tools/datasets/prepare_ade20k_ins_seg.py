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
import importlib.util
import json
import os
import sys
import time
from typing import Dict, List, Optional, Sequence

import numpy as np
from PIL import Image
from pycocotools import mask as mask_util

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _load_meta(module: str):
    """Import ``segcommon/data/datasets/meta/<module>.py`` by path: importing the segcommon
    package would also register datasets and pull in the models' dependencies."""
    path = os.path.join(_REPO_ROOT, "segcommon", "data", "datasets", "meta", module + ".py")
    spec = importlib.util.spec_from_file_location(f"_segcommon_meta_{module}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


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
    ins_cls = instance[..., 0].astype(np.int64)
    ins_ids = instance[..., 1]
    anns = []
    for ins_id in np.unique(ins_ids):
        if ins_id == 0:
            continue
        mask = ins_ids == ins_id
        cls = np.unique(ins_cls[mask])
        if len(cls) != 1 or not 1 <= cls[0] <= len(thing_ids):
            raise ValueError(
                f"{source}: instance {ins_id} has instance class(es) {cls.tolist()}, expected one "
                f"value in 1..{len(thing_ids)}."
            )
        ys = np.flatnonzero(mask.any(axis=1))
        xs = np.flatnonzero(mask.any(axis=0))
        rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
        rle["counts"] = rle["counts"].decode("ascii")
        anns.append(
            {
                "category_id": int(thing_ids[cls[0] - 1]),
                "iscrowd": 0,
                "bbox": [int(xs[0]), int(ys[0]), int(xs[-1] - xs[0] + 1), int(ys[-1] - ys[0] + 1)],
                "segmentation": rle,
                "area": int(mask_util.area(rle)),
            }
        )
    return anns


def convert_split(root: str, split: str) -> int:
    """Convert one split ("train" or "val"); returns the number of annotations."""
    meta = _load_meta("ade20k")
    dirname = {"train": "training", "val": "validation"}[split]
    ade = os.path.join(root, "ADEChallengeData2016")
    image_dir = os.path.join(ade, "images", dirname)
    instance_dir = os.path.join(ade, "annotations_instance", dirname)
    for path, hint in (
        (image_dir, "unzip ADEChallengeData2016.zip into the dataset root"),
        (instance_dir, "extract annotations_instance.tar into ADEChallengeData2016/"),
    ):
        if not os.path.isdir(path):
            raise FileNotFoundError(f"Folder {path} is missing ({hint}; see datasets/README.md).")
    out_json = os.path.join(ade, f"ade20k_instance_{split}.json")

    files = sorted(f for f in os.listdir(image_dir) if f.endswith(".jpg"))
    print(f"[{split}] {len(files)} images -> {out_json}")
    images, annotations = [], []
    start = time.time()
    step = max(1, len(files) // 20)
    for i, file_name in enumerate(files, 1):
        image_id = os.path.splitext(file_name)[0]
        with Image.open(os.path.join(image_dir, file_name)) as im:
            width, height = im.size
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        ins_file = os.path.join(instance_dir, image_id + ".png")
        if not os.path.isfile(ins_file):
            raise FileNotFoundError(f"Instance annotation {ins_file} of {file_name} is missing.")
        instance = np.asarray(Image.open(ins_file))
        for ann in instances_of_image(instance, meta.ADE20K_THING_IDS, ins_file):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, **ann})
        if i % step == 0 or i == len(files):
            elapsed = time.time() - start
            print(f"[{split}] {i}/{len(files)}, {len(annotations)} instances ({elapsed:.0f}s)")

    categories = [
        {"id": cat_id, "name": name}
        for cat_id, name in zip(meta.ADE20K_THING_IDS, meta.ADE20K_INSTANCE_CLASSES)
    ]
    with open(out_json, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    return len(annotations)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument(
        "--root",
        default=os.getenv("DETECTRON2_DATASETS", "datasets"),
        help="dataset root containing ADEChallengeData2016/ "
        "(default: $DETECTRON2_DATASETS, else ./datasets)",
    )
    parser.add_argument("--splits", nargs="+", default=["train", "val"], choices=["train", "val"])
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        for split in args.splits:
            convert_split(args.root, split)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
