"""Tests of the synthetic toy dataset: generation, format consistency, registration, and use."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO

from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog
from detectron2.evaluation import SemSegEvaluator
from detectron2.structures import BitMasks, PolygonMasks, polygons_to_bitmask

from segcommon.data.datasets.toy import (
    DEFAULT_NUM_TRAIN,
    DEFAULT_NUM_VAL,
    TOY_CATEGORIES,
    generate_toy_dataset,
    register_all_toy,
    register_toy_datasets,
    rgb2id,
)

SIZE = 64
THING_IDS = [1, 2, 4]
ALL_IDS = [1, 2, 4, 7, 8, 11]
NAMES = [f"toy_{k}_{s}" for k in ("instance", "panoptic", "sem_seg") for s in ("train", "val")]


def _tree(root):
    """{relative path: bytes} of every file under root."""
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            path = os.path.join(d, f)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, root)] = fh.read()
    return out


def _read(path):
    return np.asarray(Image.open(path))


def _bbox(mask):
    ys, xs = np.nonzero(mask)
    return [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()]


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("toy"))
    generate_toy_dataset(root, num_train=8, num_val=6, image_size=SIZE, seed=3)
    return root


@pytest.fixture
def registered(toy_root):
    register_toy_datasets(toy_root)
    yield toy_root
    register_all_toy()  # restore the default-root registration for other tests


def test_deterministic(tmp_path):
    kw = dict(num_train=3, num_val=2, image_size=SIZE)
    generate_toy_dataset(str(tmp_path / "a"), seed=5, **kw)
    generate_toy_dataset(str(tmp_path / "b"), seed=5, **kw)
    generate_toy_dataset(str(tmp_path / "c"), seed=6, **kw)
    a, b, c = (_tree(str(tmp_path / n)) for n in "abc")
    assert len(a) == 3 * (3 + 2) + 1 + 2 * 2  # 3 PNGs per image, the marker, 2 jsons per split
    assert a == b
    assert a["train/images/000000.png"] != c["train/images/000000.png"]


@pytest.mark.parametrize("split", ["train", "val"])
def test_instances_match_panoptic(toy_root, split):
    coco = COCO(os.path.join(toy_root, split, "instances.json"))
    assert sorted(coco.getCatIds()) == THING_IDS
    with open(os.path.join(toy_root, split, "panoptic.json")) as f:
        pan_json = json.load(f)
    assert [c["id"] for c in pan_json["categories"]] == ALL_IDS
    assert {c["id"] for c in pan_json["categories"] if c["isthing"]} == set(THING_IDS)

    num_things = 0
    for ann in pan_json["annotations"]:
        pan = rgb2id(_read(os.path.join(toy_root, split, "panoptic", ann["file_name"])))
        things = [s for s in ann["segments_info"] if s["category_id"] in THING_IDS]
        instances = coco.loadAnns(coco.getAnnIds(imgIds=[ann["image_id"]]))
        assert 1 <= len(instances) <= 6 and len(instances) == len(things)
        for seg, inst in zip(things, instances):
            assert inst["category_id"] == seg["category_id"] and inst["iscrowd"] == 0
            assert all(len(p) >= 6 and len(p) % 2 == 0 for p in inst["segmentation"])
            mask = coco.annToMask(inst).astype(bool)
            np.testing.assert_array_equal(mask, pan == seg["id"])
            assert inst["area"] == mask.sum()
            assert inst["bbox"] == _bbox(mask)
            num_things += 1
    assert num_things == len(coco.getAnnIds())


@pytest.mark.parametrize("split", ["train", "val"])
def test_panoptic_png_and_semantic(toy_root, split):
    with open(os.path.join(toy_root, split, "panoptic.json")) as f:
        pan_json = json.load(f)
    contiguous = {c["id"]: i for i, c in enumerate(TOY_CATEGORIES)}
    for ann in pan_json["annotations"]:
        pan_png = _read(os.path.join(toy_root, split, "panoptic", ann["file_name"]))
        assert pan_png.shape == (SIZE, SIZE, 3) and pan_png.dtype == np.uint8
        pan = rgb2id(pan_png)
        sem = _read(os.path.join(toy_root, split, "semantic", ann["file_name"]))
        assert sem.shape == (SIZE, SIZE) and sem.dtype == np.uint8
        segs = ann["segments_info"]
        assert sorted(np.unique(pan[pan != 0]).tolist()) == sorted(s["id"] for s in segs)
        assert (pan[0] == 0).all()  # the VOID frame
        for s in segs:
            m = pan == s["id"]
            assert s["area"] == m.sum() and s["bbox"] == _bbox(m) and s["iscrowd"] == 0
            assert (sem[m] == contiguous[s["category_id"]]).all()
        np.testing.assert_array_equal(sem == 255, pan == 0)


@pytest.mark.parametrize("split", ["train", "val"])
def test_object_colour_tells_the_class(toy_root, split):
    # each thing class has its own colour families: an object's mean colour lies nearer to its own
    # class's families than to any other class's
    families = {
        1: [(220, 40, 40), (200, 60, 200)],
        2: [(50, 80, 220), (40, 170, 170)],
        4: [(240, 220, 50), (240, 140, 30)],
    }
    coco = COCO(os.path.join(toy_root, split, "instances.json"))
    for img in coco.loadImgs(coco.getImgIds()):
        image = _read(os.path.join(toy_root, split, "images", img["file_name"])).astype(float)
        for inst in coco.loadAnns(coco.getAnnIds(imgIds=[img["id"]])):
            mean = image[coco.annToMask(inst).astype(bool)].mean(0)
            dist = {c: min(np.linalg.norm(mean - f) for f in fs) for c, fs in families.items()}
            assert min(dist, key=dist.get) == inst["category_id"], (img["file_name"], dist)


def test_registered_datasets(registered):
    for name in NAMES:
        assert name in DatasetCatalog.list()
    inst = DatasetCatalog.get("toy_instance_train")
    assert len(inst) == 8
    meta = MetadataCatalog.get("toy_instance_train")
    assert meta.thing_classes == ["circle", "square", "triangle"]
    assert meta.thing_dataset_id_to_contiguous_id == {1: 0, 2: 1, 4: 2}
    assert meta.evaluator_type == "coco" and os.path.isfile(meta.json_file)
    assert {a["category_id"] for d in inst for a in d["annotations"]} <= {0, 1, 2}
    assert all(os.path.isfile(d["file_name"]) for d in inst)

    pan = DatasetCatalog.get("toy_panoptic_val")
    assert len(pan) == 6
    meta = MetadataCatalog.get("toy_panoptic_val")
    assert meta.stuff_classes == ["circle", "square", "triangle", "sky", "ground", "wall"]
    assert meta.thing_classes == ["circle", "square", "triangle"]
    assert meta.stuff_dataset_id_to_contiguous_id == {k: i for i, k in enumerate(ALL_IDS)}
    assert meta.thing_dataset_id_to_contiguous_id == {1: 0, 2: 1, 4: 2}
    assert (meta.ignore_label, meta.label_divisor) == (255, 1000)
    assert meta.evaluator_type == "coco_panoptic_seg"
    assert len(meta.thing_colors) == 3 and len(meta.stuff_colors) == 6
    for key in ("panoptic_json", "json_file"):
        assert os.path.isfile(getattr(meta, key))
    for key in ("panoptic_root", "sem_seg_root", "image_root"):
        assert os.path.isdir(getattr(meta, key))
    for d in pan:
        assert {"file_name", "image_id", "height", "width", "pan_seg_file_name"} <= set(d)
        ids = rgb2id(_read(d["pan_seg_file_name"]))
        sem = _read(d["sem_seg_file_name"])
        for s in d["segments_info"]:
            assert 0 <= s["category_id"] < 6 and s["isthing"] == (s["category_id"] < 3)
            assert (sem[ids == s["id"]] == s["category_id"]).all()

    sem_dicts = DatasetCatalog.get("toy_sem_seg_train")
    assert len(sem_dicts) == 8
    assert set(sem_dicts[0]) == {"file_name", "sem_seg_file_name", "height", "width"}
    meta = MetadataCatalog.get("toy_sem_seg_train")
    assert len(meta.stuff_classes) == 6 and meta.ignore_label == 255
    assert meta.evaluator_type == "sem_seg"


def test_registration_idempotent(registered, tmp_path):
    loader = DatasetCatalog["toy_panoptic_train"]
    register_toy_datasets(registered)
    assert DatasetCatalog["toy_panoptic_train"] is loader
    # a different root replaces datasets and metadata; nothing is generated until loaded
    other = str(tmp_path / "other")
    register_toy_datasets(other)
    assert DatasetCatalog["toy_panoptic_train"] is not loader
    assert MetadataCatalog.get("toy_instance_val").json_file.startswith(other)
    assert not os.path.exists(other)


def test_generated_on_first_use_and_stale_copies_replaced(tmp_path):
    root = str(tmp_path / "lazy")
    # a copy written by the first generator (64 + 16 images, no version in its marker)
    generate_toy_dataset(root, num_train=2, num_val=1, image_size=SIZE)
    marker = os.path.join(root, "toy_dataset.json")
    with open(marker) as f:
        params = json.load(f)
    del params["version"]
    with open(marker, "w") as f:
        json.dump(params, f)
    try:
        register_toy_datasets(root)
        dicts = DatasetCatalog.get("toy_sem_seg_val")
        assert len(dicts) == DEFAULT_NUM_VAL == 100 and dicts[0]["height"] == 128
        assert len(DatasetCatalog.get("toy_instance_train")) == DEFAULT_NUM_TRAIN == 1000
        with open(marker) as f:
            assert json.load(f)["version"] >= 3
    finally:
        register_all_toy()


def test_default_registration_on_import():
    import segcommon.data.datasets  # noqa: F401

    default = os.path.join(os.getenv("DETECTRON2_DATASETS", "datasets"), "toy")
    for name in NAMES:
        assert name in DatasetCatalog.list()
    assert MetadataCatalog.get("toy_panoptic_val").panoptic_root == os.path.join(
        default, "val", "panoptic"
    )


@pytest.mark.parametrize("min_size", [SIZE, 2 * SIZE])
def test_dataset_mapper(registered, min_size):
    cfg = get_cfg()
    cfg.MODEL.MASK_ON = True
    cfg.INPUT.MASK_FORMAT = "polygon"
    cfg.INPUT.MIN_SIZE_TRAIN = (min_size,)
    cfg.INPUT.MAX_SIZE_TRAIN = 4 * SIZE
    mapper = DatasetMapper(cfg, is_train=True)
    for d in DatasetCatalog.get("toy_instance_train")[:3]:
        out = mapper(d)
        assert out["image"].shape == (3, min_size, min_size)
        inst = out["instances"]
        assert inst.image_size == (min_size, min_size)
        assert len(inst) == len(d["annotations"])
        assert isinstance(inst.gt_masks, PolygonMasks)
        masks = BitMasks.from_polygon_masks(inst.gt_masks, min_size, min_size).tensor
        assert masks.shape == (len(inst), min_size, min_size)
        annos = d["annotations"]
        if min_size == SIZE:
            # no rescaling: a (possibly flipped) polygon rasterises to the same pixel count
            areas = [polygons_to_bitmask(a["segmentation"], SIZE, SIZE).sum() for a in annos]
            assert sorted(masks.sum(dim=(1, 2)).tolist()) == sorted(areas)


def test_sem_seg_evaluator_on_ground_truth(registered):
    evaluator = SemSegEvaluator("toy_sem_seg_val", distributed=False)
    evaluator.reset()
    for d in DatasetCatalog.get("toy_sem_seg_val"):
        gt = torch.from_numpy(_read(d["sem_seg_file_name"]).astype(np.int64))
        logits = torch.nn.functional.one_hot(torch.where(gt == 255, 0, gt), 6)
        evaluator.process([d], [{"sem_seg": logits.permute(2, 0, 1).float()}])
    res = evaluator.evaluate()["sem_seg"]
    assert res["mIoU"] == pytest.approx(100.0)
    assert res["pACC"] == pytest.approx(100.0)
