"""
Tests of the standard-dataset registrations (``segcommon.data.datasets``) and of the dataset
preparation scripts in ``tools/datasets/``.

Every test builds a tiny fake copy of a dataset in its official on-disk layout under
``tmp_path`` (two images per split), runs the preparation script(s) on it where the dataset
needs one, registers it under private names and checks the dicts DatasetCatalog returns and
the metadata.
"""
import importlib
import importlib.util
import json
import os
import pickle
import subprocess
import sys
import uuid

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_util

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_panoptic
from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES, _get_builtin_metadata

import segcommon.data.datasets as datasets_pkg
from segcommon.data.datasets import ade20k, coco_panoptic, coco_stuff, mapillary_vistas
from segcommon.data.datasets.meta.ade20k import ADE20K_THING_IDS
from segcommon.data.datasets.meta.ade20k_full import ADE20K_FULL_CATEGORIES

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
TOOLS = os.path.join(REPO, "tools", "datasets")

EXPECTED_NAMES = [
    "coco_2017_train_panoptic_with_sem_seg",
    "coco_2017_val_panoptic_with_sem_seg",
    "ade20k_panoptic_train",
    "ade20k_panoptic_val",
    "ade20k_instance_train",
    "ade20k_instance_val",
    "ade20k_full_sem_seg_train",
    "ade20k_full_sem_seg_val",
    "coco_2017_train_stuff_10k_sem_seg",
    "coco_2017_test_stuff_10k_sem_seg",
    "mapillary_vistas_sem_seg_train",
    "mapillary_vistas_sem_seg_val",
    "mapillary_vistas_panoptic_train",
    "mapillary_vistas_panoptic_val",
]
# Provided by detectron2 v0.6 itself; the project must not register these again.
DETECTRON2_NAMES = [
    "coco_2017_train",
    "coco_2017_val",
    "coco_2017_train_panoptic",
    "coco_2017_val_panoptic",
    "lvis_v1_train",
    "lvis_v0.5_train",
    "cityscapes_fine_sem_seg_train",
    "cityscapes_fine_instance_seg_val",
    "cityscapes_fine_panoptic_train",
    "ade20k_sem_seg_train",
    "ade20k_sem_seg_val",
]


# ----------------------------------------------------------------------------- helpers


def load_script(name):
    """Import tools/datasets/<name>.py as a module."""
    path = os.path.join(TOOLS, name + ".py")
    spec = importlib.util.spec_from_file_location(f"_test_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    # registered so that multiprocessing can pickle the module's functions by name
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def write_jpg(path, h, w, seed=0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)


def write_png(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path)


def id2rgb(ids):
    ids = np.asarray(ids, dtype=np.int64)
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)


def rgb2id(rgb):
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def read(path):
    return np.asarray(Image.open(path))


def bbox_of(mask):
    """COCO [x, y, w, h] box of a boolean mask."""
    ys, xs = np.nonzero(mask)
    return [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]


@pytest.fixture
def names():
    """A unique name format for private registrations; removes them afterwards."""
    prefix = f"_test_{uuid.uuid4().hex[:8]}_"
    yield prefix + "{split}"
    for n in list(DatasetCatalog.list()):
        if n.startswith(prefix):
            DatasetCatalog.remove(n)
    for n in list(MetadataCatalog.list()):
        if n.startswith(prefix):
            MetadataCatalog.remove(n)


# ----------------------------------------------------------------------------- catalog


def test_import_registers_every_expected_name():
    registered = set(DatasetCatalog.list())
    missing = [n for n in EXPECTED_NAMES + DETECTRON2_NAMES if n not in registered]
    assert not missing, missing
    # detectron2's own datasets are left alone (not re-registered with other metadata) ...
    assert MetadataCatalog.get("ade20k_sem_seg_val").evaluator_type == "sem_seg"
    assert len(MetadataCatalog.get("coco_2017_val_panoptic").stuff_classes) == 133
    # ... except for the two metadata patches
    assert len(MetadataCatalog.get("coco_2017_val_panoptic").thing_classes) == 80
    assert len(MetadataCatalog.get("coco_2017_train_panoptic").thing_colors) == 80
    assert len(MetadataCatalog.get("ade20k_sem_seg_train").stuff_colors) == 150
    # rooted at $DETECTRON2_DATASETS (default "datasets")
    root = os.getenv("DETECTRON2_DATASETS", "datasets")
    assert MetadataCatalog.get("mapillary_vistas_sem_seg_val").sem_seg_root == os.path.join(
        root, "mapillary_vistas", "validation", "labels"
    )


def test_registration_is_idempotent_and_lazy(tmp_path, names):
    # importing/reloading the modules and registering again must not hit detectron2's
    # "already registered" assertion
    for mod in (coco_panoptic, ade20k, coco_stuff, mapillary_vistas):
        importlib.reload(mod)
    assert sorted(datasets_pkg.register_all_standard()) == sorted(EXPECTED_NAMES)
    assert len(MetadataCatalog.get("coco_2017_val_panoptic").thing_classes) == 80
    # nothing is read at registration: a missing root only fails when the data is loaded
    missing = str(tmp_path / "nowhere")
    (name,) = ade20k.register_all_ade20k_panoptic(missing, name_format=names, splits=["val"])
    with pytest.raises(FileNotFoundError, match="ade20k_panoptic_val.json"):
        DatasetCatalog.get(name)
    # registering the same name at another root replaces the paths
    ade20k.register_all_ade20k_panoptic(str(tmp_path), name_format=names, splits=["val"])
    new_root = str(tmp_path / "ADEChallengeData2016")
    assert MetadataCatalog.get(name).panoptic_root.startswith(new_root)


# ----------------------------------------------------------------------------- COCO panoptic

COCO_PERSON, COCO_BICYCLE, COCO_TREE, COCO_WALL = 1, 2, 184, 199  # dataset ids


def make_coco_panoptic(root, split="val"):
    """Two images with person/bicycle (things, one crowd) and tree/wall (stuff) segments."""
    coco = os.path.join(root, "coco")
    h, w = 16, 20
    images, annotations = [], []
    for image_id in (1, 2):
        base = f"{image_id:012d}"
        write_jpg(os.path.join(coco, f"{split}2017", base + ".jpg"), h, w, seed=image_id)
        ids = np.zeros((h, w), dtype=np.int64)  # 0 = VOID
        ids[:8, :] = 10  # wall
        ids[8:, :10] = 20  # tree
        ids[2:6, 2:6] = 30  # person
        ids[10:14, 12:16] = 40 + image_id  # bicycle (crowd in image 2)
        write_png(os.path.join(coco, f"panoptic_{split}2017", base + ".png"), id2rgb(ids))
        segs = [
            {"id": 10, "category_id": COCO_WALL, "iscrowd": 0, "area": 0, "bbox": [0, 0, 1, 1]},
            {"id": 20, "category_id": COCO_TREE, "iscrowd": 0, "area": 0, "bbox": [0, 0, 1, 1]},
            {"id": 30, "category_id": COCO_PERSON, "iscrowd": 0, "area": 0, "bbox": [0, 0, 1, 1]},
            {"id": 40 + image_id, "category_id": COCO_BICYCLE, "iscrowd": int(image_id == 2),
             "area": 0, "bbox": [0, 0, 1, 1]},
        ]  # fmt: skip
        images.append({"id": image_id, "file_name": base + ".jpg", "height": h, "width": w})
        annotations.append(
            {"image_id": image_id, "file_name": base + ".png", "segments_info": segs}
        )
    os.makedirs(os.path.join(coco, "annotations"), exist_ok=True)
    with open(os.path.join(coco, "annotations", f"panoptic_{split}2017.json"), "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": COCO_CATEGORIES}, f)


def test_prepare_coco_semantic_from_panoptic(tmp_path):
    make_coco_panoptic(str(tmp_path))
    script = load_script("prepare_coco_semantic_annos_from_panoptic")
    assert script.main(["--root", str(tmp_path), "--splits", "val", "--workers", "0"]) == 0
    sem = read(tmp_path / "coco/panoptic_semseg_val2017/000000000002.png")
    assert sem.dtype == np.uint8 and sem.shape == (16, 20)
    assert sem[0, 0] == 131  # wall-other-merged: index in the 133-class list
    assert sem[15, 0] == 116  # tree-merged
    assert sem[3, 3] == 0  # person
    assert sem[11, 13] == 1  # bicycle: crowd segments keep their class
    assert sem[15, 19] == 255  # VOID
    # the multiprocessing path gives the same result
    assert script.main(["--root", str(tmp_path), "--splits", "val", "--workers", "2"]) == 0
    again = read(tmp_path / "coco/panoptic_semseg_val2017/000000000002.png")
    np.testing.assert_array_equal(again, sem)


def test_coco_panoptic_with_sem_seg(tmp_path, names):
    make_coco_panoptic(str(tmp_path))
    load_script("prepare_coco_semantic_annos_from_panoptic").main(
        ["--root", str(tmp_path), "--splits", "val", "--workers", "0"]
    )
    (name,) = coco_panoptic.register_all_coco_panoptic_with_sem_seg(
        str(tmp_path), name_format=names, splits=["val"], patch_names=None
    )
    dicts = DatasetCatalog.get(name)
    assert [d["image_id"] for d in dicts] == [1, 2]
    for d in dicts:
        for key in ("file_name", "pan_seg_file_name", "sem_seg_file_name"):
            assert os.path.isfile(d[key]), d[key]
        assert d["file_name"].endswith("val2017/%012d.jpg" % d["image_id"])
        assert d["sem_seg_file_name"].endswith("panoptic_semseg_val2017/%012d.png" % d["image_id"])
        cats = {s["id"]: (s["category_id"], s["isthing"]) for s in d["segments_info"]}
        assert cats[10] == (131, False) and cats[20] == (116, False) and cats[30] == (0, True)
    assert dicts[1]["segments_info"][3]["iscrowd"] == 1

    meta = MetadataCatalog.get(name)
    assert meta.evaluator_type == "coco_panoptic_seg"
    assert meta.ignore_label == 255 and meta.label_divisor == 1000
    assert len(meta.thing_classes) == len(meta.thing_colors) == 80
    assert len(meta.stuff_classes) == len(meta.stuff_colors) == 133
    assert meta.thing_classes == meta.stuff_classes[:80]
    assert sorted(meta.thing_dataset_id_to_contiguous_id.values()) == list(range(80))
    assert sorted(meta.stuff_dataset_id_to_contiguous_id.values()) == list(range(133))
    assert meta.json_file == str(tmp_path / "coco/annotations/instances_val2017.json")
    assert meta.panoptic_json == str(tmp_path / "coco/annotations/panoptic_val2017.json")
    assert meta.sem_seg_root == str(tmp_path / "coco/panoptic_semseg_val2017")
    assert meta.image_root == str(tmp_path / "coco/val2017")


def test_patch_coco_panoptic_metadata(tmp_path, names):
    name = names.format(split="standard")
    register_coco_panoptic(
        name, _get_builtin_metadata("coco_panoptic_standard"), str(tmp_path), str(tmp_path),
        str(tmp_path / "p.json"), None,
    )  # fmt: skip
    assert len(MetadataCatalog.get(name).thing_classes) == 133
    coco_panoptic.patch_coco_panoptic_metadata(name)
    coco_panoptic.patch_coco_panoptic_metadata(name)  # twice: no "attribute already set" error
    meta = MetadataCatalog.get(name)
    assert meta.thing_classes == [c["name"] for c in COCO_CATEGORIES[:80]]
    assert len(meta.thing_colors) == 80 and len(meta.stuff_classes) == 133


# ----------------------------------------------------------------------------- ADE20K

ADE_H, ADE_W = 12, 16
# raw semantic values (ADE-150 id + 1): wall 1, floor 4, sky 3, bed 8, person 13
RAW_WALL, RAW_FLOOR, RAW_SKY, RAW_BED, RAW_PERSON = 1, 4, 3, 8, 13
INS_BED, INS_PERSON = 1, 4  # instance-challenge class ids (R channel)


def make_ade20k(root):
    """Two images per split: wall/sky/floor stuff, two beds and a person as instances."""
    ade = os.path.join(root, "ADEChallengeData2016")
    for split, dirname in (("train", "training"), ("val", "validation")):
        for k in (1, 2):
            base = f"ADE_{split}_{k:08d}"
            write_jpg(os.path.join(ade, "images", dirname, base + ".jpg"), ADE_H, ADE_W, seed=k)
            sem = np.zeros((ADE_H, ADE_W), np.uint8)  # 0 = unlabeled (last row)
            sem[:4] = RAW_SKY
            sem[4:11] = RAW_WALL
            sem[8:11, 12:16] = RAW_FLOOR  # entirely covered by the person below
            sem[6:9, 1:5] = RAW_BED  # bed 1 (instance covers it all)
            sem[6:9, 6:10] = RAW_BED  # bed 2: its instance covers only the left half
            write_png(os.path.join(ade, "annotations", dirname, base + ".png"), sem)
            ins = np.zeros((ADE_H, ADE_W, 3), np.uint8)
            ins[6:9, 1:5] = (INS_BED, 1, 0)
            ins[6:9, 6:8] = (INS_BED, 2, 0)
            ins[7:11, 11:16] = (INS_PERSON, 3, 0)  # also covers wall pixels
            write_png(os.path.join(ade, "annotations_instance", dirname, base + ".png"), ins)


def test_prepare_ade20k_sem_seg(tmp_path):
    make_ade20k(str(tmp_path))
    assert load_script("prepare_ade20k_sem_seg").main(["--root", str(tmp_path)]) == 0
    for dirname in ("training", "validation"):
        out = tmp_path / "ADEChallengeData2016/annotations_detectron2" / dirname
        assert len(os.listdir(out)) == 2
    out = tmp_path / "ADEChallengeData2016/annotations_detectron2/validation"
    lab = read(out / "ADE_val_00000001.png")
    assert lab.dtype == np.uint8
    assert lab[0, 0] == RAW_SKY - 1 and lab[5, 0] == RAW_WALL - 1 and lab[7, 2] == RAW_BED - 1
    assert lab[11, 0] == 255  # unlabeled


def test_prepare_ade20k_pan_seg(tmp_path):
    make_ade20k(str(tmp_path))
    script = load_script("prepare_ade20k_pan_seg")
    assert script.main(["--root", str(tmp_path), "--splits", "val"]) == 0
    ade = tmp_path / "ADEChallengeData2016"
    with open(ade / "ade20k_panoptic_val.json") as f:
        pan_json = json.load(f)
    assert len(pan_json["categories"]) == 150
    assert sum(c["isthing"] for c in pan_json["categories"]) == 100
    assert [im["id"] for im in pan_json["images"]] == ["ADE_val_00000001", "ADE_val_00000002"]
    assert pan_json["images"][0]["height"] == ADE_H and pan_json["images"][0]["width"] == ADE_W
    ann = pan_json["annotations"][0]
    ids = rgb2id(read(ade / "ade20k_panoptic_val" / ann["file_name"]))
    segs = ann["segments_info"]
    # stuff: wall, sky, floor (listed although the person covers it); things: 2 beds, 1 person
    assert sorted(s["category_id"] for s in segs) == [0, 2, 3, 7, 7, 12]
    assert len({s["id"] for s in segs}) == 6
    by_cat = {s["category_id"]: s for s in segs}
    # as the official script: stuff areas/boxes are those of the whole semantic region
    assert by_cat[3]["area"] == 12 and by_cat[3]["bbox"] == [12, 8, 4, 3]
    assert (ids == by_cat[3]["id"]).sum() == 0
    assert by_cat[0]["area"] == 7 * 16 - 2 * 12 - 12
    for cat in (2, 7, 12):  # segments nothing paints over: area and box match the PNG
        for s in segs:
            if s["category_id"] == cat:
                mask = ids == s["id"]
                assert s["area"] == mask.sum() > 0
                assert s["bbox"] == bbox_of(mask)
    seg_of = {s["id"]: s["category_id"] for s in segs}
    assert seg_of[ids[7, 12]] == 12  # the person is painted over the wall
    assert ids[7, 9] == 0  # bed pixels without instance: VOID
    assert ids[11, 0] == 0  # unlabeled: VOID
    # bed instances get distinct ids
    assert ids[7, 2] != ids[7, 6] and seg_of[ids[7, 2]] == seg_of[ids[7, 6]] == 7
    # reproducible
    script.main(["--root", str(tmp_path), "--splits", "val"])
    np.testing.assert_array_equal(rgb2id(read(ade / "ade20k_panoptic_val" / ann["file_name"])), ids)

    # --visible-areas: measured on the PNG, the fully covered floor is dropped
    assert script.main(["--root", str(tmp_path), "--splits", "val", "--visible-areas"]) == 0
    with open(ade / "ade20k_panoptic_val.json") as f:
        segs = json.load(f)["annotations"][0]["segments_info"]
    assert sorted(s["category_id"] for s in segs) == [0, 2, 7, 7, 12]
    for s in segs:
        mask = ids == s["id"]
        assert s["area"] == mask.sum() > 0
        assert s["bbox"] == bbox_of(mask)


def test_prepare_ade20k_ins_seg(tmp_path):
    make_ade20k(str(tmp_path))
    script = load_script("prepare_ade20k_ins_seg")
    assert script.main(["--root", str(tmp_path), "--splits", "val"]) == 0
    with open(tmp_path / "ADEChallengeData2016/ade20k_instance_val.json") as f:
        ins_json = json.load(f)
    assert [c["id"] for c in ins_json["categories"]] == ADE20K_THING_IDS
    anns = ins_json["annotations"]
    assert [a["id"] for a in anns] == list(range(1, 7))
    assert [a["image_id"] for a in anns] == ["ADE_val_00000001"] * 3 + ["ADE_val_00000002"] * 3
    assert [a["category_id"] for a in anns[:3]] == [7, 7, 12]  # ADE-150 ids of bed, bed, person
    person = anns[2]
    assert person["bbox"] == [11, 7, 5, 4] and person["area"] == 20
    assert mask_util.decode(person["segmentation"]).sum() == 20


def test_ade20k_panoptic_and_instance(tmp_path, names):
    make_ade20k(str(tmp_path))
    for script in ("prepare_ade20k_sem_seg", "prepare_ade20k_pan_seg", "prepare_ade20k_ins_seg"):
        assert load_script(script).main(["--root", str(tmp_path)]) == 0

    pan_names = ade20k.register_all_ade20k_panoptic(str(tmp_path), name_format="pan" + names)
    for split, name in zip(("train", "val"), pan_names):
        dicts = DatasetCatalog.get(name)
        assert [d["image_id"] for d in dicts] == [f"ADE_{split}_{k:08d}" for k in (1, 2)]
        for d in dicts:
            for key in ("file_name", "pan_seg_file_name", "sem_seg_file_name"):
                assert os.path.isfile(d[key]), d[key]
            assert "annotations_detectron2" in d["sem_seg_file_name"]
            got = sorted((s["category_id"], s["isthing"]) for s in d["segments_info"])
            assert got == [(0, False), (2, False), (3, False), (7, True), (7, True), (12, True)]
        meta = MetadataCatalog.get(name)
        assert meta.evaluator_type == "ade20k_panoptic_seg"
        assert meta.ignore_label == 255 and meta.label_divisor == 1000
        assert len(meta.thing_classes) == len(meta.thing_colors) == 100
        assert len(meta.stuff_classes) == len(meta.stuff_colors) == 150
        assert len(meta.thing_dataset_id_to_contiguous_id) == 100
        assert len(meta.stuff_dataset_id_to_contiguous_id) == 150
        ins_json = tmp_path / f"ADEChallengeData2016/ade20k_instance_{split}.json"
        assert meta.json_file == str(ins_json)
        assert os.path.isfile(meta.json_file)

    (ins_name,) = ade20k.register_all_ade20k_instance(
        str(tmp_path), name_format="ins" + names, splits=["val"]
    )
    dicts = DatasetCatalog.get(ins_name)  # detectron2's load_coco_json checks thing_classes too
    assert len(dicts) == 2 and all(os.path.isfile(d["file_name"]) for d in dicts)
    assert [a["category_id"] for a in dicts[0]["annotations"]] == [0, 0, 3]  # bed, bed, person
    meta = MetadataCatalog.get(ins_name)
    assert meta.evaluator_type == "coco" and len(meta.thing_classes) == 100
    assert meta.thing_dataset_id_to_contiguous_id[12] == 3


def test_ade20k_sem_seg_patch(names):
    name = names.format(split="sem")
    MetadataCatalog.get(name).set(stuff_classes=["x"] * 150, stuff_colors=[[0, 0, 0]] * 150)
    ade20k.patch_ade20k_sem_seg_metadata([name, names.format(split="absent")])
    colors = MetadataCatalog.get(name).stuff_colors
    assert len(colors) == 150 and colors[0] == [120, 120, 120]
    assert names.format(split="absent") not in MetadataCatalog.list()


def make_ade20k_full(root):
    """Full-ADE20K layout: index pickle, images and *_seg.png (one image larger than 512)."""
    base = os.path.join(root, "ADE20K_2021_17_01")
    folders, files = [], []
    wall, bed = ADE20K_FULL_CATEGORIES[0], ADE20K_FULL_CATEGORIES[7]
    sizes = {"ADE_train_00000001.jpg": (10, 14), "ADE_val_00000001.jpg": (520, 530)}
    for file_name, (h, w) in sizes.items():
        split = "validation" if "_val_" in file_name else "training"
        folder = f"ADE20K_2021_17_01/images/ADE/{split}/some_scene"
        write_jpg(os.path.join(root, folder, file_name), h, w)
        ade_ids = np.zeros((h, w), np.int64)  # 0: unlabeled
        ade_ids[: h // 2] = wall["id"]
        ade_ids[h // 2:, :w // 2] = bed["id"]
        ade_ids[h // 2:, w // 2:] = 246  # an ADE class outside the 847
        seg = np.zeros((h, w, 3), np.uint8)
        seg[..., 0] = ade_ids // 256 * 10
        seg[..., 1] = ade_ids % 256
        seg[..., 2] = 7  # instance channel: ignored
        write_png(os.path.join(root, folder, file_name.replace(".jpg", "_seg.png")), seg)
        folders.append(folder)
        files.append(file_name)
    with open(os.path.join(base, "index_ade20k.pkl"), "wb") as f:
        pickle.dump({"folder": folders, "filename": files}, f)


def test_ade20k_full(tmp_path, names):
    make_ade20k_full(str(tmp_path))
    script = load_script("prepare_ade20k_full_sem_seg")
    assert script.target_size(520, 530) == (512, 522)
    assert script.target_size(512, 900) is None
    assert script.main(["--root", str(tmp_path)]) == 0

    train, val = ade20k.register_all_ade20k_full(str(tmp_path), name_format=names)
    (d,) = DatasetCatalog.get(val)
    assert os.path.isfile(d["file_name"]) and d["sem_seg_file_name"].endswith(".tif")
    label = read(d["sem_seg_file_name"])
    assert label.dtype == np.uint16 and label.shape == (512, 522)
    assert Image.open(d["file_name"]).size == (522, 512)
    assert label[0, 0] == 0 and label[-1, 0] == 7 and label[-1, -1] == 65535
    (d,) = DatasetCatalog.get(train)
    assert read(d["sem_seg_file_name"]).shape == (10, 14)
    meta = MetadataCatalog.get(val)
    assert len(meta.stuff_classes) == 847
    assert meta.ignore_label == 65535 and meta.evaluator_type == "sem_seg"


# ----------------------------------------------------------------------------- COCO-Stuff-10k


def test_coco_stuff_10k(tmp_path, names):
    from scipy.io import savemat

    base = tmp_path / "coco/coco_stuff_10k"
    os.makedirs(base / "imageLists")
    os.makedirs(base / "annotations")
    splits = {"train": [77, 78], "test": [79, 80]}
    for split, stems in ((k, [f"COCO_train2014_{i:012d}" for i in v]) for k, v in splits.items()):
        (base / "imageLists" / f"{split}.txt").write_text("\n".join(stems) + "\n")
        for k, stem in enumerate(stems):
            write_jpg(str(base / "images" / (stem + ".jpg")), 8, 6, seed=k)
            s = np.zeros((8, 6), np.uint8)  # 0 = unlabeled
            s[0] = 1  # person
            s[1] = 92  # banner, first stuff class
            s[2] = 182  # wood, last class
            s[3] = 90  # toothbrush, last thing
            savemat(str(base / "annotations" / (stem + ".mat")), {"S": s})
    assert load_script("prepare_coco_stuff_10k_sem_seg").main(["--root", str(tmp_path)]) == 0

    train, test = coco_stuff.register_all_coco_stuff_10k(str(tmp_path), name_format=names)
    for name in (train, test):
        dicts = DatasetCatalog.get(name)
        assert len(dicts) == 2
        for d in dicts:
            assert os.path.isfile(d["file_name"]) and os.path.isfile(d["sem_seg_file_name"])
    label = read(DatasetCatalog.get(test)[0]["sem_seg_file_name"])
    assert label[:, 0].tolist() == [0, 80, 170, 79, 255, 255, 255, 255]
    meta = MetadataCatalog.get(train)
    assert len(meta.stuff_classes) == 171 and len(meta.stuff_dataset_id_to_contiguous_id) == 171
    assert meta.stuff_dataset_id_to_contiguous_id[92] == 80
    assert meta.ignore_label == 255 and meta.evaluator_type == "sem_seg"
    assert meta.image_root == str(base / "images_detectron2/train")


# ----------------------------------------------------------------------------- Mapillary Vistas


def make_mapillary(root):
    mv = os.path.join(root, "mapillary_vistas")
    for dirname in ("training", "validation"):
        images, annotations = [], []
        for k, stem in enumerate(("aaa", "bbb")):
            write_jpg(os.path.join(mv, dirname, "images", stem + ".jpg"), 6, 8, seed=k)
            labels = np.full((6, 8), 65, np.uint8)  # unlabeled
            labels[:3] = 13  # Road
            labels[3:, :4] = 19  # Person
            write_png(os.path.join(mv, dirname, "labels", stem + ".png"), labels)
            ids = np.zeros((6, 8), np.int64)
            ids[:3] = 5
            ids[3:, :4] = 9
            write_png(os.path.join(mv, dirname, "panoptic", stem + ".png"), id2rgb(ids))
            images.append({"id": stem, "file_name": stem + ".jpg", "height": 6, "width": 8})
            annotations.append({
                "image_id": stem, "file_name": stem + ".png",
                "segments_info": [
                    {"id": 5, "category_id": 14, "iscrowd": 0, "area": 24, "bbox": [0, 0, 8, 3]},
                    {"id": 9, "category_id": 20, "iscrowd": 0, "area": 12, "bbox": [0, 3, 4, 3]},
                ],
            })  # fmt: skip
        with open(os.path.join(mv, dirname, "panoptic", "panoptic_2018.json"), "w") as f:
            json.dump({"images": images, "annotations": annotations, "categories": []}, f)


def test_mapillary_vistas(tmp_path, names):
    make_mapillary(str(tmp_path))
    sem_train, sem_val = mapillary_vistas.register_all_mapillary_vistas_sem_seg(
        str(tmp_path), name_format="sem" + names
    )
    dicts = DatasetCatalog.get(sem_val)
    assert len(dicts) == 2
    for d in dicts:
        assert os.path.isfile(d["file_name"]) and os.path.isfile(d["sem_seg_file_name"])
    meta = MetadataCatalog.get(sem_train)
    assert len(meta.stuff_classes) == len(meta.stuff_colors) == 65
    assert meta.stuff_classes[13] == "Road"
    assert meta.ignore_label == 65 and meta.evaluator_type == "sem_seg"

    pan_train, pan_val = mapillary_vistas.register_all_mapillary_vistas_panoptic(
        str(tmp_path), name_format="pan" + names
    )
    for name in (pan_train, pan_val):
        dicts = DatasetCatalog.get(name)
        assert [d["image_id"] for d in dicts] == ["aaa", "bbb"]
        for d in dicts:
            for key in ("file_name", "pan_seg_file_name", "sem_seg_file_name"):
                assert os.path.isfile(d[key]), d[key]
            got = [(s["id"], s["category_id"], s["isthing"]) for s in d["segments_info"]]
            assert got == [(5, 13, False), (9, 19, True)]
    meta = MetadataCatalog.get(pan_val)
    assert meta.evaluator_type == "mapillary_vistas_panoptic_seg"
    assert meta.ignore_label == 65 and meta.label_divisor == 1000
    assert len(meta.stuff_classes) == len(meta.thing_classes) == 65
    assert len(meta.thing_dataset_id_to_contiguous_id) == 37
    assert meta.stuff_dataset_id_to_contiguous_id == {k: k - 1 for k in range(1, 66)}
    pan_json = tmp_path / "mapillary_vistas/validation/panoptic/panoptic_2018.json"
    assert meta.panoptic_json == str(pan_json)


# ----------------------------------------------------------------------------- script errors


@pytest.mark.parametrize(
    "script, missing",
    [
        ("prepare_coco_semantic_annos_from_panoptic", "panoptic_train2017.json"),
        ("prepare_ade20k_sem_seg", os.path.join("annotations", "training")),
        ("prepare_ade20k_pan_seg", os.path.join("images", "training")),
        ("prepare_ade20k_ins_seg", os.path.join("images", "training")),
        ("prepare_ade20k_full_sem_seg", "index_ade20k.pkl"),
        ("prepare_coco_stuff_10k_sem_seg", "train.txt"),
    ],
)
def test_prepare_scripts_name_missing_input(tmp_path, capsys, script, missing):
    assert load_script(script).main(["--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert missing in err and str(tmp_path) in err


def test_prepare_script_cli(tmp_path):
    """The scripts run as plain programs; --root defaults to $DETECTRON2_DATASETS."""
    make_ade20k(str(tmp_path))
    env = dict(os.environ, DETECTRON2_DATASETS=str(tmp_path))
    out = subprocess.run(
        [sys.executable, os.path.join(TOOLS, "prepare_ade20k_sem_seg.py")],
        env=env, capture_output=True, text=True, cwd=str(tmp_path),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "[validation] 2/2" in out.stdout
    out = tmp_path / "ADEChallengeData2016/annotations_detectron2/validation"
    assert (out / "ADE_val_00000002.png").is_file()
