"""The tiny_coco registrations read the real COCO subset in ../shared/data/tiny_coco: the instance set
``tiny_coco`` and the semantic set ``tiny_coco_sem_seg`` rendered from it (81 classes)."""
import json
import os
import multiprocessing
import shutil
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.builtin_meta import _get_coco_instances_meta

from conftest import shared_path
from segcommon.data.datasets import register_tiny_coco
from segcommon.data.datasets.tiny_coco import (
    BACKGROUND_LABEL,
    IGNORE_LABEL,
    _default_cache_dir,
    load_tiny_coco_sem_seg,
    register_tiny_coco_sem_seg,
)

# image 60623: a bowl (COCO id 51, contiguous 45) lies wholly on a dining table (67 -> 60)
BOWL_IMAGE, BOWL_ANN, BOWL, TABLE = 60623, 715488, 45, 60
# image 184613 has the set's one crowd annotation (an uncompressed RLE)
CROWD_IMAGE = 184613


def test_tiny_coco_registration():
    root = shared_path("data", "tiny_coco")
    name = register_tiny_coco(str(root), name="_test_tiny_coco")
    dicts = DatasetCatalog.get(name)
    meta = MetadataCatalog.get(name)
    assert len(dicts) == 16
    assert sum(len(d["annotations"]) for d in dicts) == 197
    assert len(meta.thing_classes) == 80 and meta.evaluator_type == "coco"
    assert sorted(meta.thing_dataset_id_to_contiguous_id.values()) == list(range(80))
    assert all(0 <= a["category_id"] < 80 for d in dicts for a in d["annotations"])


def test_tiny_coco_registered_by_default():
    import segcommon.data  # noqa: F401

    assert "tiny_coco" in DatasetCatalog.list()
    assert "tiny_coco_sem_seg" in DatasetCatalog.list()
    meta = MetadataCatalog.get("tiny_coco_sem_seg")
    assert meta.evaluator_type == "sem_seg" and meta.ignore_label == 255
    coco_meta = _get_coco_instances_meta()
    assert meta.stuff_classes == coco_meta["thing_classes"] + ["background"]
    assert len(meta.stuff_colors) == 81 and meta.stuff_colors[:80] == [list(c) for c in coco_meta["thing_colors"]]


def test_sem_seg_registration_is_lazy(tmp_path):
    name = register_tiny_coco_sem_seg(str(tmp_path / "absent"), name="_test_tiny_coco_sem_seg_lazy")
    assert name in DatasetCatalog.list()
    assert not os.path.exists(tmp_path / "absent")
    with pytest.raises(FileNotFoundError):
        DatasetCatalog.get(name)


@pytest.fixture(scope="module")
def sem_seg(tmp_path_factory):
    """(dicts, label maps by image id, COCO api) of the registered semantic set, rendered into a
    temporary cache."""
    root = shared_path("data", "tiny_coco")
    cache = tmp_path_factory.mktemp("tiny_coco_sem_seg_cache")
    name = register_tiny_coco_sem_seg(str(root), name="_test_tiny_coco_sem_seg", cache_dir=str(cache))
    dicts = DatasetCatalog.get(name)
    labels = {d["image_id"]: np.asarray(Image.open(d["sem_seg_file_name"])) for d in dicts}
    return dicts, labels, COCO(str(root / "instances.json"))


def test_sem_seg_dicts(sem_seg):
    dicts, labels, coco = sem_seg
    assert len(dicts) == 16
    for d in dicts:
        assert set(d) == {"file_name", "sem_seg_file_name", "height", "width", "image_id"}
        assert os.path.isfile(d["file_name"])
        img = coco.imgs[d["image_id"]]
        assert (d["height"], d["width"]) == (img["height"], img["width"])
        assert os.path.basename(d["sem_seg_file_name"]) == os.path.splitext(img["file_name"])[0] + ".png"
        with Image.open(d["sem_seg_file_name"]) as im:
            assert im.mode == "L"  # uint8
        label = labels[d["image_id"]]
        assert label.dtype == np.uint8 and label.shape == (d["height"], d["width"])
        assert set(np.unique(label).tolist()) <= set(range(81)) | {255}


def test_sem_seg_labels_follow_the_instances(sem_seg):
    """Background where no annotation is, 255 where only a crowd region is, and elsewhere the class of
    the smallest non-crowd instance covering the pixel (larger instances are painted first)."""
    _, labels, coco = sem_seg
    id_map = _get_coco_instances_meta()["thing_dataset_id_to_contiguous_id"]
    names = MetadataCatalog.get("_test_tiny_coco_sem_seg").stuff_classes
    for image_id, label in labels.items():
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id], iscrowd=None))
        covered = np.zeros(label.shape, bool)
        crowd = np.zeros(label.shape, bool)
        smallest_area = np.full(label.shape, np.inf)
        expected = np.full(label.shape, -1)
        for ann in anns:
            m = coco.annToMask(ann).astype(bool)
            covered |= m
            if ann["iscrowd"]:
                crowd |= m
                continue
            smaller = m & (m.sum() < smallest_area)
            smallest_area[smaller] = m.sum()
            expected[smaller] = id_map[ann["category_id"]]
            # the class name of the label is the annotation's category name
            cat = coco.cats[ann["category_id"]]["name"]
            assert names[id_map[ann["category_id"]]] == cat
        np.testing.assert_array_equal(label[~covered], BACKGROUND_LABEL)
        only_crowd = crowd & (expected < 0)
        np.testing.assert_array_equal(label[only_crowd], IGNORE_LABEL)
        instance = expected >= 0
        np.testing.assert_array_equal(label[instance], expected[instance])
        assert (label == BACKGROUND_LABEL).sum() == (~covered).sum()
    assert (labels[CROWD_IMAGE] == IGNORE_LABEL).sum() > 1000


def test_sem_seg_smaller_instance_on_top(sem_seg):
    _, labels, coco = sem_seg
    label = labels[BOWL_IMAGE]
    bowl = coco.annToMask(coco.anns[BOWL_ANN]).astype(bool)
    assert coco.anns[BOWL_ANN]["category_id"] == 51 and bowl.sum() > 10000
    assert (label[bowl] == BOWL).all()  # the bowl stays visible on the table it lies on
    assert (label == TABLE).sum() > 50000
    assert bowl[292, 481] and label[292, 481] == BOWL  # a pixel inside the bowl
    assert label[0, 0] == BACKGROUND_LABEL  # the top-left corner is covered by no annotation


def test_sem_seg_cache_reused_and_rendered_anew_when_json_changes(tmp_path):
    """A writable root gets <root>/semantic_cache; loading again reuses it; a newer instances.json
    is rendered anew."""
    src = shared_path("data", "tiny_coco")
    root = tmp_path / "tiny_coco"
    root.mkdir()
    (root / "images").symlink_to(src / "images")
    shutil.copyfile(src / "instances.json", root / "instances.json")
    json_file, image_root = str(root / "instances.json"), str(root / "images")

    dicts = load_tiny_coco_sem_seg(json_file, image_root)
    d = next(x for x in dicts if x["image_id"] == BOWL_IMAGE)
    assert os.path.dirname(d["sem_seg_file_name"]) == str(root / "semantic_cache")
    mtime = os.stat(d["sem_seg_file_name"]).st_mtime_ns
    assert load_tiny_coco_sem_seg(json_file, image_root) == dicts
    assert os.stat(d["sem_seg_file_name"]).st_mtime_ns == mtime  # not rendered again

    # drop the bowl's annotation: its pixels become the table's
    with open(json_file) as f:
        js = json.load(f)
    js["annotations"] = [a for a in js["annotations"] if a["id"] != BOWL_ANN]
    with open(json_file, "w") as f:
        json.dump(js, f)
    os.utime(json_file, ns=(mtime + 10**9, mtime + 10**9))
    load_tiny_coco_sem_seg(json_file, image_root)
    label = np.asarray(Image.open(d["sem_seg_file_name"]))
    coco = COCO(str(src / "instances.json"))
    bowl = coco.annToMask(coco.anns[BOWL_ANN]).astype(bool)
    assert (label[bowl] == TABLE).all()
    assert not [p for p in os.listdir(root / "semantic_cache") if ".tmp" in p]  # atomic writes


def test_sem_seg_cache_of_read_only_root_is_elsewhere():
    json_file = str(shared_path("data", "tiny_coco", "instances.json"))
    cache = _default_cache_dir(json_file)
    assert not os.path.realpath(cache).startswith(os.path.realpath(os.path.dirname(json_file)))


def _load_labels(args):
    json_file, image_root, cache = args
    dicts = load_tiny_coco_sem_seg(json_file, image_root, cache)
    return [int(np.asarray(Image.open(d["sem_seg_file_name"])).sum()) for d in dicts]


def test_sem_seg_concurrent_loads(tmp_path):
    root = shared_path("data", "tiny_coco")
    args = (str(root / "instances.json"), str(root / "images"), str(tmp_path / "cache"))
    with ProcessPoolExecutor(3, mp_context=multiprocessing.get_context("fork")) as pool:
        results = list(pool.map(_load_labels, [args] * 3))
    assert results[0] == results[1] == results[2] and len(results[0]) == 16
