"""``tiny_coco``: a 16-image subset of COCO train2017 with its original instance annotations (80 thing
classes, COCO ids 1..90), for overfit tests of whole training pipelines.

Layout: ``$DETECTRON2_DATASETS/tiny_coco/{images/, instances.json}`` (the project's checkout has it
at ``../shared/data/tiny_coco``; link it there, see datasets/README.md).

Two registrations of the same images:

* ``tiny_coco``: the instance annotations as they are (evaluator_type "coco");
* ``tiny_coco_sem_seg``: semantic label maps rendered from the instance masks (81 classes: the 80
  COCO thing classes, contiguous 0..79 in the order of their COCO ids, then 80 = background; 255 =
  ignore), see :func:`render_sem_seg` and :func:`load_tiny_coco_sem_seg`.
"""
import contextlib
import hashlib
import io
import json
import logging
import os
import stat
import tempfile
from typing import Dict, List, Optional, Tuple

import numpy as np
from PIL import Image
from pycocotools.coco import COCO

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.data.datasets.builtin_meta import _get_coco_instances_meta

from ._common import dataset_root, file_lock, register_dataset, write_json

__all__ = [
    "register_tiny_coco",
    "register_tiny_coco_sem_seg",
    "tiny_coco_sem_seg_metadata",
    "render_sem_seg",
    "load_tiny_coco_sem_seg",
    "BACKGROUND_LABEL",
    "IGNORE_LABEL",
]

logger = logging.getLogger(__name__)

# Contiguous label of "no instance" in the semantic maps (after the 80 thing classes) and of crowd.
BACKGROUND_LABEL = 80
IGNORE_LABEL = 255
_BACKGROUND_COLOR = [0, 0, 0]
# Bumped whenever the rendering changes, so that caches written by older code are rendered anew.
_RENDER_VERSION = 1
# Written last into a cache folder: its presence (with matching contents) means "complete".
_CACHE_MARKER = "tiny_coco_sem_seg.json"


def _resolve_root(root: Optional[str]) -> str:
    """``root``, default ``$DETECTRON2_DATASETS/tiny_coco`` (``datasets/tiny_coco``)."""
    return dataset_root(None, "tiny_coco") if root is None else root


def _paths(root: str) -> Tuple[str, str]:
    """(instances json, image folder) of the set at ``root``."""
    return os.path.join(root, "instances.json"), os.path.join(root, "images")


def register_tiny_coco(root: Optional[str] = None, name: str = "tiny_coco") -> str:
    """Registers the COCO-format set at ``root`` (default ``$DETECTRON2_DATASETS/tiny_coco``) as
    ``name`` (evaluator_type "coco"); nothing is read until the set is used. Returns ``name``."""
    root = _resolve_root(root)
    if name in DatasetCatalog.list():  # re-registration replaces the previous root
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    register_coco_instances(name, {}, *_paths(root))
    return name


def register_tiny_coco_sem_seg(
    root: Optional[str] = None, name: str = "tiny_coco_sem_seg", cache_dir: Optional[str] = None
) -> str:
    """
    Registers the set at ``root`` (default ``$DETECTRON2_DATASETS/tiny_coco``) as the semantic
    segmentation dataset ``name`` (evaluator_type "sem_seg", metadata of
    :func:`tiny_coco_sem_seg_metadata`). Nothing is read or written until the set is first loaded,
    which renders the label maps into ``cache_dir`` (default: see :func:`load_tiny_coco_sem_seg`).
    Registering the same name again with the same paths does nothing; other paths replace it.
    Returns ``name``.
    """
    root = _resolve_root(root)
    json_file, image_root = _paths(root)
    register_dataset(
        name,
        lambda: load_tiny_coco_sem_seg(json_file, image_root, cache_dir),
        {"json_file": json_file, "image_root": image_root, **tiny_coco_sem_seg_metadata()},
        key=("sem_seg", json_file, image_root, cache_dir),
    )
    return name


def _coco_id_to_contiguous() -> Dict[int, int]:
    """The 80 COCO thing ids (1..90) -> 0..79 in increasing id order (Detectron2's builtin map)."""
    return dict(_get_coco_instances_meta()["thing_dataset_id_to_contiguous_id"])


def tiny_coco_sem_seg_metadata() -> Dict:
    """``stuff_classes`` / ``stuff_colors``: the 80 COCO thing classes (Detectron2's builtin names
    and colours, in COCO id order) + "background"; ``ignore_label`` 255; ``evaluator_type``
    "sem_seg"."""
    meta = _get_coco_instances_meta()
    return {
        "stuff_classes": list(meta["thing_classes"]) + ["background"],
        "stuff_colors": [list(c) for c in meta["thing_colors"]] + [list(_BACKGROUND_COLOR)],
        "ignore_label": IGNORE_LABEL,
        "evaluator_type": "sem_seg",
    }


def render_sem_seg(coco: COCO, image_id: int, id_map: Optional[Dict[int, int]] = None) -> np.ndarray:
    """
    The semantic label map of one image, rendered from its instance annotations.

    Each annotation is rasterised with ``coco.annToMask`` (polygons, uncompressed and compressed
    RLE) and painted over a map of ``BACKGROUND_LABEL`` (80) in this order, later paint winning:

    1. crowd annotations (``iscrowd`` 1) as ``IGNORE_LABEL`` (255), so that a crowd region is
       ignored wherever no individual instance covers it;
    2. the other annotations with their contiguous class, in decreasing order of their mask's pixel
       count (ties: increasing annotation id): where instances overlap, the smaller one stays
       visible on top of the larger.

    Args:
        coco: the COCO api of the annotations.
        image_id: COCO id of the image.
        id_map: COCO category id -> contiguous label (default: the 80 COCO things -> 0..79).

    Returns:
        ndarray[uint8] (height, width) with values in 0..80 and 255.

    Raises:
        KeyError: if an annotation's category is not in ``id_map``.
    """
    id_map = _coco_id_to_contiguous() if id_map is None else id_map
    img = coco.imgs[image_id]
    label = np.full((img["height"], img["width"]), BACKGROUND_LABEL, dtype=np.uint8)
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id], iscrowd=None))
    crowd, things = [], []
    for ann in anns:
        mask = coco.annToMask(ann).astype(bool)
        if ann.get("iscrowd", 0):
            crowd.append(mask)
        else:
            things.append((-int(mask.sum()), ann["id"], id_map[ann["category_id"]], mask))
    for mask in crowd:
        label[mask] = IGNORE_LABEL
    for _, _, cls, mask in sorted(things, key=lambda t: t[:2]):
        label[mask] = cls
    return label


def _writable_dir(path: str) -> bool:
    """Whether ``path`` is a folder this process may write into and whose permission bits let
    someone write: root may write anywhere, but a folder marked read-only (such as the project's
    ../shared/data) is not to be written into by anyone."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISDIR(mode) and bool(mode & 0o222) and os.access(path, os.W_OK | os.X_OK)


def _default_cache_dir(json_file: str) -> str:
    """``<folder of json_file>/semantic_cache`` if that folder is writable (:func:`_writable_dir`),
    else a folder under the temporary directory named after the json's real path (read-only
    copies, e.g. ../shared/data/tiny_coco, get one cache each)."""
    root = os.path.dirname(json_file) or "."
    preferred = os.path.join(root, "semantic_cache")
    if _writable_dir(preferred) or (not os.path.exists(preferred) and _writable_dir(root)):
        return preferred
    digest = hashlib.sha1(os.path.realpath(json_file).encode()).hexdigest()[:16]
    user = getattr(os, "getuid", lambda: "")()
    return os.path.join(tempfile.gettempdir(), f"segcommon_tiny_coco_sem_seg{user}", digest)


def _json_stamp(json_file: str) -> Dict:
    st = os.stat(json_file)
    return {
        "version": _RENDER_VERSION,
        "json_file": os.path.realpath(json_file),
        "json_mtime_ns": st.st_mtime_ns,
        "json_size": st.st_size,
    }


def _cache_is_current(cache_dir: str, stamp: Dict, label_files: List[str]) -> bool:
    """The marker records the same json (path, mtime, size) and rendering version, and every label
    map exists. An instances.json modified (e.g. newer) since the rendering fails the check."""
    try:
        with open(os.path.join(cache_dir, _CACHE_MARKER)) as f:
            if json.load(f) != stamp:
                return False
    except (OSError, ValueError):
        return False
    return all(os.path.isfile(p) for p in label_files)


def _atomic_write(path: str, write) -> None:
    """``write(tmp_path)`` then rename onto ``path``: readers see the old file or the whole new one."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _load_coco_api(json_file: str) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):  # COCO() prints its timings
        return COCO(json_file)


def load_tiny_coco_sem_seg(json_file: str, image_root: str, cache_dir: Optional[str] = None) -> List[Dict]:
    """
    Semantic segmentation dicts of a COCO instance set, its label maps rendered by
    :func:`render_sem_seg` into ``cache_dir`` as ``<image file name without extension>.png`` (uint8).

    The maps are rendered once and reused until ``json_file`` changes (another mtime or size) or the
    rendering version does. Rendering holds a file lock in ``cache_dir`` and writes every file
    atomically, so concurrent processes (DDP workers, data-loader workers) are safe.

    Args:
        json_file: COCO instances json.
        image_root: folder of its images.
        cache_dir: where the label maps go; default ``<folder of json_file>/semantic_cache`` if
            writable, else a folder under the system's temporary directory.

    Returns:
        list[dict] with "file_name", "sem_seg_file_name", "height", "width", "image_id", in the
        json's image order.
    """
    cache_dir = _default_cache_dir(json_file) if cache_dir is None else cache_dir
    stamp = _json_stamp(json_file)  # before reading, so a concurrent edit makes the cache stale
    with open(json_file) as f:
        images = json.load(f)["images"]
    records = [
        {
            "file_name": os.path.join(image_root, img["file_name"]),
            "sem_seg_file_name": os.path.join(cache_dir, os.path.splitext(img["file_name"])[0] + ".png"),
            "height": img["height"],
            "width": img["width"],
            "image_id": img["id"],
        }
        for img in images
    ]
    label_files = [r["sem_seg_file_name"] for r in records]
    if not _cache_is_current(cache_dir, stamp, label_files):
        os.makedirs(cache_dir, exist_ok=True)
        with file_lock(os.path.join(cache_dir, ".lock")):
            if not _cache_is_current(cache_dir, stamp, label_files):
                logger.info(f"Rendering {len(records)} semantic label maps of {json_file} into {cache_dir} ...")
                coco = _load_coco_api(json_file)
                id_map = _coco_id_to_contiguous()
                for r in records:
                    label = render_sem_seg(coco, r["image_id"], id_map)
                    os.makedirs(os.path.dirname(r["sem_seg_file_name"]), exist_ok=True)
                    _atomic_write(
                        r["sem_seg_file_name"], lambda p, a=label: Image.fromarray(a).save(p, format="PNG")
                    )
                marker = os.path.join(cache_dir, _CACHE_MARKER)
                _atomic_write(marker, lambda p: write_json(stamp, p))
    return records
