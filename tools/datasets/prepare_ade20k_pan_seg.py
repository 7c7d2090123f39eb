#!/usr/bin/env python3
"""
Build ADE20K-150 panoptic annotations (COCO panoptic format) from the semantic and instance
annotations of the SceneParsing release.

Input (under ``--root``, default ``$DETECTRON2_DATASETS``, else ``datasets``)::

    ADEChallengeData2016/images/{training,validation}/*.jpg
    ADEChallengeData2016/annotations/{training,validation}/*.png           # 0 = unlabeled, 1..150
    ADEChallengeData2016/annotations_instance/{training,validation}/*.png
        # R: instance class 1..100 (0 = none), G: instance id (0 = none)
Output::

    ADEChallengeData2016/ade20k_panoptic_{train,val}/*.png   # id = R + 256 G + 256^2 B, 0 = VOID
    ADEChallengeData2016/ade20k_panoptic_{train,val}.json

Construction (as the official Mask2Former script): every *stuff* class present in the semantic
map becomes one segment; then every instance of the instance map becomes a *thing* segment,
painted over the stuff (the two annotations overlap a little). ``category_id`` is the 0-based
ADE-150 id; json ``categories`` list all 150 classes with ``isthing``. Pixels of thing classes
that no instance covers, and unlabeled pixels, stay VOID.

Like the official script, ``area`` and ``bbox`` of a stuff segment are those of its whole
semantic region, measured before the things are painted over it, and a stuff segment that the
things cover entirely stays listed. PQ evaluation takes the ground-truth areas from the json,
so this is kept by default to reproduce the official numbers; ``--visible-areas`` measures
every segment on the final PNG instead and drops segments left without pixels. The only other
difference: segment colours come from a generator seeded by the image name, so the segment
ids are reproducible (the official script draws them from an unseeded RNG).

Needs neither panopticapi nor detectron2's compiled ops.

Example::

    python tools/datasets/prepare_ade20k_pan_seg.py --root datasets
"""
import argparse
import json
import os
import sys
import zlib
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:  # imported by file path (as the tests do) rather than run
    sys.path.insert(0, _HERE)
import _common  # noqa: E402


class ColorGenerator:
    """
    Picks a distinct RGB colour (hence a distinct segment id) for each segment of one image.

    Stuff segments take their class colour (each stuff class occurs at most once per image);
    the first instance of a thing class takes the class colour, later ones a random colour
    within +-30 of it per channel. Colours of stuff classes and black (VOID) are never given
    to things, as in panopticapi's IdGenerator.
    """

    def __init__(self, categories: Dict[int, Dict], seed: int):
        self.categories = categories
        self.rng = np.random.default_rng(seed)
        self.taken = {(0, 0, 0)}
        for c in categories.values():
            if not c["isthing"]:
                self.taken.add(tuple(c["color"]))

    def __call__(self, category_id: int) -> Tuple[int, int, int]:
        cat = self.categories[category_id]
        base = tuple(int(v) for v in cat["color"])
        if not cat["isthing"]:
            return base
        color = base
        while color in self.taken:
            jitter = self.rng.integers(-30, 31, size=3)
            color = tuple(int(v) for v in np.clip(np.asarray(base) + jitter, 0, 255))
        self.taken.add(color)
        return color


def color_to_id(color: Sequence[int]) -> int:
    return int(color[0]) + 256 * int(color[1]) + 256 * 256 * int(color[2])


def _segment(seg_id: int, category_id: int, mask: np.ndarray) -> Dict:
    area = int(mask.sum())
    bbox = _common.bbox_xywh(mask) if area else [0, 0, 0, 0]
    return {"id": seg_id, "category_id": category_id, "area": area, "bbox": bbox, "iscrowd": 0}


def build_panoptic(
    semantic: np.ndarray,
    instance: np.ndarray,
    categories: Dict[int, Dict],
    thing_ids: Sequence[int],
    seed: int,
    source: str = "",
    visible_areas: bool = False,
) -> Tuple[np.ndarray, List[Dict]]:
    """
    Panoptic PNG content and ``segments_info`` of one image.

    Args:
        semantic: (H, W) uint8 raw semantic labels (0 = unlabeled, k = ADE-150 id + 1).
        instance: (H, W, >=2) uint8 instance annotation (R: instance class 1..100 or 0,
            G: instance id, 0 = none).
        categories: ADE-150 id -> category dict (``isthing``, ``color``).
        thing_ids: ADE-150 id of instance class k at index k - 1.
        seed: seed of the colour generator.
        source: file name, for error messages.
        visible_areas: measure ``area``/``bbox`` on the final map and drop segments without
            pixels (default: measure each segment's mask when it is painted, as the official
            script).

    Returns:
        (H, W, 3) uint8 panoptic image and the list of segments (``id``, ``category_id``,
        ``area``, ``bbox`` [x, y, w, h], ``iscrowd`` 0), stuff first, then things.
    """
    if semantic.ndim != 2 or instance.ndim != 3 or semantic.shape != instance.shape[:2]:
        raise ValueError(
            f"{source}: semantic map {semantic.shape} and instance map {instance.shape} "
            "do not match."
        )
    colors = ColorGenerator(categories, seed)
    pan = np.zeros(semantic.shape, dtype=np.int64)
    segments = []

    sem_ids = semantic.astype(np.int64) - 1  # -1 = unlabeled
    for cat_id in np.unique(sem_ids):
        if cat_id < 0 or categories[int(cat_id)]["isthing"]:
            continue
        mask = sem_ids == cat_id
        seg_id = color_to_id(colors(int(cat_id)))
        pan[mask] = seg_id
        segments.append(_segment(seg_id, int(cat_id), mask))

    for mask, cat_id in _common.ade_instances(instance, thing_ids, source):
        seg_id = color_to_id(colors(cat_id))
        pan[mask] = seg_id
        segments.append(_segment(seg_id, int(cat_id), mask))

    if visible_areas:
        # things may have covered part or all of a stuff segment
        segments = [_segment(s["id"], s["category_id"], pan == s["id"]) for s in segments]
        segments = [s for s in segments if s["area"] > 0]

    rgb = np.stack([pan % 256, pan // 256 % 256, pan // (256 * 256)], axis=-1).astype(np.uint8)
    return rgb, segments


def convert_split(root: str, split: str, visible_areas: bool = False) -> int:
    """Convert one split ("train" or "val"); returns the number of images."""
    meta = _common.load_meta("ade20k")
    image_dir, semantic_dir, instance_dir = _common.ade_split_folders(
        root, split, "images", "annotations", "annotations_instance"
    )
    ade = os.path.join(root, "ADEChallengeData2016")
    out_dir = os.path.join(ade, f"ade20k_panoptic_{split}")
    out_json = os.path.join(ade, f"ade20k_panoptic_{split}.json")
    os.makedirs(out_dir, exist_ok=True)

    categories = [
        {"id": c["id"], "name": c["name"], "isthing": c["isthing"], "color": color}
        for c, color in zip(meta.ADE20K_150_CATEGORIES, meta.ADE20K_PANOPTIC_PALETTE)
    ]
    by_id = {c["id"]: c for c in categories}

    files = sorted(f for f in os.listdir(image_dir) if f.endswith(".jpg"))
    print(f"[{split}] {len(files)} images -> {out_dir}, {out_json}")
    images, annotations = [], []
    for file_name in _common.progress(files, len(files), f"[{split}] "):
        image = _common.ade_image_record(image_dir, file_name)
        image_id, width, height = image["id"], image["width"], image["height"]
        sem_file = os.path.join(semantic_dir, image_id + ".png")
        ins_file = os.path.join(instance_dir, image_id + ".png")
        for path in (sem_file, ins_file):
            if not os.path.isfile(path):
                raise FileNotFoundError(f"Annotation {path} of image {file_name} is missing.")
        semantic = np.asarray(Image.open(sem_file))
        instance = np.asarray(Image.open(ins_file))
        if semantic.shape != (height, width):
            raise ValueError(f"{sem_file}: size {semantic.shape} != image size {(height, width)}.")
        rgb, segments = build_panoptic(
            semantic,
            instance,
            by_id,
            meta.ADE20K_THING_IDS,
            zlib.crc32(image_id.encode()),
            ins_file,
            visible_areas,
        )
        Image.fromarray(rgb).save(os.path.join(out_dir, image_id + ".png"))
        images.append(image)
        annotations.append(
            {"image_id": image_id, "file_name": image_id + ".png", "segments_info": segments}
        )

    with open(out_json, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    return len(files)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = _common.make_parser(__doc__, "ADEChallengeData2016/", ["train", "val"])
    parser.add_argument(
        "--visible-areas",
        action="store_true",
        help="measure segment areas/boxes on the final PNG and drop segments without pixels "
        "(default: as the official script, see the module docstring)",
    )
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    calls = [(args.root, split, args.visible_areas) for split in args.splits]
    return _common.run(convert_split, calls)


if __name__ == "__main__":
    sys.exit(main())
