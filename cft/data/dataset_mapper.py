"""CFT's training mapper ``"cft_semantic"``: the reference's MMSeg training pipeline.

``RandomResize(scale, ratio_range, keep_ratio)`` (:class:`RandomRescaleInBox`) →
``RandomCrop_CategoryAreaConstraint`` (``INPUT.CROP``) → SSD colour augmentation
(``INPUT.COLOR_AUG_SSD``; MMSeg ``PhotoMetricDistortion``) → horizontal flip (p = 0.5). Flip and colour
commute, so the order of the last two differs from the reference harmlessly. Padding to the crop
size happens in ``CFTSemanticSegmentor`` after normalisation (0 = the mean colour), so the mapper
does not pad (``size_divisibility`` -1).
"""
from typing import Dict, Tuple

import numpy as np
from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from detectron2.projects.point_rend import ColorAugSSDTransform
from PIL import Image

from segcommon.data.dataset_mappers import register_mapper
from segcommon.data.dataset_mappers.mask_former_semantic import MaskFormerSemanticDatasetMapper

__all__ = ["RandomRescaleInBox", "CFTSemanticDatasetMapper"]


class RandomRescaleInBox(T.Augmentation):
    """
    MMSeg ``RandomResize(scale=(A, B), ratio_range=(lo, hi), keep_ratio=True)``: draw
    r ~ U(lo, hi), box (a, b) = (int(A * r), int(B * r)), rescale by
    ``f = min(max(a, b) / long_edge, min(a, b) / short_edge)`` (the box is orientation-free) to
    (int(h * f + 0.5), int(w * f + 0.5)); image bilinear, labels nearest. Detectron2's
    ``ResizeShortestEdge`` (discrete sizes) and ``ResizeScale`` (oriented box) differ.
    """

    def __init__(self, scale: Tuple[int, int], ratio_range: Tuple[float, float]):
        super().__init__()
        self.scale = tuple(scale)
        self.ratio_range = tuple(ratio_range)

    def get_transform(self, image: np.ndarray) -> T.Transform:
        h, w = image.shape[:2]
        r = np.random.uniform(*self.ratio_range)
        a, b = int(self.scale[0] * r), int(self.scale[1] * r)
        f = min(max(a, b) / max(h, w), min(a, b) / min(h, w))
        return T.ResizeTransform(h, w, int(h * f + 0.5), int(w * f + 0.5), Image.BILINEAR)


@register_mapper("cft_semantic")
class CFTSemanticDatasetMapper(MaskFormerSemanticDatasetMapper):
    """MaskFormer's semantic mapper (same output: "image", "sem_seg", "instances") with the
    reference's augmentation list (module docstring); configured by ``INPUT.CFT_RESIZE``,
    ``INPUT.CROP`` and ``INPUT.COLOR_AUG_SSD``."""

    @classmethod
    def from_config(cls, cfg: CfgNode, is_train: bool = True) -> Dict:
        augs = [RandomRescaleInBox(cfg.INPUT.CFT_RESIZE.SCALE, cfg.INPUT.CFT_RESIZE.RATIO_RANGE)]
        if cfg.INPUT.CROP.ENABLED:
            augs.append(
                T.RandomCrop_CategoryAreaConstraint(
                    cfg.INPUT.CROP.TYPE,
                    cfg.INPUT.CROP.SIZE,
                    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA,
                    cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
                )
            )
        if cfg.INPUT.COLOR_AUG_SSD:
            augs.append(ColorAugSSDTransform(img_format=cfg.INPUT.FORMAT))
        augs.append(T.RandomFlip())
        return {
            "is_train": is_train,
            "augmentations": augs,
            "image_format": cfg.INPUT.FORMAT,
            "ignore_label": MetadataCatalog.get(cfg.DATASETS.TRAIN[0]).ignore_label,
            "size_divisibility": -1,
        }
