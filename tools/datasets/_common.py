"""
Helpers shared by the dataset preparation scripts of this folder: loading the category tables,
the command line (``--root``, ``--splits``, exit status), progress lines, and the parts of the
ADEChallengeData2016 layout that several scripts read.

The scripts import this module as ``_common``: Python puts a script's folder first on
``sys.path`` when it runs ``python tools/datasets/<script>.py``, and a script imported by file
path (as the tests do) adds its folder itself. Like the scripts, it needs neither the project
installed nor detectron2.
"""
import argparse
import importlib.util
import os
import sys
import time
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, TypeVar

import numpy as np
from PIL import Image

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

T = TypeVar("T")

# how to obtain each folder of ADEChallengeData2016/ that the scripts read
_ADE_HINTS = {
    "images": "unzip ADEChallengeData2016.zip into the dataset root",
    "annotations": "unzip ADEChallengeData2016.zip into the dataset root",
    "annotations_instance": "extract annotations_instance.tar into ADEChallengeData2016/",
}
ADE_SPLIT_DIRS = {"train": "training", "val": "validation"}


def load_meta(module: str):
    """Import ``segcommon/data/datasets/meta/<module>.py`` by path: importing the segcommon
    package would also register datasets and pull in the models' dependencies."""
    path = os.path.join(REPO_ROOT, "segcommon", "data", "datasets", "meta", module + ".py")
    spec = importlib.util.spec_from_file_location(f"_segcommon_meta_{module}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ----------------------------------------------------------------------------- command line


def make_parser(
    doc: str, contents: str, splits: Optional[Sequence[str]] = None
) -> argparse.ArgumentParser:
    """
    Argument parser described by the first paragraph of a script's docstring ``doc``, with
    ``--root`` (default ``$DETECTRON2_DATASETS``, else ``datasets``), the dataset root that
    contains ``contents`` (named in the help), and, if ``splits`` is given, ``--splits``: one
    or more of ``splits``, default all of them.
    """
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0].strip())
    parser.add_argument(
        "--root",
        default=os.getenv("DETECTRON2_DATASETS", "datasets"),
        help=f"dataset root containing {contents} (default: $DETECTRON2_DATASETS, else ./datasets)",
    )
    if splits is not None:
        parser.add_argument("--splits", nargs="+", default=list(splits), choices=list(splits))
    return parser


def run(convert: Callable[..., object], calls: Iterable[Sequence]) -> int:
    """
    Call ``convert(*args)`` for each ``args`` of ``calls`` and print "done"; returns the exit
    status: 0, or 1 after printing the message of a FileNotFoundError (a missing input) to
    stderr.
    """
    try:
        for args in calls:
            convert(*args)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print("done")
    return 0


def progress(
    items: Iterable[T],
    total: int,
    prefix: str = "",
    parts: int = 20,
    note: Callable[[], str] = lambda: "",
) -> Iterator[T]:
    """
    Yield ``items`` (``total`` of them); after the caller has processed every
    ``total // parts``-th item and the last one, print ``<prefix><i>/<total><note()> (<s>s)``
    with the seconds since the first item was asked for.
    """
    start = time.time()
    step = max(1, total // parts)
    for i, item in enumerate(items, 1):
        yield item
        if i % step == 0 or i == total:
            print(f"{prefix}{i}/{total}{note()} ({time.time() - start:.0f}s)")


# ----------------------------------------------------------------------------- images


def image_size(path: str) -> Tuple[int, int]:
    """(width, height) of an image file, read from its header."""
    with Image.open(path) as im:
        return im.size


def bbox_xywh(mask: np.ndarray) -> List[int]:
    """COCO box [x, y, w, h] of a non-empty boolean mask."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    return [int(xs[0]), int(ys[0]), int(xs[-1] - xs[0] + 1), int(ys[-1] - ys[0] + 1)]


# ----------------------------------------------------------------------------- ADE20K-150


def ade_split_folders(root: str, split: str, *subdirs: str) -> List[str]:
    """
    The folders ``ADEChallengeData2016/<subdir>/<training|validation>`` under ``root`` of
    ``split`` ("train" or "val"), one per ``subdir`` (a key of ``_ADE_HINTS``).

    Raises:
        FileNotFoundError: naming the first missing folder and how to obtain it.
    """
    ade = os.path.join(root, "ADEChallengeData2016")
    folders = [os.path.join(ade, subdir, ADE_SPLIT_DIRS[split]) for subdir in subdirs]
    for path, subdir in zip(folders, subdirs):
        if not os.path.isdir(path):
            hint = _ADE_HINTS[subdir]
            raise FileNotFoundError(f"Folder {path} is missing ({hint}; see datasets/README.md).")
    return folders


def ade_image_record(image_dir: str, file_name: str) -> Dict:
    """The json ``images`` entry of one ADE20K image: ``id`` (its base name), ``file_name``,
    ``width``, ``height``."""
    width, height = image_size(os.path.join(image_dir, file_name))
    image_id = os.path.splitext(file_name)[0]
    return {"id": image_id, "file_name": file_name, "width": width, "height": height}


def ade_instances(
    instance: np.ndarray, thing_ids: Sequence[int], source: str = ""
) -> Iterator[Tuple[np.ndarray, int]]:
    """
    Yield ``(mask, ADE-150 id)`` for every instance of an ADE20K instance annotation, in
    increasing instance id.

    Args:
        instance: (H, W, >=2) uint8 (R: instance class 1..100 or 0, G: instance id, 0 = none).
        thing_ids: ADE-150 id of instance class k at index k - 1.
        source: file name, for error messages.

    Raises:
        ValueError: if the pixels of an instance do not carry exactly one valid class.
    """
    ins_cls = instance[..., 0].astype(np.int64)
    ins_ids = instance[..., 1]
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
        yield mask, thing_ids[cls[0] - 1]
