"""Tests of the training dataset mappers (segcommon.data.dataset_mappers) on the toy datasets."""
import copy
import random

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_util

from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
from detectron2.data import detection_utils as utils
from detectron2.projects.point_rend import ColorAugSSDTransform

from segcommon.config import add_common_config
from segcommon.data import MAPPER_REGISTRY, build_dataset_mapper
from segcommon.data.dataset_mappers.coco_instance_lsj import COCOInstanceLSJDatasetMapper
from segcommon.data.dataset_mappers.coco_panoptic_lsj import COCOPanopticLSJDatasetMapper
from segcommon.data.dataset_mappers.mask_former_instance import MaskFormerInstanceDatasetMapper
from segcommon.data.dataset_mappers.mask_former_panoptic import MaskFormerPanopticDatasetMapper
from segcommon.data.dataset_mappers.mask_former_semantic import MaskFormerSemanticDatasetMapper
from segcommon.data.datasets.toy import register_toy_datasets, rgb2id

SIZE = 128  # toy image size
IGNORE = 255
NUM_IMAGES = 3  # dicts per test, to keep the run short

MAPPERS = {
    "coco_instance_lsj": COCOInstanceLSJDatasetMapper,
    "coco_panoptic_lsj": COCOPanopticLSJDatasetMapper,
    "mask_former_semantic": MaskFormerSemanticDatasetMapper,
    "mask_former_panoptic": MaskFormerPanopticDatasetMapper,
    "mask_former_instance": MaskFormerInstanceDatasetMapper,
}
TRAIN_SET = {
    "coco_instance_lsj": "toy_instance_train",
    "coco_panoptic_lsj": "toy_panoptic_train",
    "mask_former_semantic": "toy_sem_seg_train",
    "mask_former_panoptic": "toy_panoptic_train",
    "mask_former_instance": "toy_instance_train",
}


@pytest.fixture(scope="module")
def toy(toy_root):
    # register again: other test modules may have re-registered the toy names elsewhere
    register_toy_datasets(toy_root)
    return {name: DatasetCatalog.get(name)[:NUM_IMAGES] for name in set(TRAIN_SET.values())}


@pytest.fixture(autouse=True)
def _seed():
    np.random.seed(0)  # detectron2's augmentations draw from numpy's global RNG
    random.seed(0)  # the SSD colour augmentation draws from Python's


def make_cfg(mapper: str, **input_overrides):
    """A small config for ``mapper``; ``input_overrides`` set INPUT keys ("A__B" sets A.B)."""
    cfg = get_cfg()
    add_common_config(cfg)
    cfg.INPUT.DATASET_MAPPER_NAME = mapper
    cfg.INPUT.FORMAT = "RGB"
    cfg.DATASETS.TRAIN = (TRAIN_SET[mapper],)
    cfg.INPUT.IMAGE_SIZE = SIZE
    cfg.INPUT.MIN_SCALE = cfg.INPUT.MAX_SCALE = 1.0
    cfg.INPUT.RANDOM_FLIP = "none"
    cfg.INPUT.MIN_SIZE_TRAIN = (SIZE,)  # shortest edge already 128: the resize is the identity
    cfg.INPUT.MAX_SIZE_TRAIN = 4 * SIZE
    for key, value in input_overrides.items():
        node = cfg.INPUT
        *parents, leaf = key.split("__")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return cfg


def crop_cfg(mapper: str, crop_size, **input_overrides):
    """:func:`make_cfg` with an enabled "absolute" crop of ``crop_size`` (h, w)."""
    crop = dict(CROP__ENABLED=True, CROP__TYPE="absolute", CROP__SIZE=list(crop_size))
    return make_cfg(mapper, **crop, **input_overrides)


def read_rgb(path):
    return utils.read_image(path, format="RGB")


def polygon_mask(polygons, h=SIZE, w=SIZE):
    """pycocotools rasterisation of one object's polygons (union), uint8 (h, w)."""
    return mask_util.decode(mask_util.merge(mask_util.frPyObjects(polygons, h, w)))


def tight_box(mask):
    """XYXY box of a mask's pixels in pixel-corner coordinates."""
    ys, xs = np.nonzero(mask)
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def save_png(path, array):
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)
    return str(path)


# ------------------------------------------------------------------------------------------------
# Registry / construction
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(MAPPERS))
def test_build_by_name(toy, name):
    assert name in MAPPER_REGISTRY
    mapper = build_dataset_mapper(crop_cfg(name, (96, 96)))
    assert type(mapper) is MAPPERS[name]


def test_train_only(toy):
    for name in ("coco_instance_lsj", "coco_panoptic_lsj"):
        with pytest.raises(ValueError, match="training only"):
            build_dataset_mapper(make_cfg(name), is_train=False)
    mapper = build_dataset_mapper(make_cfg("mask_former_semantic"), is_train=False)
    with pytest.raises(RuntimeError, match="only be used for training"):
        mapper(toy["toy_sem_seg_train"][0])


# ------------------------------------------------------------------------------------------------
# COCO instance, large-scale jitter
# ------------------------------------------------------------------------------------------------
def test_instance_lsj_identity_matches_polygons(toy):
    mapper = build_dataset_mapper(make_cfg("coco_instance_lsj"))
    for d in toy["toy_instance_train"]:
        out = mapper(d)
        assert {"image", "padding_mask", "instances"} <= set(out) and "annotations" not in out
        image, inst = out["image"], out["instances"]
        assert image.dtype == torch.uint8 and image.shape == (3, SIZE, SIZE)
        assert np.array_equal(image.permute(1, 2, 0).numpy(), read_rgb(d["file_name"]))
        assert out["padding_mask"].dtype == torch.bool and not out["padding_mask"].any()
        assert inst.image_size == (SIZE, SIZE)

        annos = [a for a in d["annotations"] if not a.get("iscrowd", 0)]
        expected = np.stack([polygon_mask(a["segmentation"]) for a in annos])
        assert inst.gt_masks.dtype == torch.uint8
        assert np.array_equal(inst.gt_masks.numpy(), expected)
        assert inst.gt_classes.dtype == torch.int64
        assert inst.gt_classes.tolist() == [a["category_id"] for a in annos]
        assert set(inst.gt_classes.tolist()) <= {0, 1, 2}  # contiguous thing ids
        boxes = [tight_box(m) for m in expected]
        assert np.allclose(inst.gt_boxes.tensor.numpy(), boxes)


def test_instance_lsj_drops_crowd(toy):
    mapper = build_dataset_mapper(make_cfg("coco_instance_lsj"))
    d = copy.deepcopy(toy["toy_instance_train"][0])
    full = mapper(d)["instances"]
    d["annotations"][0]["iscrowd"] = 1
    out = mapper(d)["instances"]
    assert len(out) == len(full) - 1
    assert torch.equal(out.gt_masks, full.gt_masks[1:])

    d["annotations"] = []
    empty = mapper(d)["instances"]
    assert empty.gt_masks.shape == (0, SIZE, SIZE) and empty.gt_masks.dtype == torch.uint8


@pytest.mark.parametrize("name", ["coco_instance_lsj", "coco_panoptic_lsj"])
def test_lsj_downscale_pads_with_128(toy, name):
    mapper = build_dataset_mapper(make_cfg(name, MIN_SCALE=0.5, MAX_SCALE=0.5))
    for d in toy[TRAIN_SET[name]]:
        out = mapper(d)
        image, masks = out["image"], out["instances"].gt_masks
        assert image.shape == (3, SIZE, SIZE)
        pad = torch.ones((SIZE, SIZE), dtype=torch.bool)
        pad[: SIZE // 2, : SIZE // 2] = False  # 128 -> 64, padded right/bottom
        assert (image[:, pad] == 128).all()
        assert not masks[:, pad].any() and masks[:, ~pad].any()
        if "padding_mask" in out:
            assert torch.equal(out["padding_mask"], pad)


@pytest.mark.parametrize("name", ["coco_instance_lsj", "coco_panoptic_lsj"])
def test_lsj_random_scale_always_image_size(toy, name):
    mapper = build_dataset_mapper(
        make_cfg(name, MIN_SCALE=0.3, MAX_SCALE=2.0, RANDOM_FLIP="horizontal")
    )
    for d in toy[TRAIN_SET[name]] * 2:
        out = mapper(d)
        inst = out["instances"]
        assert out["image"].shape == (3, SIZE, SIZE) and inst.image_size == (SIZE, SIZE)
        assert inst.gt_masks.shape[1:] == (SIZE, SIZE)
        if "padding_mask" in out:
            assert (out["image"][:, out["padding_mask"]] == 128).all()
            assert not inst.gt_masks[:, out["padding_mask"]].any()


# ------------------------------------------------------------------------------------------------
# COCO panoptic, large-scale jitter
# ------------------------------------------------------------------------------------------------
def test_panoptic_lsj_targets_match_png(toy):
    mapper = build_dataset_mapper(make_cfg("coco_panoptic_lsj"))
    for i, d in enumerate(toy["toy_panoptic_train"]):
        d = copy.deepcopy(d)
        ids = rgb2id(read_rgb(d["pan_seg_file_name"]))
        if i == 0:
            d["segments_info"][0]["iscrowd"] = 1  # crowd: dropped
            # a segment absent from the PNG: kept, with an empty mask and a zero box
            d["segments_info"].append({"id": 4242, "category_id": 3, "iscrowd": 0})
        out = mapper(d)
        assert {"image", "instances"} <= set(out)
        assert np.array_equal(out["image"].permute(1, 2, 0).numpy(), read_rgb(d["file_name"]))
        inst = out["instances"]
        segs = [s for s in d["segments_info"] if not s["iscrowd"]]
        assert len(inst) == len(segs)
        assert inst.gt_masks.dtype == torch.bool and inst.gt_masks.shape == (len(segs), SIZE, SIZE)
        assert inst.gt_classes.tolist() == [s["category_id"] for s in segs]
        for mask, box, s in zip(inst.gt_masks.numpy(), inst.gt_boxes.tensor.numpy(), segs):
            assert np.array_equal(mask, ids == s["id"])
            assert np.allclose(box, tight_box(mask) if mask.any() else [0, 0, 0, 0])
        if i == 0:
            assert not inst.gt_masks[-1].any()


def test_panoptic_lsj_no_segment(toy):
    d = copy.deepcopy(toy["toy_panoptic_train"][0])
    d["segments_info"] = []
    inst = build_dataset_mapper(make_cfg("coco_panoptic_lsj"))(d)["instances"]
    assert inst.gt_masks.shape == (0, SIZE, SIZE) and inst.gt_masks.dtype == torch.float32
    assert inst.gt_boxes.tensor.shape == (0, 4) and inst.gt_classes.shape == (0,)


# ------------------------------------------------------------------------------------------------
# Semantic
# ------------------------------------------------------------------------------------------------
def find_crop(full, crop):
    """(y0, x0, flipped) such that ``crop`` is ``full[y0:, x0:]`` (horizontally flipped if
    ``flipped``), or None."""
    h, w = crop.shape[:2]
    for flipped in (False, True):
        c = crop[:, ::-1] if flipped else crop
        for y0 in range(full.shape[0] - h + 1):
            for x0 in range(full.shape[1] - w + 1):
                if np.array_equal(full[y0 : y0 + h, x0 : x0 + w], c):
                    return y0, x0, flipped
    return None


@pytest.mark.parametrize("size_div", [-1, SIZE])
def test_semantic_crop_pad_targets(toy, size_div):
    crop_h, crop_w = 96, 80
    cfg = crop_cfg("mask_former_semantic", (crop_h, crop_w), SIZE_DIVISIBILITY=size_div)
    mapper = build_dataset_mapper(cfg)
    out_h, out_w = (crop_h, crop_w) if size_div < 0 else (size_div, size_div)
    for d in toy["toy_sem_seg_train"]:
        out = mapper(d)
        assert {"image", "sem_seg", "instances"} <= set(out) and "sem_seg_file_name" not in out
        image, sem_seg, inst = out["image"], out["sem_seg"], out["instances"]
        assert image.dtype == torch.uint8 and image.shape == (3, out_h, out_w)
        assert sem_seg.dtype == torch.int64 and sem_seg.shape == (out_h, out_w)
        assert inst.image_size == (out_h, out_w)

        # the unpadded part is a (possibly flipped) crop of the inputs
        label = np.asarray(Image.open(d["sem_seg_file_name"])).astype(np.int64)
        crop = sem_seg[:crop_h, :crop_w].numpy()
        found = find_crop(label, crop)
        assert found is not None
        y0, x0, flipped = found
        img_crop = image[:, :crop_h, :crop_w].permute(1, 2, 0).numpy()
        img_crop = img_crop[:, ::-1] if flipped else img_crop
        window = read_rgb(d["file_name"])[y0 : y0 + crop_h, x0 : x0 + crop_w]
        assert np.array_equal(img_crop, window)
        # padding: 128 in the image, the ignore label in the labels
        if size_div > 0:
            assert (image[:, crop_h:] == 128).all() and (image[:, :, crop_w:] == 128).all()
            assert (sem_seg[crop_h:] == IGNORE).all() and (sem_seg[:, crop_w:] == IGNORE).all()

        classes = sorted(set(np.unique(sem_seg.numpy()).tolist()) - {IGNORE})
        assert inst.gt_classes.dtype == torch.int64 and inst.gt_classes.tolist() == classes
        assert inst.gt_masks.dtype == torch.bool
        assert inst.gt_masks.shape == (len(classes), out_h, out_w)
        for c, m in zip(classes, inst.gt_masks):
            assert torch.equal(m, sem_seg == c)


def test_semantic_color_aug_keeps_labels(toy):
    cfg = make_cfg("mask_former_semantic", COLOR_AUG_SSD=True)
    mapper = build_dataset_mapper(cfg)
    # AugmentationList wraps a Transform into an augmentation holding it as ``tfm``
    augs = [getattr(a, "tfm", a) for a in mapper.augmentations.augs]
    assert any(isinstance(a, ColorAugSSDTransform) for a in augs)
    d = toy["toy_sem_seg_train"][0]
    label = np.asarray(Image.open(d["sem_seg_file_name"])).astype(np.int64)
    image = read_rgb(d["file_name"])
    recoloured = False
    for _ in range(3):
        out = mapper(d)
        sem_seg, out_image = out["sem_seg"].numpy(), out["image"].permute(1, 2, 0).numpy()
        assert out_image.dtype == np.uint8
        flipped = not np.array_equal(sem_seg, label)
        assert np.array_equal(sem_seg, label[:, ::-1] if flipped else label)
        recoloured |= not np.array_equal(out_image, image[:, ::-1] if flipped else image)
    assert recoloured


def test_semantic_pad_smaller_than_image_raises(toy):
    mapper = build_dataset_mapper(make_cfg("mask_former_semantic", SIZE_DIVISIBILITY=SIZE // 2))
    with pytest.raises(ValueError, match="SIZE_DIVISIBILITY"):
        mapper(toy["toy_sem_seg_train"][0])


def crafted_semantic_dict(tmp_path, label):
    """A dict of a random 128x128 image with the given uint8 label map."""
    image = np.random.RandomState(1).randint(0, 256, (SIZE, SIZE, 3))
    return {
        "file_name": save_png(tmp_path / "image.png", image),
        "sem_seg_file_name": save_png(tmp_path / "label.png", label),
        "height": SIZE,
        "width": SIZE,
    }


def constraint_ok(crop, max_area):
    """The category-area condition: >1 non-ignored label, none covering >= max_area of them."""
    labels, counts = np.unique(crop, return_counts=True)
    counts = counts[labels != IGNORE]
    return len(counts) > 1 and counts.max() < max_area * counts.sum()


def test_semantic_category_area_constraint(toy, tmp_path):
    # left half: vertical stripes of labels 1 / 2 (8 px wide); right half: label 3;
    # top 16 rows: ignore. Crops lying in the right half fail the constraint.
    label = np.full((SIZE, SIZE), 3, dtype=np.uint8)
    label[:, : SIZE // 2] = 1 + (np.arange(SIZE // 2) // 8) % 2
    label[:16] = IGNORE
    d = crafted_semantic_dict(tmp_path, label)

    def crops(max_area, n=20):
        cfg = crop_cfg(
            "mask_former_semantic", (32, 32), CROP__SINGLE_CATEGORY_MAX_AREA=max_area
        )
        mapper = build_dataset_mapper(cfg)
        return [mapper(d)["sem_seg"].numpy() for _ in range(n)]

    constrained = crops(0.6)
    assert all(c.shape == (32, 32) for c in constrained)
    assert all(constraint_ok(c, 0.6) for c in constrained)
    # 1.0 disables the constraint: a plain random crop, which lands in the right half at times
    assert not all(constraint_ok(c, 0.6) for c in crops(1.0))

    # no valid window at all: the last of the 10 attempts is kept
    d = crafted_semantic_dict(tmp_path, np.full((SIZE, SIZE), 5, dtype=np.uint8))
    (only,) = crops(0.6, n=1)
    assert only.shape == (32, 32) and (only == 5).all()


def test_semantic_all_ignored_gives_empty_float_masks(toy, tmp_path):
    d = crafted_semantic_dict(tmp_path, np.full((SIZE, SIZE), IGNORE, dtype=np.uint8))
    inst = build_dataset_mapper(make_cfg("mask_former_semantic"))(d)["instances"]
    assert inst.gt_masks.shape == (0, SIZE, SIZE) and inst.gt_masks.dtype == torch.float32
    assert inst.gt_classes.shape == (0,)


# ------------------------------------------------------------------------------------------------
# Panoptic (MaskFormer)
# ------------------------------------------------------------------------------------------------
def test_mask_former_panoptic(toy):
    pad = SIZE + 16
    cfg = crop_cfg("mask_former_panoptic", (96, 96), SIZE_DIVISIBILITY=pad)
    mapper = build_dataset_mapper(cfg)
    for i, d in enumerate(toy["toy_panoptic_train"]):
        d = copy.deepcopy(d)
        if i == 0:
            d["segments_info"][0]["iscrowd"] = 1
        out = mapper(d)
        assert {"image", "sem_seg", "instances"} <= set(out)
        assert "pan_seg_file_name" not in out and "sem_seg_file_name" not in out
        image, sem_seg, inst = out["image"], out["sem_seg"], out["instances"]
        assert image.shape == (3, pad, pad) and (image[:, 96:] == 128).all()
        assert sem_seg.dtype == torch.int64 and (sem_seg[:, 96:] == IGNORE).all()
        segs = [s for s in d["segments_info"] if not s["iscrowd"]]
        # every non-crowd segment is a target, even where the crop left it empty
        assert inst.gt_classes.tolist() == [s["category_id"] for s in segs]
        masks = inst.gt_masks
        assert masks.dtype == torch.bool and masks.shape == (len(segs), pad, pad)
        assert inst.image_size == (pad, pad)
        # the toy semantic map is the panoptic map's class map (255 = VOID)
        for c, m in zip(inst.gt_classes, masks):
            assert (sem_seg[m] == c).all()
        covered = masks.sum(0)
        assert covered.max() <= 1
        if i > 0:
            assert torch.equal(covered.bool(), sem_seg != IGNORE)
        else:  # the crowd segment's pixels are not covered
            assert torch.equal(covered.bool(), (sem_seg != IGNORE) & (covered > 0))


def test_mask_former_panoptic_constraint_needs_sem_seg(toy):
    cfg = crop_cfg("mask_former_panoptic", (96, 96), CROP__SINGLE_CATEGORY_MAX_AREA=0.5)
    d = copy.deepcopy(toy["toy_panoptic_train"][0])
    del d["sem_seg_file_name"]
    with pytest.raises(ValueError, match="sem_seg_file_name"):
        build_dataset_mapper(cfg)(d)


# ------------------------------------------------------------------------------------------------
# Instance (MaskFormer)
# ------------------------------------------------------------------------------------------------
def test_mask_former_instance_formats_and_padding(toy):
    pad = SIZE + 16
    mapper = build_dataset_mapper(make_cfg("mask_former_instance", SIZE_DIVISIBILITY=pad))
    for d in toy["toy_instance_train"]:
        annos = [a for a in d["annotations"] if not a.get("iscrowd", 0)]
        rasters = [polygon_mask(a["segmentation"]) for a in annos]
        outs = []
        for fmt in ("polygon", "rle", "array"):
            dd = copy.deepcopy(d)
            for a, r in zip(dd["annotations"], rasters):
                if fmt == "rle":
                    a["segmentation"] = mask_util.encode(np.asfortranarray(r))
                elif fmt == "array":
                    a["segmentation"] = r.astype(bool)
            state = np.random.get_state()
            outs.append(mapper(dd))
            np.random.set_state(state)  # same flip for every format
        for out in outs:
            image, inst = out["image"], out["instances"]
            assert image.shape == (3, pad, pad) and inst.image_size == (pad, pad)
            assert (image[:, SIZE:] == 128).all() and (image[:, :, SIZE:] == 128).all()
            assert inst.gt_classes.tolist() == [a["category_id"] for a in annos]
            assert inst.gt_masks.dtype == torch.bool
            assert inst.gt_masks.shape == (len(annos), pad, pad)
            assert not inst.gt_masks[:, SIZE:].any() and not inst.gt_masks[:, :, SIZE:].any()
            assert torch.equal(inst.gt_masks, outs[0]["instances"].gt_masks)
        # masks follow the image: both flipped or both not
        inner = outs[0]["image"][:, :SIZE, :SIZE].permute(1, 2, 0).numpy()
        flipped = not np.array_equal(inner, read_rgb(d["file_name"]))
        expected = np.stack(rasters)[:, :, ::-1] if flipped else np.stack(rasters)
        assert np.array_equal(outs[0]["instances"].gt_masks[:, :SIZE, :SIZE].numpy(), expected)


def test_mask_former_instance_crop_keeps_all(toy):
    cfg = crop_cfg("mask_former_instance", (48, 48))
    mapper = build_dataset_mapper(cfg)
    for d in toy["toy_instance_train"]:
        out = mapper(d)
        n = sum(not a.get("iscrowd", 0) for a in d["annotations"])
        assert out["image"].shape == (3, 48, 48)
        assert out["instances"].gt_masks.shape == (n, 48, 48)  # no emptiness filtering


# ------------------------------------------------------------------------------------------------
# Size checks
# ------------------------------------------------------------------------------------------------
def test_wrong_size_label_maps_raise(toy, tmp_path):
    small = save_png(tmp_path / "small_label.png", np.zeros((SIZE // 2, SIZE // 2)))
    small_rgb = save_png(tmp_path / "small_pan.png", np.zeros((SIZE // 2, SIZE // 2, 3)))

    d = dict(toy["toy_sem_seg_train"][0], sem_seg_file_name=small)
    with pytest.raises(ValueError, match="small_label.png"):
        build_dataset_mapper(make_cfg("mask_former_semantic"))(d)

    for name in ("coco_panoptic_lsj", "mask_former_panoptic"):
        d = dict(toy["toy_panoptic_train"][0], pan_seg_file_name=small_rgb)
        with pytest.raises(ValueError, match="small_pan.png"):
            build_dataset_mapper(make_cfg(name))(d)

    d = copy.deepcopy(toy["toy_instance_train"][0])
    d["annotations"][0]["segmentation"] = mask_util.encode(
        np.zeros((SIZE // 2, SIZE // 2), dtype=np.uint8, order="F")
    )
    with pytest.raises(ValueError, match=d["file_name"].split("/")[-1]):
        build_dataset_mapper(make_cfg("mask_former_instance"))(d)

    # the image itself against the dict's height/width (detectron2's check)
    d = dict(toy["toy_instance_train"][0], height=SIZE + 1)
    with pytest.raises(ValueError, match=d["file_name"].split("/")[-1]):
        build_dataset_mapper(make_cfg("coco_instance_lsj"))(d)
