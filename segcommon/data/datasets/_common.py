"""
Helpers shared by the standard-dataset registrations: idempotent registration (of one split
of a semantic or a panoptic dataset, or of every split), metadata patching, and a loader for
COCO-format panoptic annotations with semantic label maps.
"""
import contextlib
import copy
import json
import logging
import os
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_sem_seg
from detectron2.utils.file_io import PathManager

__all__ = [
    "default_root",
    "dataset_root",
    "register_dataset",
    "register_splits",
    "register_sem_seg",
    "register_panoptic_with_sem_seg",
    "patch_metadata",
    "panoptic_metadata",
    "load_panoptic_json_with_sem_seg",
    "file_lock",
    "write_json",
]

logger = logging.getLogger(__name__)

# name -> identity of what we registered under it (the loader's inputs), so that registering
# the same thing again is a no-op while registering it with different paths replaces it.
_REGISTERED: Dict[str, Any] = {}


def default_root() -> str:
    """The dataset root: ``$DETECTRON2_DATASETS``, default ``datasets`` (as detectron2)."""
    return os.getenv("DETECTRON2_DATASETS", "datasets")


def dataset_root(root: Optional[str], *parts: str) -> str:
    """The folder ``parts`` under ``root``, which defaults to :func:`default_root`."""
    return os.path.join(default_root() if root is None else root, *parts)


def register_dataset(
    name: str, loader: Callable[[], List[Dict]], metadata: Dict[str, Any], key: Any
) -> None:
    """
    Register ``loader`` under ``name`` in DatasetCatalog and set ``metadata`` on it, idempotently.

    Args:
        name: dataset name.
        loader: zero-argument function returning the list of dataset dicts; it is only called
            when the dataset is first used (registration reads nothing from disk).
        metadata: attributes to set on ``MetadataCatalog.get(name)``.
        key: a hashable/comparable identity of the registration (typically the tuple of paths
            the loader reads). Registering the same name with an equal key again does nothing;
            with a different key (or a name registered elsewhere) the previous dataset and its
            metadata are replaced. This makes importing the registering modules twice (or
            re-running ``register_all_*``) safe: detectron2 itself asserts on duplicates.
    """
    if name in DatasetCatalog.list():
        if _REGISTERED.get(name) == key:
            return
        logger.info(f"Replacing the registration of dataset '{name}'.")
        DatasetCatalog.remove(name)
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, loader)
    # Copied so that datasets registered from one dict do not share (mutable) lists.
    MetadataCatalog.get(name).set(**copy.deepcopy(metadata))
    _REGISTERED[name] = key


def register_splits(
    name_format: str, splits: Sequence[str], register: Callable[[str, str], None]
) -> List[str]:
    """Call ``register(name, split)`` for each of ``splits``, where ``name`` is ``name_format``
    formatted with ``split``; returns the names."""
    names = []
    for split in splits:
        name = name_format.format(split=split)
        register(name, split)
        names.append(name)
    return names


def register_sem_seg(
    name: str,
    image_root: str,
    sem_seg_root: str,
    metadata: Dict[str, Any],
    ignore_label: int = 255,
    gt_ext: str = "png",
) -> None:
    """
    Register (with :func:`register_dataset`) a semantic segmentation dataset: detectron2's
    ``load_sem_seg`` of the ``*.jpg`` images in ``image_root`` and the label files (``gt_ext``)
    of the same base names in ``sem_seg_root``. Metadata: ``metadata`` plus ``image_root``,
    ``sem_seg_root``, ``evaluator_type`` "sem_seg" and ``ignore_label``.
    """
    register_dataset(
        name,
        lambda: load_sem_seg(sem_seg_root, image_root, gt_ext=gt_ext, image_ext="jpg"),
        dict(
            image_root=image_root,
            sem_seg_root=sem_seg_root,
            evaluator_type="sem_seg",
            ignore_label=ignore_label,
            **metadata,
        ),
        key=(image_root, sem_seg_root),
    )


def register_panoptic_with_sem_seg(
    name: str,
    load: Callable[[str, str, str, str, Dict[str, Any]], List[Dict]],
    image_root: str,
    panoptic_root: str,
    panoptic_json: str,
    sem_seg_root: str,
    json_file: Optional[str],
    evaluator_type: str,
    metadata: Dict[str, Any],
    ignore_label: int = 255,
) -> None:
    """
    Register (with :func:`register_dataset`) a panoptic dataset with semantic labels.

    Args:
        name: dataset name.
        load: loader called as ``load(panoptic_json, image_root, panoptic_root, sem_seg_root,
            metadata)`` when the dataset is first used.
        json_file: the *instance* json (used by COCOEvaluator for instance AP), or None.
        metadata: class metadata (e.g. :func:`panoptic_metadata`); the dataset's metadata adds
            ``image_root``, ``panoptic_root``, ``panoptic_json``, ``sem_seg_root``,
            ``json_file``, ``evaluator_type``, ``ignore_label`` and ``label_divisor`` 1000.
    """
    register_dataset(
        name,
        lambda: load(panoptic_json, image_root, panoptic_root, sem_seg_root, metadata),
        dict(
            image_root=image_root,
            panoptic_root=panoptic_root,
            panoptic_json=panoptic_json,
            sem_seg_root=sem_seg_root,
            json_file=json_file,
            evaluator_type=evaluator_type,
            ignore_label=ignore_label,
            label_divisor=1000,
            **metadata,
        ),
        key=(image_root, panoptic_root, panoptic_json, sem_seg_root, json_file),
    )


def patch_metadata(name: str, **kwargs: Any) -> None:
    """
    Set attributes on the metadata of an existing dataset, overwriting existing values.

    detectron2's ``Metadata.set`` refuses to change an attribute to a different value, so the
    old attribute is deleted first. Safe to call repeatedly.
    """
    meta = MetadataCatalog.get(name)
    for k, v in kwargs.items():
        if hasattr(meta, k):
            delattr(meta, k)
        setattr(meta, k, v)


def panoptic_metadata(
    categories: Sequence[Dict], thing_classes_from_all: bool = False
) -> Dict[str, Any]:
    """
    Metadata of a panoptic dataset whose contiguous ids run over *all* categories.

    Args:
        categories: COCO-panoptic style category dicts (``id``, ``name``, ``isthing``, ``color``);
            the contiguous id of a category is its index in this list.
        thing_classes_from_all: if False, ``thing_classes``/``thing_colors`` list the things
            only (COCO, ADE20K: what COCOEvaluator's per-class table expects); if True they
            repeat the full list (Mapillary Vistas, as the official code does, so that
            indexing them with a contiguous id works in the Visualizer).

    Returns:
        dict with ``thing_classes``, ``thing_colors``, ``stuff_classes``, ``stuff_colors`` (all
        categories), ``thing_dataset_id_to_contiguous_id`` (things only) and
        ``stuff_dataset_id_to_contiguous_id`` (every category, things included, so that
        SemSegEvaluator can map the semantic prediction of any class back to a dataset id).
    """
    things = [c for c in categories if c["isthing"]]
    src = categories if thing_classes_from_all else things
    return {
        "thing_classes": [c["name"] for c in src],
        "thing_colors": [c["color"] for c in src],
        "stuff_classes": [c["name"] for c in categories],
        "stuff_colors": [c["color"] for c in categories],
        "thing_dataset_id_to_contiguous_id": {
            c["id"]: i for i, c in enumerate(categories) if c["isthing"]
        },
        "stuff_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(categories)},
    }


def load_panoptic_json_with_sem_seg(
    json_file: str,
    image_root: str,
    panoptic_root: str,
    sem_seg_root: Optional[str],
    metadata: Dict[str, Any],
    image_ext: str = ".jpg",
) -> List[Dict]:
    """
    Load COCO-format panoptic annotations into detectron2's standard dicts.

    Args:
        json_file: panoptic json (``annotations`` with ``file_name`` of the PNG, ``image_id``,
            ``segments_info``).
        image_root: folder of the images; an image is found as the PNG's base name +
            ``image_ext``.
        panoptic_root: folder of the panoptic PNGs (segment id = R + 256 G + 256^2 B).
        sem_seg_root: folder of semantic label PNGs with the same file names as the panoptic
            PNGs, or None if there are none.
        metadata: provides ``thing_dataset_id_to_contiguous_id`` and
            ``stuff_dataset_id_to_contiguous_id`` (the latter covering every category).

    Returns:
        list of dicts with ``file_name``, ``image_id``, ``pan_seg_file_name``,
        ``sem_seg_file_name`` (if ``sem_seg_root``) and ``segments_info``, whose entries keep
        the json's fields but have a contiguous ``category_id`` and a boolean ``isthing``.
    """
    thing_map = metadata["thing_dataset_id_to_contiguous_id"]
    stuff_map = metadata["stuff_dataset_id_to_contiguous_id"]
    if not PathManager.isfile(json_file):
        raise FileNotFoundError(f"Panoptic annotation file {json_file} does not exist.")
    with PathManager.open(json_file) as f:
        json_info = json.load(f)

    ret = []
    for ann in json_info["annotations"]:
        base = os.path.splitext(ann["file_name"])[0]
        segments_info = []
        for seg in ann["segments_info"]:
            seg = dict(seg)
            cat = seg["category_id"]
            seg["isthing"] = cat in thing_map
            seg["category_id"] = thing_map[cat] if seg["isthing"] else stuff_map[cat]
            segments_info.append(seg)
        record = {
            "file_name": os.path.join(image_root, base + image_ext),
            "image_id": ann["image_id"],
            "pan_seg_file_name": os.path.join(panoptic_root, ann["file_name"]),
            "segments_info": segments_info,
        }
        if sem_seg_root is not None:
            record["sem_seg_file_name"] = os.path.join(sem_seg_root, ann["file_name"])
        ret.append(record)

    if not ret:
        raise ValueError(f"No annotations found in {json_file}.")
    # Checking every file would be slow on a full dataset; the first one catches a wrong layout.
    for key in ("file_name", "pan_seg_file_name", "sem_seg_file_name"):
        if key in ret[0] and not PathManager.isfile(ret[0][key]):
            raise FileNotFoundError(
                f"{ret[0][key]} (referenced by {json_file}) does not exist; see datasets/README.md."
            )
    return ret


@contextlib.contextmanager
def file_lock(path: str) -> Iterator[None]:
    """Inter-process lock on the file ``path`` (created if needed), so that concurrent data-loader /
    DDP workers generate or render a dataset only once. No locking where ``fcntl`` is missing."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def write_json(obj: Any, path: str) -> None:
    """Writes ``obj`` as compact JSON to ``path``."""
    with open(path, "w") as f:
        json.dump(obj, f, separators=(",", ":"))
