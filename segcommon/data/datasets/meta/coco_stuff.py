"""
COCO-Stuff category table: 171 classes = the 80 COCO thing classes (ids 1..90 with gaps) and
the 91 stuff classes (ids 92..182), in id order. The contiguous id of a class is its index in
:data:`COCO_STUFF_CATEGORIES`; the ``annotations_detectron2`` PNGs of COCO-Stuff-10k store it
(255 = unlabeled).
"""
from typing import Dict, List

from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

__all__ = ["COCO_STUFF_CATEGORIES"]

# Stuff class names of COCO-Stuff, ids 92, 93, ..., 182 (no gaps).
_STUFF_NAMES = [
    "banner", "blanket", "branch", "bridge", "building-other", "bush", "cabinet", "cage",
    "cardboard", "carpet", "ceiling-other", "ceiling-tile", "cloth", "clothes", "clouds",
    "counter", "cupboard", "curtain", "desk-stuff", "dirt", "door-stuff", "fence",
    "floor-marble", "floor-other", "floor-stone", "floor-tile", "floor-wood", "flower", "fog",
    "food-other", "fruit", "furniture-other", "grass", "gravel", "ground-other", "hill",
    "house", "leaves", "light", "mat", "metal", "mirror-stuff", "moss", "mountain", "mud",
    "napkin", "net", "paper", "pavement", "pillow", "plant-other", "plastic", "platform",
    "playingfield", "railing", "railroad", "river", "road", "rock", "roof", "rug", "salad",
    "sand", "sea", "shelf", "sky-other", "skyscraper", "snow", "solid-other", "stairs",
    "stone", "straw", "structural-other", "table", "tent", "textile-other", "towel", "tree",
    "vegetable", "wall-brick", "wall-concrete", "wall-other", "wall-panel", "wall-stone",
    "wall-tile", "wall-wood", "water-other", "waterdrops", "window-blind", "window-other",
    "wood",
]  # fmt: skip

# The thing entries are taken from detectron2's COCO (panoptic) table, whose first 80 entries
# are the thing classes with their standard ids and colours. Stuff classes have no standard
# colour here (the visualizer picks random ones).
COCO_STUFF_CATEGORIES: List[Dict] = [
    {"id": c["id"], "name": c["name"], "isthing": 1, "color": c["color"]}
    for c in COCO_CATEGORIES
    if c["isthing"] == 1
] + [{"id": 92 + i, "name": name, "isthing": 0} for i, name in enumerate(_STUFF_NAMES)]

assert len(_STUFF_NAMES) == 91
assert len(COCO_STUFF_CATEGORIES) == 171
