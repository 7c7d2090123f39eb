"""
ADE20K (SceneParsing 150) category tables.

Conventions:

* "ADE-150 id" = 0-based index into the 150-class list, i.e. the value in the
  ``annotations_detectron2`` PNGs (raw ``annotations`` PNGs store it + 1, 0 = unlabeled).
  The panoptic json written by ``tools/datasets/prepare_ade20k_pan_seg.py`` and the instance
  json written by ``tools/datasets/prepare_ade20k_ins_seg.py`` use it as ``category_id``.
* "ADE instance id" = 1-based class index of the ADE20K instance challenge (100 classes): the
  R channel of the ``annotations_instance`` PNGs. The instance classes are a subset of the 150
  classes, in increasing ADE-150 id order, so instance id ``k`` is
  ``ADE20K_THING_IDS[k - 1]``.
"""
from typing import Dict, List

from detectron2.data.datasets.builtin_meta import ADE20K_SEM_SEG_CATEGORIES

__all__ = [
    "ADE20K_150_COLORS",
    "ADE20K_THING_IDS",
    "ADE20K_INSTANCE_CLASSES",
    "ADE20K_150_CATEGORIES",
    "ADE20K_PANOPTIC_PALETTE",
]

# Colour of each ADE-150 class (the palette of the ADE20K toolkit), index = ADE-150 id.
ADE20K_150_COLORS: List[List[int]] = [
    [120, 120, 120], [180, 120, 120], [6, 230, 230], [80, 50, 50], [4, 200, 3],
    [120, 120, 80], [140, 140, 140], [204, 5, 255], [230, 230, 230], [4, 250, 7],
    [224, 5, 255], [235, 255, 7], [150, 5, 61], [120, 120, 70], [8, 255, 51],
    [255, 6, 82], [143, 255, 140], [204, 255, 4], [255, 51, 7], [204, 70, 3],
    [0, 102, 200], [61, 230, 250], [255, 6, 51], [11, 102, 255], [255, 7, 71],
    [255, 9, 224], [9, 7, 230], [220, 220, 220], [255, 9, 92], [112, 9, 255],
    [8, 255, 214], [7, 255, 224], [255, 184, 6], [10, 255, 71], [255, 41, 10],
    [7, 255, 255], [224, 255, 8], [102, 8, 255], [255, 61, 6], [255, 194, 7],
    [255, 122, 8], [0, 255, 20], [255, 8, 41], [255, 5, 153], [6, 51, 255],
    [235, 12, 255], [160, 150, 20], [0, 163, 255], [140, 140, 140], [250, 10, 15],
    [20, 255, 0], [31, 255, 0], [255, 31, 0], [255, 224, 0], [153, 255, 0],
    [0, 0, 255], [255, 71, 0], [0, 235, 255], [0, 173, 255], [31, 0, 255],
    [11, 200, 200], [255, 82, 0], [0, 255, 245], [0, 61, 255], [0, 255, 112],
    [0, 255, 133], [255, 0, 0], [255, 163, 0], [255, 102, 0], [194, 255, 0],
    [0, 143, 255], [51, 255, 0], [0, 82, 255], [0, 255, 41], [0, 255, 173],
    [10, 0, 255], [173, 255, 0], [0, 255, 153], [255, 92, 0], [255, 0, 255],
    [255, 0, 245], [255, 0, 102], [255, 173, 0], [255, 0, 20], [255, 184, 184],
    [0, 31, 255], [0, 255, 61], [0, 71, 255], [255, 0, 204], [0, 255, 194],
    [0, 255, 82], [0, 10, 255], [0, 112, 255], [51, 0, 255], [0, 194, 255],
    [0, 122, 255], [0, 255, 163], [255, 153, 0], [0, 255, 10], [255, 112, 0],
    [143, 255, 0], [82, 0, 255], [163, 255, 0], [255, 235, 0], [8, 184, 170],
    [133, 0, 255], [0, 255, 92], [184, 0, 255], [255, 0, 31], [0, 184, 255],
    [0, 214, 255], [255, 0, 112], [92, 255, 0], [0, 224, 255], [112, 224, 255],
    [70, 184, 160], [163, 0, 255], [153, 0, 255], [71, 255, 0], [255, 0, 163],
    [255, 204, 0], [255, 0, 143], [0, 255, 235], [133, 255, 0], [255, 0, 235],
    [245, 0, 255], [255, 0, 122], [255, 245, 0], [10, 190, 212], [214, 255, 0],
    [0, 204, 255], [20, 0, 255], [255, 255, 0], [0, 153, 255], [0, 41, 255],
    [0, 255, 204], [41, 0, 255], [41, 255, 0], [173, 0, 255], [0, 245, 255],
    [71, 0, 255], [122, 0, 255], [0, 255, 184], [0, 92, 255], [184, 255, 0],
    [0, 133, 255], [255, 214, 0], [25, 194, 194], [102, 255, 0], [92, 0, 255],
]  # fmt: skip

# ADE-150 ids of the 100 "thing" classes, which are exactly the classes of the ADE20K instance
# challenge (mapping instance id k -> ADE-150 id ADE20K_THING_IDS[k - 1]).
ADE20K_THING_IDS: List[int] = [
    7, 8, 10, 12, 14, 15, 18, 19, 20, 22, 23, 24, 27, 30, 31, 32, 33, 35, 36, 37,
    38, 39, 41, 42, 43, 44, 45, 47, 49, 50, 53, 55, 56, 57, 58, 62, 64, 65, 66, 67,
    69, 70, 71, 72, 73, 74, 75, 76, 78, 80, 81, 82, 83, 85, 86, 87, 88, 89, 90, 92,
    93, 95, 97, 98, 102, 103, 104, 107, 108, 110, 111, 112, 115, 116, 118, 119, 120, 121, 123,
    124, 125, 126, 127, 129, 130, 132, 133, 134, 135, 136, 137, 138, 139, 142, 143, 144, 146, 147,
    148, 149,
]  # fmt: skip

# Class names of the ADE20K instance challenge, in instance-id order (parallel to
# ADE20K_THING_IDS). These short names, not the 150-class names, are the ``categories`` of the
# instance json, and detectron2's load_coco_json checks ``thing_classes`` against them.
ADE20K_INSTANCE_CLASSES: List[str] = [
    "bed", "windowpane", "cabinet", "person", "door", "table", "curtain", "chair", "car",
    "painting", "sofa", "shelf", "mirror", "armchair", "seat", "fence", "desk", "wardrobe",
    "lamp", "bathtub", "railing", "cushion", "box", "column", "signboard", "chest of drawers",
    "counter", "sink", "fireplace", "refrigerator", "stairs", "case", "pool table", "pillow",
    "screen door", "bookcase", "coffee table", "toilet", "flower", "book", "bench", "countertop",
    "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "arcade machine",
    "bus", "towel", "light", "truck", "chandelier", "awning", "streetlight", "booth",
    "television receiver", "airplane", "apparel", "pole", "bannister", "ottoman", "bottle",
    "van", "ship", "fountain", "washer", "plaything", "stool", "barrel", "basket", "bag",
    "minibike", "oven", "ball", "food", "step", "trade name", "microwave", "pot", "animal",
    "bicycle", "dishwasher", "screen", "sculpture", "hood", "sconce", "vase", "traffic light",
    "tray", "ashcan", "fan", "plate", "monitor", "bulletin board", "radiator", "glass", "clock",
    "flag",
]  # fmt: skip

_THING_ID_SET = frozenset(ADE20K_THING_IDS)

# The 150 classes in COCO-panoptic category format, index = id = ADE-150 id.
ADE20K_150_CATEGORIES: List[Dict] = [
    {"id": i, "name": name, "isthing": int(i in _THING_ID_SET), "color": ADE20K_150_COLORS[i]}
    for i, name in enumerate(ADE20K_SEM_SEG_CATEGORIES)
]

# Base colours for painting panoptic PNGs. Same as ADE20K_150_COLORS except "skyscraper"
# (id 48), whose palette colour repeats the one of "road, route" (id 6): two stuff segments of
# one image would otherwise get the same RGB value, i.e. the same segment id. The official
# preparation script uses [140, 140, 200] for it; so do we, to write identical PNGs.
ADE20K_PANOPTIC_PALETTE: List[List[int]] = [
    [140, 140, 200] if i == 48 else c for i, c in enumerate(ADE20K_150_COLORS)
]

assert len(ADE20K_150_COLORS) == len(ADE20K_SEM_SEG_CATEGORIES) == 150
assert len(ADE20K_THING_IDS) == len(ADE20K_INSTANCE_CLASSES) == 100
