"""
A small, deterministic, synthetic ("toy") segmentation dataset.

Every image shows 1-6 convex shapes (the *thing* classes: circle, square, triangle) painted in
z-order over a background made of 2-3 textured *stuff* regions (sky, ground, wall). Each class
has its own two colour families (jittered per object), so colour and shape both tell the class
apart, while separating touching objects of one class still takes their outlines.

The same scene is written in the three annotation formats the project's models train on:

* COCO instances (``{split}/instances.json``): things only, ``segmentation`` as a list of
  polygons. Polygon vertices lie on pixel *corners* (pixel ``(x, y)`` covers ``[x, x+1] x
  [y, y+1]``), so rasterising them with pycocotools gives back exactly the visible pixels.
* COCO panoptic (``{split}/panoptic.json`` + ``{split}/panoptic/NNNNNN.png``): one segment per
  object and one per stuff class present; the PNG stores ``id = R + 256 * G + 256**2 * B`` and
  0 (VOID) on a thin border around the image.
* semantic (``{split}/semantic/NNNNNN.png``): uint8 contiguous labels over
  ``[things..., stuff...]`` (the order of :data:`TOY_CATEGORIES`), 255 where the panoptic map
  is VOID.

Category ids start at 1 and are not contiguous (1, 2, 4, 7, 8, 11), to exercise the
dataset-id -> contiguous-id mappings.

Registered names (see :func:`register_toy_datasets`): ``toy_instance_{train,val}``,
``toy_panoptic_{train,val}`` and ``toy_sem_seg_{train,val}``.
"""
import json
import logging
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image
from pycocotools import mask as mask_util
from scipy import ndimage

from detectron2.data.datasets.coco import load_coco_json

from ._common import file_lock, register_dataset, write_json

__all__ = [
    "TOY_CATEGORIES",
    "generate_toy_dataset",
    "register_toy_datasets",
    "register_all_toy",
    "get_toy_metadata",
    "load_toy_panoptic_json",
    "load_toy_sem_seg",
]

logger = logging.getLogger(__name__)

# Things first, then stuff: the list order is the contiguous-id order used everywhere
# (semantic PNGs, ``stuff_classes``, panoptic ``segments_info`` after loading).
TOY_CATEGORIES: List[Dict] = [
    {"id": 1, "name": "circle", "isthing": 1, "color": [220, 20, 60], "supercategory": "shape"},
    {"id": 2, "name": "square", "isthing": 1, "color": [0, 130, 200], "supercategory": "shape"},
    {"id": 4, "name": "triangle", "isthing": 1, "color": [250, 190, 0], "supercategory": "shape"},
    {"id": 7, "name": "sky", "isthing": 0, "color": [135, 206, 235], "supercategory": "scene"},
    {"id": 8, "name": "ground", "isthing": 0, "color": [110, 80, 40], "supercategory": "scene"},
    {"id": 11, "name": "wall", "isthing": 0, "color": [150, 150, 150], "supercategory": "scene"},
]

_SPLITS = ("train", "val")
# Files the loaders read; the marker is written last, so its presence means "complete".
_MARKER = "toy_dataset.json"
# Default split sizes. 64 training images were too few: a from-scratch Mask2Former reached
# 97 mIoU on them but only ~52 on val (shapes memorised, not learned); 1000 generalise.
DEFAULT_NUM_TRAIN = 1000
DEFAULT_NUM_VAL = 100
# Bumped whenever the default dataset changes, so stale copies are regenerated on first use
# (2: 1000 + 100 images; 3: class-specific object colours).
_DEFAULT_VERSION = 3
# Width (px) of the VOID frame around each image. Objects are kept strictly inside it, so the
# instance polygons never cover VOID pixels.
_VOID_BORDER = 2
# Placement constraints on each object's *visible* (unoccluded) mask.
_MIN_VISIBLE_FRACTION = 0.3
_MIN_VISIBLE_PIXELS = 16
_MIN_PART_PIXELS = 6
_MAX_OBJECTS = 6

_THING_IDS = [c["id"] for c in TOY_CATEGORIES if c["isthing"]]
_STUFF_IDS = [c["id"] for c in TOY_CATEGORIES if not c["isthing"]]
_CONTIGUOUS = {c["id"]: i for i, c in enumerate(TOY_CATEGORIES)}
_CIRCLE, _SQUARE, _TRIANGLE = _THING_IDS
_SKY, _GROUND, _WALL = _STUFF_IDS

# Object colours: two families per thing class (jittered by +-25 per channel and object). Version
# 2 drew one palette for all classes, so only shape told them apart; from-scratch CPU models did
# not learn that within their budgets (an R18 classifier on centred object crops reached 78% after
# 600 steps of batch 32, and the segmenters' shape IoUs stayed near chance after 1500 steps).
_CLASS_PALETTES = {
    _CIRCLE: np.array([[220, 40, 40], [200, 60, 200]], dtype=np.float32),  # red, magenta
    _SQUARE: np.array([[50, 80, 220], [40, 170, 170]], dtype=np.float32),  # blue, teal
    _TRIANGLE: np.array([[240, 220, 50], [240, 140, 30]], dtype=np.float32),  # yellow, orange
}


# ----------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------
def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """
    Value noise in [-1, 1] with feature size ~``cell`` px: a coarse random grid, bilinearly
    interpolated at pixel centres (pure numpy, so it is deterministic everywhere).

    Returns:
        ndarray[float32] of shape (h, w).
    """
    gh, gw = int(np.ceil(h / cell)) + 2, int(np.ceil(w / cell)) + 2
    grid = rng.uniform(-1.0, 1.0, size=(gh, gw)).astype(np.float32)
    ys = (np.arange(h, dtype=np.float32) + 0.5) / cell
    xs = (np.arange(w, dtype=np.float32) + 0.5) / cell
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    # smoothstep weights hide the grid's bilinear creases
    fy, fx = fy * fy * (3 - 2 * fy), fx * fx * (3 - 2 * fx)
    g00 = grid[y0][:, x0]
    g01 = grid[y0][:, x0 + 1]
    g10 = grid[y0 + 1][:, x0]
    g11 = grid[y0 + 1][:, x0 + 1]
    return (g00 * (1 - fx) + g01 * fx) * (1 - fy) + (g10 * (1 - fx) + g11 * fx) * fy


def _stuff_layout(rng: np.random.Generator, s: int) -> np.ndarray:
    """
    Returns:
        ndarray[int64] (s, s) of stuff *dataset* ids: a wavy horizon splits sky (or an indoor
        wall) from the ground; outdoor scenes sometimes get a building wall on one side.
    """
    xs = np.arange(s, dtype=np.float64) + 0.5
    ys = (np.arange(s, dtype=np.float64) + 0.5)[:, None]
    layout = rng.choice(3, p=[0.4, 0.35, 0.25])  # 0: sky+ground, 1: +wall block, 2: indoor
    if layout == 2:
        # indoor: a nearly straight floor line, gently tilted
        horizon = s * rng.uniform(0.35, 0.6) + s * rng.uniform(-0.08, 0.08) * (xs / s - 0.5)
    else:
        amp = s * rng.uniform(0.02, 0.07)
        horizon = (
            s * rng.uniform(0.3, 0.6)
            + amp * np.sin(2 * np.pi * rng.uniform(0.5, 2.0) * xs / s + rng.uniform(0, 2 * np.pi))
            + 0.4 * amp * np.sin(2 * np.pi * rng.uniform(2.0, 4.0) * xs / s + rng.uniform(0, 6.3))
        )
    above = ys < horizon[None, :]
    stuff = np.where(above, _WALL if layout == 2 else _SKY, _GROUND).astype(np.int64)
    if layout == 1:
        # a building standing on the ground on one side, its top well below the image top
        width = s * rng.uniform(0.2, 0.45)
        top = s * rng.uniform(0.05, 0.3)
        in_x = xs < width if rng.random() < 0.5 else xs > s - width
        stuff[above & in_x[None, :] & (ys > top)] = _WALL
    return stuff


def _render_background(rng: np.random.Generator, stuff: np.ndarray) -> np.ndarray:
    """
    Paint each stuff region with its own texture.

    Returns:
        ndarray[float32] (s, s, 3) RGB in [0, 255] (not yet clipped).
    """
    s = stuff.shape[0]
    ys = (np.arange(s, dtype=np.float32)[:, None] + 0.5) / s
    img = np.zeros((s, s, 3), dtype=np.float32)

    # sky: vertical gradient + soft clouds, little pixel noise
    top = np.array([40, 100, 200], np.float32) + rng.uniform(-20, 20, 3).astype(np.float32)
    bottom = np.array([170, 210, 240], np.float32) + rng.uniform(-15, 15, 3).astype(np.float32)
    sky = top[None, None] * (1 - ys[..., None]) + bottom[None, None] * ys[..., None]
    clouds = np.clip(_smooth_noise(rng, s, s, s / 5) * 1.6 - 0.4, 0, 1)[..., None]
    sky = sky * (1 - 0.7 * clouds) + 245 * 0.7 * clouds
    sky += rng.normal(0, 2, (s, s, 1)).astype(np.float32)

    # ground: grass or soil, strong high-frequency grain over mid-frequency blotches
    if rng.random() < 0.5:
        base = np.array([70, 130, 50], np.float32)
    else:
        base = np.array([125, 95, 60], np.float32)
    base = base + rng.uniform(-15, 15, 3).astype(np.float32)
    ground = base[None, None] + 25 * _smooth_noise(rng, s, s, s / 10)[..., None]
    ground += rng.normal(0, 18, (s, s, 1)).astype(np.float32)

    # wall: bricks with mortar lines, each brick slightly different
    bh = max(4, s // 16)
    bw = 2 * bh
    if rng.random() < 0.5:
        brick = np.array([160, 70, 55], np.float32)
    else:
        brick = np.array([140, 140, 135], np.float32)
    brick = brick + rng.uniform(-15, 15, 3).astype(np.float32)
    yy, xx = np.mgrid[0:s, 0:s]
    row = yy // bh
    shifted = xx + (row % 2) * (bw // 2)
    brick_id = row * (s // bw + 2) + shifted // bw
    jitter = rng.uniform(-20, 20, size=int(brick_id.max()) + 1).astype(np.float32)
    wall = brick[None, None] + jitter[brick_id][..., None]
    mortar = (yy % bh == 0) | (shifted % bw == 0)
    wall[mortar] = 200
    wall += rng.normal(0, 6, (s, s, 1)).astype(np.float32)

    for sid, tex in ((_SKY, sky), (_GROUND, ground), (_WALL, wall)):
        region = stuff == sid
        img[region] = tex[region]
    return img


def _shape_mask(cls: int, cx: float, cy: float, r: float, theta: float, s: int) -> np.ndarray:
    """
    Rasterise one shape at pixel centres.

    Args:
        cls: thing dataset id.
        cx, cy: centre in pixel-corner coordinates.
        r: nominal radius (px); squares and triangles are scaled to roughly the circle's area.
        theta: rotation (radians).

    Returns:
        ndarray[bool] (s, s).
    """
    ys, xs = np.mgrid[0:s, 0:s].astype(np.float64) + 0.5
    dx, dy = xs - cx, ys - cy
    if cls == _CIRCLE:
        return dx * dx + dy * dy <= r * r
    c, sn = np.cos(theta), np.sin(theta)
    u, v = c * dx + sn * dy, -sn * dx + c * dy
    if cls == _SQUARE:
        a = 0.9 * r
        return (np.abs(u) <= a) & (np.abs(v) <= a)
    assert cls == _TRIANGLE, cls
    # equilateral triangle with circumradius R: inside all three edge half-planes, whose
    # outward normals are at angles 90 + k * 120 degrees and which lie R / 2 from the centre
    big_r = 1.45 * r
    inside = np.ones_like(u, dtype=bool)
    for k in range(3):
        ang = np.pi / 2 + k * 2 * np.pi / 3
        inside &= u * np.cos(ang) + v * np.sin(ang) <= big_r / 2
    return inside


# ----------------------------------------------------------------------------------------------
# Masks <-> polygons
# ----------------------------------------------------------------------------------------------
def mask_to_polygons(mask: np.ndarray) -> List[List[float]]:
    """
    Trace the outline of a binary mask along pixel edges.

    Pixel ``(x, y)`` is the square ``[x, x+1] x [y, y+1]``; every returned vertex is such a
    corner, so pycocotools rasterises the polygons back to exactly ``mask`` provided the mask
    has no holes (a hole would come back as a separate counter-clockwise loop, and COCO
    polygons cannot subtract).

    Where two pixels touch only diagonally the trace takes the right turn, i.e. it hugs the
    interior, so each 4-connected part becomes its own polygon.

    Args:
        mask: ndarray[bool] (H, W).

    Returns:
        list of flat polygons ``[x0, y0, x1, y1, ...]`` (floats), clockwise on screen,
        redundant collinear vertices removed.
    """
    m = np.pad(mask.astype(bool), 1)
    inner = m[1:-1, 1:-1]
    # Directed boundary edges with the interior on their right (screen coords, y down).
    # Each entry: (start_x, start_y, dir_x, dir_y) for unit edges.
    edges = []
    for sel, off, d in (
        (inner & ~m[:-2, 1:-1], (0, 0), (1, 0)),  # top edge, heading +x
        (inner & ~m[1:-1, 2:], (1, 0), (0, 1)),  # right edge, heading +y
        (inner & ~m[2:, 1:-1], (1, 1), (-1, 0)),  # bottom edge, heading -x
        (inner & ~m[1:-1, :-2], (0, 1), (0, -1)),  # left edge, heading -y
    ):
        ys, xs = np.nonzero(sel)
        for x, y in zip(xs.tolist(), ys.tolist()):
            edges.append((x + off[0], y + off[1], d[0], d[1]))
    if not edges:
        return []

    outgoing: Dict[Tuple[int, int], List[int]] = {}
    for i, (x, y, _, _) in enumerate(edges):
        outgoing.setdefault((x, y), []).append(i)

    def successor(i: int) -> int:
        x, y, dx, dy = edges[i]
        cands = outgoing[(x + dx, y + dy)]
        if len(cands) == 1:
            return cands[0]
        # diagonal pinch: take the right turn, (dx, dy) -> (-dy, dx)
        for j in cands:
            if (edges[j][2], edges[j][3]) == (-dy, dx):
                return j
        raise AssertionError("inconsistent pixel boundary")

    visited = [False] * len(edges)
    polygons = []
    for start in range(len(edges)):
        if visited[start]:
            continue
        loop = []
        i = start
        while not visited[i]:
            visited[i] = True
            loop.append(i)
            i = successor(i)
        poly: List[float] = []
        for k, i in enumerate(loop):
            prev = edges[loop[k - 1]]
            x, y, dx, dy = edges[i]
            if (prev[2], prev[3]) != (dx, dy):  # keep corners only
                poly.extend((float(x), float(y)))
        polygons.append(poly)
    return polygons


def _polygons_to_mask(polygons: Sequence[Sequence[float]], h: int, w: int) -> np.ndarray:
    """Rasterise COCO polygons exactly as ``pycocotools.coco.COCO.annToMask`` does."""
    rles = mask_util.frPyObjects([list(p) for p in polygons], h, w)
    return mask_util.decode(mask_util.merge(rles)).astype(bool)


def _visible_ok(visible: np.ndarray, full_area: int) -> bool:
    """Whether an object's visible mask is large enough and representable as COCO polygons."""
    area = int(visible.sum())
    if area < max(_MIN_VISIBLE_PIXELS, _MIN_VISIBLE_FRACTION * full_area):
        return False
    # Hole filling with 4-connected background also rejects background pockets closed only
    # by diagonal pixel contacts, which the tracer would not represent.
    if not np.array_equal(ndimage.binary_fill_holes(visible), visible):
        return False
    parts, n = ndimage.label(visible)
    if n > 1 and np.bincount(parts.ravel())[1:].min() < _MIN_PART_PIXELS:
        return False
    h, w = visible.shape
    return np.array_equal(_polygons_to_mask(mask_to_polygons(visible), h, w), visible)


def _bbox_xywh(mask: np.ndarray) -> List[float]:
    """Tight XYWH box (pixel-corner coordinates) of a non-empty mask."""
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    return [float(x0), float(y0), float(xs.max() + 1 - x0), float(ys.max() + 1 - y0)]


# ----------------------------------------------------------------------------------------------
# Scene generation
# ----------------------------------------------------------------------------------------------
def _place_objects(rng: np.random.Generator, s: int) -> List[Dict]:
    """
    Sample 1-6 objects back to front. A candidate is rejected if it would touch the VOID
    border, or would leave itself or any object below it with a visible mask that is too
    small, has a hole, has a tiny fragment, or does not rasterise back exactly from its
    polygons. After a bounded number of tries the image keeps fewer objects (never none).

    Returns:
        list of dicts (back to front) with "category_id", "color" (float32 (3,)), "full" and
        "visible" (bool (s, s) masks before / after occlusion by the objects in front).
    """
    interior = np.zeros((s, s), dtype=bool)
    interior[_VOID_BORDER : s - _VOID_BORDER, _VOID_BORDER : s - _VOID_BORDER] = True
    r_min, r_max = max(3.0, 0.07 * s), max(4.0, 0.18 * s)

    objects: List[Dict] = []
    visible: List[np.ndarray] = []
    n_target = int(rng.integers(1, _MAX_OBJECTS + 1))
    tries = 0
    while len(objects) < n_target and (tries < 15 * n_target or not objects):
        tries += 1
        if tries > 1000:
            raise RuntimeError(f"Cannot place any object in a {s}x{s} image")
        cls = _THING_IDS[int(rng.integers(len(_THING_IDS)))]
        r = rng.uniform(r_min, r_max)
        lo, hi = _VOID_BORDER + 0.6 * r, s - _VOID_BORDER - 0.6 * r
        cx, cy = rng.uniform(lo, hi, size=2)
        theta = rng.uniform(0, 2 * np.pi)
        palette = _CLASS_PALETTES[cls]
        color = palette[int(rng.integers(len(palette)))] + rng.uniform(
            -25, 25, 3
        ).astype(np.float32)
        full = _shape_mask(cls, cx, cy, r, theta, s)
        # Sampling a sharp corner at pixel centres can leave pixels attached only diagonally;
        # keep the main 4-connected body so every unoccluded object is one clean polygon.
        parts, n = ndimage.label(full)
        if n > 1:
            full = parts == 1 + int(np.argmax(np.bincount(parts.ravel())[1:]))
        if (full & ~interior).any() or not _visible_ok(full, int(full.sum())):
            continue
        new_visible = [v & ~full for v in visible]
        if all(
            nv.sum() == v.sum() or _visible_ok(nv, int(o["full"].sum()))
            for nv, v, o in zip(new_visible, visible, objects)
        ):
            objects.append({"category_id": cls, "full": full, "color": color})
            visible = new_visible + [full]
    for o, v in zip(objects, visible):
        o["visible"] = v
    return objects


def _make_sample(rng: np.random.Generator, s: int) -> Dict:
    """
    Generate one image with all its annotations.

    Returns:
        dict with "image" (uint8 (s, s, 3)), "pan" (int64 (s, s) segment ids, 0 = VOID),
        "sem" (uint8 (s, s)), "segments" (list of dicts: id, category_id, iscrowd, bbox, area
        and, for things, "polygons").
    """
    stuff = _stuff_layout(rng, s)
    img = _render_background(rng, stuff)
    objects = _place_objects(rng, s)

    ys = (np.arange(s, dtype=np.float32)[:, None] + 0.5) / s
    xs = (np.arange(s, dtype=np.float32)[None, :] + 0.5) / s
    for o in objects:  # back to front: later objects overwrite earlier ones
        # a random linear shading makes objects look lit rather than flat
        gx, gy = rng.uniform(-40, 40, 2).astype(np.float32)
        shade = gx * (xs - 0.5) + gy * (ys - 0.5)
        tex = o["color"][None, None] + shade[..., None]
        tex = tex + rng.normal(0, 5, (s, s, 1)).astype(np.float32)
        img[o["full"]] = tex[o["full"]]
    image = np.clip(np.rint(img), 0, 255).astype(np.uint8)

    void = np.ones((s, s), dtype=bool)
    void[_VOID_BORDER : s - _VOID_BORDER, _VOID_BORDER : s - _VOID_BORDER] = False
    pan = np.zeros((s, s), dtype=np.int64)
    sem = np.full((s, s), 255, dtype=np.uint8)
    segments = []
    things = np.zeros((s, s), dtype=bool)
    for k, o in enumerate(objects):
        m = o["visible"]
        things |= m
        # ids > 255 so the panoptic PNG uses more than its R channel
        seg_id = o["category_id"] * 1000 + k + 1
        pan[m] = seg_id
        sem[m] = _CONTIGUOUS[o["category_id"]]
        segments.append(
            {
                "id": seg_id,
                "category_id": o["category_id"],
                "iscrowd": 0,
                "bbox": _bbox_xywh(m),
                "area": int(m.sum()),
                "polygons": mask_to_polygons(m),
            }
        )
    for sid in _STUFF_IDS:
        m = (stuff == sid) & ~things & ~void
        if not m.any():
            continue
        seg_id = sid * 1000
        pan[m] = seg_id
        sem[m] = _CONTIGUOUS[sid]
        segments.append(
            {
                "id": seg_id,
                "category_id": sid,
                "iscrowd": 0,
                "bbox": _bbox_xywh(m),
                "area": int(m.sum()),
            }
        )
    return {"image": image, "pan": pan, "sem": sem, "segments": segments}


def _id2rgb(pan: np.ndarray) -> np.ndarray:
    """(H, W) segment ids -> (H, W, 3) uint8 with id = R + 256 * G + 256**2 * B."""
    return np.stack([pan % 256, pan // 256 % 256, pan // 256**2 % 256], axis=-1).astype(np.uint8)


def rgb2id(color: np.ndarray) -> np.ndarray:
    """(H, W, 3) panoptic PNG -> (H, W) int64 segment ids (panopticapi's ``rgb2id``)."""
    color = np.asarray(color, dtype=np.int64)
    return color[..., 0] + 256 * color[..., 1] + 256 * 256 * color[..., 2]


def generate_toy_dataset(
    root: str,
    num_train: int = DEFAULT_NUM_TRAIN,
    num_val: int = DEFAULT_NUM_VAL,
    image_size: int = 128,
    seed: int = 0,
) -> None:
    """
    Write the toy dataset under ``root`` (see the module docstring for the layout).

    Deterministic: the same arguments give byte-identical files. Image ``i`` of a split only
    depends on ``(seed, split, i, image_size)``, so e.g. growing ``num_train`` keeps the
    existing images.

    Args:
        root: output directory (created if needed; existing files are overwritten).
        num_train, num_val: number of images per split.
        image_size: images are square, ``image_size x image_size`` pixels.
        seed: base random seed.
    """
    assert image_size >= 24, "image_size too small to place objects"
    for split_idx, (split, num) in enumerate(zip(_SPLITS, (num_train, num_val))):
        split_dir = os.path.join(root, split)
        for sub in ("images", "panoptic", "semantic"):
            os.makedirs(os.path.join(split_dir, sub), exist_ok=True)
        images, instances, pan_annos = [], [], []
        for i in range(num):
            rng = np.random.default_rng([seed, split_idx, i, image_size])
            sample = _make_sample(rng, image_size)
            file_name = f"{i:06d}.png"
            Image.fromarray(sample["image"]).save(
                os.path.join(split_dir, "images", file_name)
            )
            Image.fromarray(_id2rgb(sample["pan"])).save(
                os.path.join(split_dir, "panoptic", file_name)
            )
            Image.fromarray(sample["sem"]).save(
                os.path.join(split_dir, "semantic", file_name)
            )
            images.append(
                {"id": i, "file_name": file_name, "height": image_size, "width": image_size}
            )
            segments_info = []
            for seg in sample["segments"]:
                info = {k: seg[k] for k in ("id", "category_id", "iscrowd", "bbox", "area")}
                segments_info.append(info)
                if "polygons" in seg:
                    instances.append(
                        {
                            "id": len(instances) + 1,
                            "image_id": i,
                            "category_id": seg["category_id"],
                            "segmentation": seg["polygons"],
                            "area": seg["area"],
                            "bbox": seg["bbox"],
                            "iscrowd": 0,
                        }
                    )
            pan_annos.append(
                {"image_id": i, "file_name": file_name, "segments_info": segments_info}
            )
        info = {"description": f"segcommon toy dataset ({split})", "version": "1.0"}
        keys = ("id", "name", "supercategory")
        thing_cats = [{k: c[k] for k in keys} for c in TOY_CATEGORIES if c["isthing"]]
        write_json(
            {"info": info, "images": images, "annotations": instances, "categories": thing_cats},
            os.path.join(split_dir, "instances.json"),
        )
        write_json(
            {
                "info": info,
                "images": images,
                "annotations": pan_annos,
                "categories": [dict(c) for c in TOY_CATEGORIES],
            },
            os.path.join(split_dir, "panoptic.json"),
        )
    params = dict(
        num_train=num_train,
        num_val=num_val,
        image_size=image_size,
        seed=seed,
        version=_DEFAULT_VERSION,
    )
    write_json(params, os.path.join(root, _MARKER))


def _needs_generation(root: str) -> bool:
    """True if ``root`` holds no complete toy dataset, or one written by an older generator."""
    marker = os.path.join(root, _MARKER)
    if not os.path.isfile(marker):
        return True
    with open(marker) as f:
        params = json.load(f)
    return params.get("version", 1) < _DEFAULT_VERSION


def _ensure_generated(root: str) -> None:
    """Generate the default dataset under ``root`` unless an up-to-date one is already there."""
    if not _needs_generation(root):
        return
    os.makedirs(root, exist_ok=True)
    with file_lock(os.path.join(root, ".lock")):
        if _needs_generation(root):
            logger.info(
                f"Generating the toy dataset under {root} ({DEFAULT_NUM_TRAIN} train + "
                f"{DEFAULT_NUM_VAL} val images, about 30 s) ..."
            )
            generate_toy_dataset(root)


# ----------------------------------------------------------------------------------------------
# Loading and registration
# ----------------------------------------------------------------------------------------------
def get_toy_metadata() -> Dict:
    """
    Class metadata, in Mask2Former's convention for COCO panoptic: thing ids map to their
    index in the *full* category list, and ``stuff_*`` covers all classes (things first).
    """
    things = [c for c in TOY_CATEGORIES if c["isthing"]]
    return {
        "thing_classes": [c["name"] for c in things],
        "thing_colors": [c["color"] for c in things],
        "stuff_classes": [c["name"] for c in TOY_CATEGORIES],
        "stuff_colors": [c["color"] for c in TOY_CATEGORIES],
        "thing_dataset_id_to_contiguous_id": {c["id"]: _CONTIGUOUS[c["id"]] for c in things},
        "stuff_dataset_id_to_contiguous_id": dict(_CONTIGUOUS),
    }


def _paths(root: str, split: str) -> Dict[str, str]:
    d = os.path.join(root, split)
    return {
        "image_root": os.path.join(d, "images"),
        "json_file": os.path.join(d, "instances.json"),
        "panoptic_root": os.path.join(d, "panoptic"),
        "panoptic_json": os.path.join(d, "panoptic.json"),
        "sem_seg_root": os.path.join(d, "semantic"),
    }


def load_toy_panoptic_json(root: str, split: str) -> List[Dict]:
    """
    Load a split in the layout of Mask2Former's ``coco_2017_{split}_panoptic_with_sem_seg``,
    generating the default dataset first if ``root`` has none.

    Returns:
        list[dict] with "file_name", "image_id", "height", "width", "pan_seg_file_name",
        "sem_seg_file_name" and "segments_info" (each: "id", contiguous "category_id" over all
        classes, "isthing", "iscrowd", "bbox", "area").
    """
    _ensure_generated(root)
    p = _paths(root, split)
    meta = get_toy_metadata()
    with open(p["panoptic_json"]) as f:
        js = json.load(f)
    images = {img["id"]: img for img in js["images"]}
    ret = []
    for ann in js["annotations"]:
        img = images[ann["image_id"]]
        segments_info = []
        for seg in ann["segments_info"]:
            seg = dict(seg)
            seg["isthing"] = seg["category_id"] in meta["thing_dataset_id_to_contiguous_id"]
            seg["category_id"] = meta["stuff_dataset_id_to_contiguous_id"][seg["category_id"]]
            segments_info.append(seg)
        ret.append(
            {
                "file_name": os.path.join(p["image_root"], img["file_name"]),
                "image_id": img["id"],
                "height": img["height"],
                "width": img["width"],
                "pan_seg_file_name": os.path.join(p["panoptic_root"], ann["file_name"]),
                "sem_seg_file_name": os.path.join(p["sem_seg_root"], ann["file_name"]),
                "segments_info": segments_info,
            }
        )
    return ret


def load_toy_sem_seg(root: str, split: str) -> List[Dict]:
    """
    Like detectron2's ``load_sem_seg`` (plus "height"/"width"), generating the default dataset
    first if ``root`` has none.

    Returns:
        list[dict] with "file_name", "sem_seg_file_name", "height", "width".
    """
    _ensure_generated(root)
    p = _paths(root, split)
    with open(p["panoptic_json"]) as f:
        images = json.load(f)["images"]
    return [
        {
            "file_name": os.path.join(p["image_root"], img["file_name"]),
            "sem_seg_file_name": os.path.join(p["sem_seg_root"], img["file_name"]),
            "height": img["height"],
            "width": img["width"],
        }
        for img in images
    ]


def _load_toy_instances(root: str, split: str, name: str) -> List[Dict]:
    _ensure_generated(root)
    p = _paths(root, split)
    return load_coco_json(p["json_file"], p["image_root"], name)


def register_toy_datasets(root: str) -> None:
    """
    Register ``toy_{instance,panoptic,sem_seg}_{train,val}`` for the toy dataset at ``root``.

    Idempotent: registering again with the same root does nothing; a different root replaces
    the earlier registrations (datasets and metadata). Nothing is read or generated until a
    dataset is first loaded.
    """
    meta = get_toy_metadata()
    key = ("toy", os.path.normpath(root))
    for split in _SPLITS:
        p = _paths(root, split)
        name = f"toy_instance_{split}"
        register_dataset(
            name,
            lambda split=split, name=name: _load_toy_instances(root, split, name),
            {
                "thing_classes": meta["thing_classes"],
                "thing_colors": meta["thing_colors"],
                # things come first in TOY_CATEGORIES, so this equals the mapping that
                # load_coco_json derives from the json (contiguous over things only)
                "thing_dataset_id_to_contiguous_id": meta["thing_dataset_id_to_contiguous_id"],
                "json_file": p["json_file"],
                "image_root": p["image_root"],
                "evaluator_type": "coco",
            },
            key=key,
        )
        register_dataset(
            f"toy_panoptic_{split}",
            lambda split=split: load_toy_panoptic_json(root, split),
            {
                **meta,
                "image_root": p["image_root"],
                "panoptic_root": p["panoptic_root"],
                "panoptic_json": p["panoptic_json"],
                "json_file": p["json_file"],
                "sem_seg_root": p["sem_seg_root"],
                "ignore_label": 255,
                "label_divisor": 1000,
                "evaluator_type": "coco_panoptic_seg",
            },
            key=key,
        )
        register_dataset(
            f"toy_sem_seg_{split}",
            lambda split=split: load_toy_sem_seg(root, split),
            {
                "stuff_classes": meta["stuff_classes"],
                "stuff_colors": meta["stuff_colors"],
                "image_root": p["image_root"],
                "sem_seg_root": p["sem_seg_root"],
                "ignore_label": 255,
                "evaluator_type": "sem_seg",
            },
            key=key,
        )


def register_all_toy(root: Optional[str] = None) -> None:
    """Register the toy datasets at ``root``, default ``$DETECTRON2_DATASETS/toy``."""
    if root is None:
        root = os.path.join(os.getenv("DETECTRON2_DATASETS", "datasets"), "toy")
    register_toy_datasets(root)
