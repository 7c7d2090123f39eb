"""Training mapper for instance segmentation (MaskFormer's ``MaskFormerInstanceDatasetMapper``)."""
from typing import Dict, List

import numpy as np
import pycocotools.mask as mask_util
import torch

from detectron2.config import CfgNode
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import Instances

from . import register_mapper
from .mapper_utils import (
    IMAGE_PAD_VALUE,
    TrainMapperBase,
    build_resize_crop_flip_augmentation,
    check_annotation_masks,
    image_to_tensor,
    rasterize_polygons,
    stack_masks,
)

__all__ = ["MaskFormerInstanceDatasetMapper"]


def _transform_annotation(obj: Dict, transforms: T.TransformList, image_shape) -> Dict:
    """
    :func:`detection_utils.transform_instance_annotations`, extended to 2-D array masks (which it
    rejects): those are transformed as segmentation maps (nearest), like decoded RLE.
    """
    segm = obj.get("segmentation")
    if not isinstance(segm, np.ndarray):
        return utils.transform_instance_annotations(obj, transforms, image_shape)
    # uint8 because the resize transform cannot interpolate bool arrays
    mask = transforms.apply_segmentation(segm.astype(np.uint8))
    obj = utils.transform_instance_annotations(
        {k: v for k, v in obj.items() if k != "segmentation"}, transforms, image_shape
    )
    obj["segmentation"] = mask
    return obj


def _annotation_mask(segm, height: int, width: int) -> np.ndarray:
    """A transformed annotation's mask as an HW array: polygons are rasterised at the final size,
    RLE decoded, arrays kept."""
    if isinstance(segm, list):
        return rasterize_polygons(segm, height, width)
    if isinstance(segm, dict):
        return mask_util.decode(segm)
    if isinstance(segm, np.ndarray) and segm.ndim == 2:
        return segm
    raise ValueError(
        f"Cannot convert segmentation of type {type(segm)} to a mask; expected polygons "
        "(list[list[float]]), COCO RLE (dict) or a 2-D array."
    )


@register_mapper("mask_former_instance")
class MaskFormerInstanceDatasetMapper(TrainMapperBase):
    """
    Maps an instance-segmentation dataset dict (Detectron2 format: "file_name", "annotations" with
    "bbox", "bbox_mode", contiguous "category_id", "segmentation" as polygons, COCO RLE or a 2-D
    array, optional "iscrowd") to MaskFormer's training input:

    1. read the image (``INPUT.FORMAT``), check its size and the RLE/array masks' sizes;
    2. ``ResizeShortestEdge`` → plain ``RandomCrop`` (if ``INPUT.CROP.ENABLED``) → SSD colour
       augmentation (if ``INPUT.COLOR_AUG_SSD``) → horizontal flip (p = 0.5);
    3. transform the non-crowd annotations; rasterise polygons at the transformed size;
    4. if ``INPUT.SIZE_DIVISIBILITY > 0``, pad right/bottom to exactly that square size (image
       128, masks 0).

    No emptiness filtering: an instance cropped away stays a target with an empty mask.

    Output keys added to (a copy of) the dict ("annotations" is removed):

    * "image": uint8 tensor (3, H, W), channels in ``INPUT.FORMAT`` order;
    * "instances": :class:`Instances` of the padded size (H, W) with ``gt_classes`` (int64) and
      ``gt_masks`` (bool (N, H, W); float32 (0, H, W) if none).
    """

    @classmethod
    def from_config(cls, cfg: CfgNode, is_train: bool = True) -> Dict:
        crop = None
        if cfg.INPUT.CROP.ENABLED:
            crop = T.RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE)
        return {
            "is_train": is_train,
            "augmentations": build_resize_crop_flip_augmentation(cfg, crop),
            "image_format": cfg.INPUT.FORMAT,
            "size_divisibility": cfg.INPUT.SIZE_DIVISIBILITY,
        }

    def _map(self, dataset_dict: Dict) -> Dict:
        file_name = dataset_dict["file_name"]
        annos = self._pop_required(dataset_dict, "annotations")
        annos = [obj for obj in annos if obj.get("iscrowd", 0) == 0]
        image = self._read_image(dataset_dict)
        check_annotation_masks(annos, image, file_name)
        for obj in annos:
            obj.pop("keypoints", None)
            if "segmentation" not in obj:
                raise ValueError(f"An annotation of image {file_name} has no 'segmentation'.")

        image, _, transforms = self._augment(image)
        h, w = image.shape[:2]
        masks: List[np.ndarray] = [
            _annotation_mask(_transform_annotation(obj, transforms, (h, w))["segmentation"], h, w)
            for obj in annos
        ]

        image_t = self._pad(image_to_tensor(image), IMAGE_PAD_VALUE)
        gt_masks = stack_masks(masks, h, w)
        # pad as uint8 (0 = background), then back to the dtype of stack_masks
        gt_masks = self._pad(gt_masks.to(torch.uint8), 0).to(gt_masks.dtype)

        instances = Instances(tuple(image_t.shape[-2:]))
        classes = [int(obj["category_id"]) for obj in annos]
        instances.gt_classes = torch.tensor(classes, dtype=torch.int64)
        instances.gt_masks = gt_masks
        dataset_dict["image"] = image_t
        dataset_dict["instances"] = instances
        return dataset_dict
