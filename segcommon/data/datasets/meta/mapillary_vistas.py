"""
Mapillary Vistas v1.2 category table (65 evaluated classes, 37 of them things).

Conventions:

* Semantic label PNGs (``{split}/labels/*.png``) store the 0-based index into this table;
  65 is "unlabeled" (the 66th class of the release, not evaluated) and is the ignore label.
* The panoptic json (``{split}/panoptic/panoptic_2018.json``) uses 1-based category ids, i.e.
  ``id = index + 1``.
"""
from typing import Dict, List

__all__ = ["MAPILLARY_VISTAS_CATEGORIES"]

# (readable name, dataset name, colour, isthing), in label order.
_TABLE = [
    ("Bird", "animal--bird", [165, 42, 42], 1),
    ("Ground Animal", "animal--ground-animal", [0, 192, 0], 1),
    ("Curb", "construction--barrier--curb", [196, 196, 196], 0),
    ("Fence", "construction--barrier--fence", [190, 153, 153], 0),
    ("Guard Rail", "construction--barrier--guard-rail", [180, 165, 180], 0),
    ("Barrier", "construction--barrier--other-barrier", [90, 120, 150], 0),
    ("Wall", "construction--barrier--wall", [102, 102, 156], 0),
    ("Bike Lane", "construction--flat--bike-lane", [128, 64, 255], 0),
    ("Crosswalk - Plain", "construction--flat--crosswalk-plain", [140, 140, 200], 1),
    ("Curb Cut", "construction--flat--curb-cut", [170, 170, 170], 0),
    ("Parking", "construction--flat--parking", [250, 170, 160], 0),
    ("Pedestrian Area", "construction--flat--pedestrian-area", [96, 96, 96], 0),
    ("Rail Track", "construction--flat--rail-track", [230, 150, 140], 0),
    ("Road", "construction--flat--road", [128, 64, 128], 0),
    ("Service Lane", "construction--flat--service-lane", [110, 110, 110], 0),
    ("Sidewalk", "construction--flat--sidewalk", [244, 35, 232], 0),
    ("Bridge", "construction--structure--bridge", [150, 100, 100], 0),
    ("Building", "construction--structure--building", [70, 70, 70], 0),
    ("Tunnel", "construction--structure--tunnel", [150, 120, 90], 0),
    ("Person", "human--person", [220, 20, 60], 1),
    ("Bicyclist", "human--rider--bicyclist", [255, 0, 0], 1),
    ("Motorcyclist", "human--rider--motorcyclist", [255, 0, 100], 1),
    ("Other Rider", "human--rider--other-rider", [255, 0, 200], 1),
    ("Lane Marking - Crosswalk", "marking--crosswalk-zebra", [200, 128, 128], 1),
    ("Lane Marking - General", "marking--general", [255, 255, 255], 0),
    ("Mountain", "nature--mountain", [64, 170, 64], 0),
    ("Sand", "nature--sand", [230, 160, 50], 0),
    ("Sky", "nature--sky", [70, 130, 180], 0),
    ("Snow", "nature--snow", [190, 255, 255], 0),
    ("Terrain", "nature--terrain", [152, 251, 152], 0),
    ("Vegetation", "nature--vegetation", [107, 142, 35], 0),
    ("Water", "nature--water", [0, 170, 30], 0),
    ("Banner", "object--banner", [255, 255, 128], 1),
    ("Bench", "object--bench", [250, 0, 30], 1),
    ("Bike Rack", "object--bike-rack", [100, 140, 180], 1),
    ("Billboard", "object--billboard", [220, 220, 220], 1),
    ("Catch Basin", "object--catch-basin", [220, 128, 128], 1),
    ("CCTV Camera", "object--cctv-camera", [222, 40, 40], 1),
    ("Fire Hydrant", "object--fire-hydrant", [100, 170, 30], 1),
    ("Junction Box", "object--junction-box", [40, 40, 40], 1),
    ("Mailbox", "object--mailbox", [33, 33, 33], 1),
    ("Manhole", "object--manhole", [100, 128, 160], 1),
    ("Phone Booth", "object--phone-booth", [142, 0, 0], 1),
    ("Pothole", "object--pothole", [70, 100, 150], 0),
    ("Street Light", "object--street-light", [210, 170, 100], 1),
    ("Pole", "object--support--pole", [153, 153, 153], 1),
    ("Traffic Sign Frame", "object--support--traffic-sign-frame", [128, 128, 128], 1),
    ("Utility Pole", "object--support--utility-pole", [0, 0, 80], 1),
    ("Traffic Light", "object--traffic-light", [250, 170, 30], 1),
    ("Traffic Sign (Back)", "object--traffic-sign--back", [192, 192, 192], 1),
    ("Traffic Sign (Front)", "object--traffic-sign--front", [220, 220, 0], 1),
    ("Trash Can", "object--trash-can", [140, 140, 20], 1),
    ("Bicycle", "object--vehicle--bicycle", [119, 11, 32], 1),
    ("Boat", "object--vehicle--boat", [150, 0, 255], 1),
    ("Bus", "object--vehicle--bus", [0, 60, 100], 1),
    ("Car", "object--vehicle--car", [0, 0, 142], 1),
    ("Caravan", "object--vehicle--caravan", [0, 0, 90], 1),
    ("Motorcycle", "object--vehicle--motorcycle", [0, 0, 230], 1),
    ("On Rails", "object--vehicle--on-rails", [0, 80, 100], 0),
    ("Other Vehicle", "object--vehicle--other-vehicle", [128, 64, 64], 1),
    ("Trailer", "object--vehicle--trailer", [0, 0, 110], 1),
    ("Truck", "object--vehicle--truck", [0, 0, 70], 1),
    ("Wheeled Slow", "object--vehicle--wheeled-slow", [0, 0, 192], 1),
    ("Car Mount", "void--car-mount", [32, 32, 32], 0),
    ("Ego Vehicle", "void--ego-vehicle", [120, 10, 10], 0),
]

# COCO-panoptic style entries: "id" is the panoptic json id (label + 1), "name" the readable
# name (what the official metadata shows), "supercategory" the dataset's hierarchical name.
MAPILLARY_VISTAS_CATEGORIES: List[Dict] = [
    {"id": i + 1, "name": readable, "supercategory": name, "color": color, "isthing": isthing}
    for i, (readable, name, color, isthing) in enumerate(_TABLE)
]

assert len(MAPILLARY_VISTAS_CATEGORIES) == 65
assert sum(c["isthing"] for c in MAPILLARY_VISTAS_CATEGORIES) == 37
