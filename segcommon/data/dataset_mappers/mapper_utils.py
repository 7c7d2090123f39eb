"""
Pieces shared by the training dataset mappers of this package.

Conventions used throughout:

* Images are HWC ``uint8`` numpy arrays in ``INPUT.FORMAT`` channel order while they are augmented,
  and CHW ``uint8`` tensors once they are emitted as ``dataset_dict["image"]``.
* Label maps are HW arrays in pixel coordinates (row ``y``, column ``x``); pixel ``(x, y)`` covers
  the square ``[x, x + 1] x [y, y + 1]``, which is also the convention of COCO polygons.
* Padding always adds pixels on the right and at the bottom, so the content keeps its coordinates.
"""
import copy
import logging
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from pycocotools import mask as mask_util
from torch.nn import functional as F

from detectron2.config import CfgNode, configurable
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.projects.point_rend import ColorAugSSDTransform
from detectron2.structures import BitMasks, Boxes, Instances

from segcommon.evaluation.panoptic_evaluation import rgb2id

__all__ = [
    "IMAGE_PAD_VALUE",
    "PANOPTIC_VOID_ID",
    "TrainMapperBase",
    "LSJMapperBase",
    "build_lsj_augmentation",
    "build_resize_crop_flip_augmentation",
    "read_label_map",
    "read_panoptic_png",
    "panoptic_rgb_to_ids",
    "image_to_tensor",
    "pad_to_size",
    "check_annotation_masks",
    "rasterize_polygons",
    "stack_masks",
    "instances_from_semantic",
    "instances_from_panoptic",
]

# Value of padded image pixels (LSJ's FixedSizeCrop and the SIZE_DIVISIBILITY padding): mid-grey,
# i.e. close to zero after the model's mean/std normalisation.
IMAGE_PAD_VALUE = 128
# Panoptic id of unlabelled (VOID) pixels, used to pad panoptic maps.
PANOPTIC_VOID_ID = 0


# ------------------------------------------------------------------------------------------------
# Augmentation lists
# ------------------------------------------------------------------------------------------------
def build_lsj_augmentation(cfg: CfgNode, is_train: bool = True) -> List[T.Augmentation]:
    """
    Large-scale jitter (LSJ) of the COCO "new baseline" mappers, in order:

    1. ``RandomFlip`` per ``INPUT.RANDOM_FLIP`` ("horizontal", "vertical"; "none" leaves it out);
    2. ``ResizeScale(INPUT.MIN_SCALE, INPUT.MAX_SCALE)`` of an ``INPUT.IMAGE_SIZE`` square target
       (aspect ratio kept: the image is fitted into the randomly scaled square);
    3. ``FixedSizeCrop(INPUT.IMAGE_SIZE)``: random crop where the image is larger, then padding of
       the right/bottom with image value 128 and segmentation value 0, so every output is exactly
       ``IMAGE_SIZE x IMAGE_SIZE``.

    Raises:
        ValueError: if ``is_train`` is False (LSJ is a training-only augmentation).
    """
    if not is_train:
        raise ValueError("The large-scale-jitter mappers are for training only (is_train=False).")
    size = cfg.INPUT.IMAGE_SIZE
    augs: List[T.Augmentation] = []
    if cfg.INPUT.RANDOM_FLIP != "none":
        augs.append(
            T.RandomFlip(
                horizontal=cfg.INPUT.RANDOM_FLIP == "horizontal",
                vertical=cfg.INPUT.RANDOM_FLIP == "vertical",
            )
        )
    augs.append(
        T.ResizeScale(
            min_scale=cfg.INPUT.MIN_SCALE,
            max_scale=cfg.INPUT.MAX_SCALE,
            target_height=size,
            target_width=size,
        )
    )
    augs.append(T.FixedSizeCrop(crop_size=(size, size), pad_value=IMAGE_PAD_VALUE))
    return augs


def build_resize_crop_flip_augmentation(
    cfg: CfgNode, crop: Optional[T.Augmentation]
) -> List[T.Augmentation]:
    """
    The MaskFormer (semantic / panoptic / instance) augmentation list, in order:
    ``ResizeShortestEdge(INPUT.MIN_SIZE_TRAIN, INPUT.MAX_SIZE_TRAIN,
    INPUT.MIN_SIZE_TRAIN_SAMPLING)`` → ``crop`` (if given) → SSD colour augmentation (if
    ``INPUT.COLOR_AUG_SSD``) → horizontal ``RandomFlip`` with p = 0.5.

    The flip deliberately ignores ``INPUT.RANDOM_FLIP``, as the reference mappers do.

    Args:
        crop: the crop augmentation, or None when ``INPUT.CROP.ENABLED`` is off.
    """
    augs: List[T.Augmentation] = [
        T.ResizeShortestEdge(
            cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN, cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING
        )
    ]
    if crop is not None:
        augs.append(crop)
    if cfg.INPUT.COLOR_AUG_SSD:
        # The transform converts to BGR internally, so it must know the image's channel order.
        augs.append(ColorAugSSDTransform(img_format=cfg.INPUT.FORMAT))
    augs.append(T.RandomFlip())
    return augs


# ------------------------------------------------------------------------------------------------
# Mapper bases
# ------------------------------------------------------------------------------------------------
class TrainMapperBase:
    """
    What every training mapper of this package does before building targets: holds the
    augmentations and the image format, reads the image and checks its size against the dict's
    "height"/"width", and applies the augmentations to the image and an optional label map.

    Subclasses implement ``_map`` (called on a private copy of the dict) and ``from_config``.
    """

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        augmentations: List[T.Augmentation],
        image_format: str,
        size_divisibility: int = -1,
    ):
        """
        Args:
            is_train: whether the mapper is used for training (all mappers here are train-only).
            augmentations: augmentations or deterministic transforms, applied in order.
            image_format: an image format supported by :func:`detection_utils.read_image`.
            size_divisibility: if > 0, images and targets are padded (right/bottom) to exactly
                ``size_divisibility x size_divisibility``; <= 0 disables padding.
        """
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.size_divisibility = size_divisibility
        mode = "training" if is_train else "inference"
        logging.getLogger(__name__).info(
            f"[{type(self).__name__}] Augmentations used in {mode}: {augmentations}"
        )

    def __call__(self, dataset_dict: Dict) -> Dict:
        """
        Args:
            dataset_dict: one image's dict in Detectron2's dataset format (not modified).

        Returns:
            a copy with the model's inputs added (see the subclass's docstring).

        Raises:
            RuntimeError: if the mapper was built with ``is_train=False``.
        """
        if not self.is_train:
            raise RuntimeError(f"{type(self).__name__} should only be used for training.")
        # the subclasses pop and overwrite keys: work on a copy
        return self._map(copy.deepcopy(dataset_dict))

    def _map(self, dataset_dict: Dict) -> Dict:
        """Maps ``dataset_dict`` (a private copy, modified in place) and returns it."""
        raise NotImplementedError

    @staticmethod
    def _pop_required(dataset_dict: Dict, key: str):
        """Pops ``key`` from the dict, raising a ValueError naming the image if it is missing."""
        if key not in dataset_dict:
            raise ValueError(f"Cannot find {key!r} for image {dataset_dict['file_name']}.")
        return dataset_dict.pop(key)

    def _read_image(self, dataset_dict: Dict) -> np.ndarray:
        """Reads ``dataset_dict["file_name"]`` as HWC uint8 in ``image_format`` and checks its size
        (sets "height"/"width" if the dict has neither)."""
        image = utils.read_image(dataset_dict["file_name"], format=self.image_format)
        utils.check_image_size(dataset_dict, image)
        return image

    def _augment(
        self, image: np.ndarray, sem_seg: Optional[np.ndarray] = None
    ) -> Tuple[np.ndarray, Optional[np.ndarray], T.TransformList]:
        """Applies the augmentations; ``sem_seg`` (HW) is transformed as a segmentation map
        (nearest interpolation) and is what category-aware crops look at.

        Returns:
            the transformed image, the transformed ``sem_seg`` (or None) and the transforms, to be
            applied to further annotations of the same image.
        """
        aug_input = T.AugInput(image, sem_seg=sem_seg)
        transforms = self.augmentations(aug_input)
        return aug_input.image, aug_input.sem_seg, transforms

    def _pad(self, tensor: torch.Tensor, value: float) -> torch.Tensor:
        """Pads to ``size_divisibility`` (see :func:`pad_to_size`) when it is > 0."""
        if self.size_divisibility <= 0:
            return tensor
        return pad_to_size(tensor, self.size_divisibility, value)


class LSJMapperBase(TrainMapperBase):
    """Base of the COCO large-scale-jitter mappers: augmentations from
    :func:`build_lsj_augmentation`, no ``size_divisibility`` padding (``FixedSizeCrop`` pads)."""

    @classmethod
    def from_config(cls, cfg: CfgNode, is_train: bool = True) -> Dict:
        return {
            "is_train": is_train,
            "augmentations": build_lsj_augmentation(cfg, is_train),
            "image_format": cfg.INPUT.FORMAT,
        }


# ------------------------------------------------------------------------------------------------
# Reading label maps
# ------------------------------------------------------------------------------------------------
def _check_map_size(shape: Sequence[int], image: np.ndarray, path: str, image_file: str) -> None:
    if tuple(shape[:2]) != tuple(image.shape[:2]):
        raise utils.SizeMismatchError(
            f"Label map {path} has size (h, w) = {tuple(shape[:2])}, but its image {image_file} "
            f"has {tuple(image.shape[:2])}."
        )


def read_label_map(path: str, image: np.ndarray, image_file: str) -> np.ndarray:
    """
    Reads a semantic label map (8- or 16-bit PNG/TIFF) and checks it has the image's size.

    Returns:
        ndarray[float64] (H, W). Float64 because the resize transforms do not handle uint16 and
        float64 holds every label exactly; cast back to int64 after the transforms.

    Raises:
        SizeMismatchError (a ValueError): naming ``path`` and ``image_file`` when the sizes differ.
    """
    label = utils.read_image(path).astype(np.float64)
    _check_map_size(label.shape, image, path, image_file)
    return label


def read_panoptic_png(path: str, image: np.ndarray, image_file: str) -> np.ndarray:
    """
    Reads a COCO-format panoptic PNG (``id = R + 256 * G + 256**2 * B``) and checks its size.

    Returns:
        ndarray[uint8] (H, W, 3), the RGB encoding: transform it as a segmentation map (nearest,
        padding 0 = VOID), then convert with :func:`rgb2id`. Keeping the RGB form through the
        transforms lets PIL's uint8 nearest resize handle ids that do not fit 8 bits.

    Raises:
        SizeMismatchError (a ValueError): naming ``path`` and ``image_file`` when the sizes differ.
    """
    pan = utils.read_image(path, "RGB")
    _check_map_size(pan.shape, image, path, image_file)
    return pan


def panoptic_rgb_to_ids(pan_rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 panoptic encoding → (H, W) int64 segment ids (0 = VOID)."""
    return rgb2id(pan_rgb).astype(np.int64)


def check_annotation_masks(annotations: Sequence[Dict], image: np.ndarray, image_file: str) -> None:
    """
    Checks that RLE (``segmentation["size"]``) and 2-D array instance masks have the image's size.
    Polygons have no size and pass.

    Raises:
        SizeMismatchError (a ValueError): naming ``image_file`` when a mask's size differs.
    """
    for obj in annotations:
        segm = obj.get("segmentation")
        if isinstance(segm, dict):
            shape = tuple(segm["size"])
        elif isinstance(segm, np.ndarray):
            shape = segm.shape
        else:
            continue
        _check_map_size(shape, image, f"(annotation id {obj.get('id', '?')})", image_file)


# ------------------------------------------------------------------------------------------------
# Tensors and padding
# ------------------------------------------------------------------------------------------------
def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """HWC uint8 array → contiguous CHW uint8 tensor (tensors travel cheaply through the
    data-loader's shared memory, unlike generic Python objects)."""
    return torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))


def pad_to_size(tensor: torch.Tensor, size: int, value: float) -> torch.Tensor:
    """
    Pads the last two dimensions (H, W) of ``tensor`` on the right and at the bottom to exactly
    ``size x size`` — not to a multiple of ``size``: the mappers use it with the crop size, so
    every image of a batch gets the same size.

    Raises:
        ValueError: if H or W already exceeds ``size`` (the reference would silently crop by
            padding with negative amounts).
    """
    h, w = tensor.shape[-2:]
    if h > size or w > size:
        raise ValueError(
            f"Cannot pad an image of size (h, w) = {(h, w)} to {size}x{size} "
            "(INPUT.SIZE_DIVISIBILITY must not be smaller than the crop / resized image)."
        )
    return F.pad(tensor, [0, size - w, 0, size - h], value=value).contiguous()


# ------------------------------------------------------------------------------------------------
# Targets
# ------------------------------------------------------------------------------------------------
def rasterize_polygons(polygons: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    """
    Rasterises one object's COCO polygons (flat ``[x0, y0, x1, y1, ...]`` in pixel-corner
    coordinates) with pycocotools, as the union of the polygons.

    Returns:
        ndarray[uint8] (height, width) of 0/1.
    """
    if len(polygons) == 0:
        return np.zeros((height, width), dtype=np.uint8)
    rles = mask_util.frPyObjects([np.asarray(p, dtype=np.float64) for p in polygons], height, width)
    return mask_util.decode(mask_util.merge(rles))


def stack_masks(masks: Sequence[np.ndarray], height: int, width: int) -> torch.Tensor:
    """
    Stacks per-target HW masks into the ``gt_masks`` tensor of the MaskFormer mappers.

    Returns:
        bool tensor (N, height, width); for N = 0 a **float32** zero tensor (0, height, width), the
        reference's (the model casts targets to the prediction dtype, so both work).
    """
    if len(masks) == 0:
        return torch.zeros((0, height, width))
    return BitMasks(torch.stack([torch.from_numpy(np.ascontiguousarray(m)) for m in masks])).tensor


def instances_from_semantic(sem_seg: np.ndarray, ignore_label: int) -> Instances:
    """
    One target per class present in a semantic label map.

    Args:
        sem_seg: integer (H, W) label map (contiguous class ids, ``ignore_label`` where unlabelled).

    Returns:
        Instances of image size (H, W) with ``gt_classes`` (int64, sorted unique labels other than
        ``ignore_label``) and ``gt_masks`` (bool (N, H, W), ``sem_seg == class``; see
        :func:`stack_masks` for N = 0).
    """
    classes = np.unique(sem_seg)
    classes = classes[classes != ignore_label]
    instances = Instances(sem_seg.shape)
    instances.gt_classes = torch.as_tensor(classes, dtype=torch.int64)
    instances.gt_masks = stack_masks([sem_seg == c for c in classes], *sem_seg.shape)
    return instances


def instances_from_panoptic(
    pan_ids: np.ndarray, segments_info: Sequence[Dict], with_boxes: bool
) -> Instances:
    """
    One target per non-crowd segment of a panoptic map.

    Crowd segments (``iscrowd == 1``) are neither targets nor ignored. Segments whose mask is empty
    (e.g. cropped away) are kept, as the reference does.

    Args:
        pan_ids: int64 (H, W) segment ids (0 = VOID).
        segments_info: the dict's "segments_info": "id", contiguous "category_id", "iscrowd".
        with_boxes: also set ``gt_boxes`` (XYXY absolute, tight boxes of the masks, zeros for an
            empty mask).

    Returns:
        Instances of image size (H, W) with ``gt_classes`` (int64), ``gt_masks`` (bool (N, H, W);
        see :func:`stack_masks` for N = 0) and optionally ``gt_boxes``.
    """
    segments = [s for s in segments_info if not s.get("iscrowd", 0)]
    instances = Instances(pan_ids.shape)
    instances.gt_classes = torch.tensor([s["category_id"] for s in segments], dtype=torch.int64)
    masks = stack_masks([pan_ids == s["id"] for s in segments], *pan_ids.shape)
    instances.gt_masks = masks
    if with_boxes:
        instances.gt_boxes = (
            BitMasks(masks).get_bounding_boxes() if len(segments) else Boxes(torch.zeros((0, 4)))
        )
    return instances
