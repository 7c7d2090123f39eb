"""Training mapper for semantic segmentation (MaskFormer's ``MaskFormerSemanticDatasetMapper``)."""
from typing import Dict, Optional, Tuple

import numpy as np
import torch

from detectron2.config import CfgNode, configurable
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T

from . import register_mapper
from .mapper_utils import (
    IMAGE_PAD_VALUE,
    TrainMapperBase,
    build_resize_crop_flip_augmentation,
    image_to_tensor,
    instances_from_semantic,
    read_label_map,
)

__all__ = ["MaskFormerSemanticDatasetMapper"]


@register_mapper("mask_former_semantic")
class MaskFormerSemanticDatasetMapper(TrainMapperBase):
    """
    Maps a semantic-segmentation dataset dict ("file_name", "sem_seg_file_name", optional
    "height"/"width") to MaskFormer's training input:

    1. read the image (``INPUT.FORMAT``) and the label map, check their sizes;
    2. ``ResizeShortestEdge`` → ``RandomCrop_CategoryAreaConstraint`` (if ``INPUT.CROP.ENABLED``) →
       SSD colour augmentation (if ``INPUT.COLOR_AUG_SSD``) → horizontal flip (p = 0.5); the label
       map is transformed with nearest interpolation;
    3. if ``INPUT.SIZE_DIVISIBILITY > 0``, pad right/bottom to exactly that square size: the image
       with 128, the labels with the dataset's ``ignore_label``;
    4. one target per class present.

    Output keys added to (a copy of) the dict:

    * "image": uint8 tensor (3, H, W), channels in ``INPUT.FORMAT`` order;
    * "sem_seg": int64 tensor (H, W);
    * "instances": :class:`Instances` of size (H, W) with ``gt_classes`` (int64, sorted unique
      labels except ``ignore_label``) and ``gt_masks`` (bool (N, H, W); float32 (0, H, W) if none).
    """

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        augmentations,
        image_format: str,
        ignore_label: int,
        size_divisibility: int,
    ):
        """
        Args:
            is_train, augmentations, image_format, size_divisibility: see :class:`TrainMapperBase`.
            ignore_label: label of unlabelled pixels: excluded from the targets, used to pad.
        """
        super().__init__(
            is_train,
            augmentations=augmentations,
            image_format=image_format,
            size_divisibility=size_divisibility,
        )
        self.ignore_label = ignore_label
        # A category-area-constrained crop inspects the label map, so panoptic dicts then need one.
        self.crop_needs_sem_seg = any(
            isinstance(a, T.RandomCrop_CategoryAreaConstraint) and a.single_category_max_area < 1.0
            for a in augmentations
        )

    @classmethod
    def from_config(cls, cfg: CfgNode, is_train: bool = True) -> Dict:
        crop = None
        if cfg.INPUT.CROP.ENABLED:
            crop = T.RandomCrop_CategoryAreaConstraint(
                cfg.INPUT.CROP.TYPE,
                cfg.INPUT.CROP.SIZE,
                cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA,
                cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            )
        # The mapper serves the training set, whose metadata gives the padding label.
        meta = MetadataCatalog.get(cfg.DATASETS.TRAIN[0])
        return {
            "is_train": is_train,
            "augmentations": build_resize_crop_flip_augmentation(cfg, crop),
            "image_format": cfg.INPUT.FORMAT,
            "ignore_label": meta.ignore_label,
            "size_divisibility": cfg.INPUT.SIZE_DIVISIBILITY,
        }

    def _read_and_augment(
        self, dataset_dict: Dict, require_sem_seg: bool
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor], T.TransformList, np.ndarray]:
        """
        Reads the image and (if present) the label map of ``dataset_dict`` (popping
        "sem_seg_file_name"), augments both and pads them.

        Returns:
            the padded image (uint8 (3, H, W)), the padded label map (int64 (H, W) or None), the
            transforms, and the original image (HWC, for size checks of further label maps).

        Raises:
            ValueError: if ``require_sem_seg`` and the dict has no "sem_seg_file_name", or the
                dict has "annotations" (instance annotations are not used by these mappers).
        """
        file_name = dataset_dict["file_name"]
        if "annotations" in dataset_dict:
            raise ValueError(
                f"{type(self).__name__} does not use 'annotations' (image {file_name})."
            )
        image = self._read_image(dataset_dict)
        sem_seg_file = dataset_dict.pop("sem_seg_file_name", None)
        if sem_seg_file is None and require_sem_seg:
            raise ValueError(
                f"Cannot find 'sem_seg_file_name' for image {file_name}; the semantic label map is "
                "required by the semantic mapper and by INPUT.CROP.SINGLE_CATEGORY_MAX_AREA < 1."
            )
        sem_seg = None if sem_seg_file is None else read_label_map(sem_seg_file, image, file_name)

        aug_image, sem_seg, transforms = self._augment(image, sem_seg)

        image_t = self._pad(image_to_tensor(aug_image), IMAGE_PAD_VALUE)
        sem_seg_t = None
        if sem_seg is not None:
            sem_seg_t = self._pad(torch.as_tensor(sem_seg.astype(np.int64)), self.ignore_label)
        return image_t, sem_seg_t, transforms, image

    def _map(self, dataset_dict: Dict) -> Dict:
        image, sem_seg, _, _ = self._read_and_augment(dataset_dict, require_sem_seg=True)
        dataset_dict["image"] = image
        dataset_dict["sem_seg"] = sem_seg
        dataset_dict["instances"] = instances_from_semantic(sem_seg.numpy(), self.ignore_label)
        return dataset_dict
