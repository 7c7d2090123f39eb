"""The ``MaskFormer`` meta-architecture of Mask2Former: backbone, ``MaskFormerHead``, set criterion,
and semantic / panoptic / instance inference switched by ``MODEL.MASK_FORMER.TEST.*_ON``.

Follows the official ``mask2former/maskformer_model.py`` (facebookresearch/Mask2Former); see
``shared/specs/mask2former.md`` §2.
"""
from typing import Dict, List, Sequence, Tuple

import torch
from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone, build_sem_seg_head
from detectron2.modeling.backbone import Backbone
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import ImageList, Instances
from detectron2.utils.memory import retry_if_cuda_oom
from torch import nn
from torch.nn import functional as F

from segcommon.evaluation.build import INSTANCE, PANOPTIC, SEMANTIC, register_model_tasks

from .modeling.criterion import SetCriterion
from .modeling.matcher import HungarianMatcher
from .modeling.postprocessing import (
    instance_inference,
    instance_topk,
    instances_from_lowres_selection,
    panoptic_inference,
    semantic_inference,
)

__all__ = ["MaskFormer"]


@META_ARCH_REGISTRY.register()
class MaskFormer(nn.Module):
    """Mask classification: Q queries each predict a class distribution over K+1 classes and a mask.

    Input: Detectron2's list of per-image dicts with ``image`` (3, h, w) in ``INPUT.FORMAT``, optional
    ``height``/``width`` (output size) and, in training, ``instances`` with ``gt_classes`` (N,) and
    dense ``gt_masks`` (N, h, w). Output in training: the weighted loss dict; in inference, per image,
    the enabled subset of ``sem_seg`` (K, height, width), ``panoptic_seg`` ((height, width) int32,
    segments_info) and ``instances``.
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        sem_seg_head: nn.Module,
        criterion: nn.Module,
        num_queries: int,
        object_mask_threshold: float,
        overlap_threshold: float,
        thing_ids: Sequence[int],
        size_divisibility: int,
        sem_seg_postprocess_before_inference: bool,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        semantic_on: bool,
        panoptic_on: bool,
        instance_on: bool,
        test_topk_per_image: int,
    ):
        """
        Args:
            criterion: returns unweighted losses; its ``weight_dict`` names every loss it returns
                (the predictor returns no ``aux_outputs`` without deep supervision).
            thing_ids: contiguous ids of the thing classes (panoptic and instance inference).
            size_divisibility: pad batched images to a multiple of this; < 0 uses the backbone's.
            sem_seg_postprocess_before_inference: resize mask logits to the output size before
                running the task inference (required for panoptic and instance inference).
            pixel_mean, pixel_std: per-channel normalisation in ``INPUT.FORMAT`` order, pixel units.
            test_topk_per_image: instance detections kept per image.
        """
        super().__init__()
        self.backbone = backbone
        self.sem_seg_head = sem_seg_head
        self.criterion = criterion
        self.num_queries = num_queries
        self.object_mask_threshold = object_mask_threshold
        self.overlap_threshold = overlap_threshold
        self.thing_ids = list(thing_ids)
        self.size_divisibility = size_divisibility if size_divisibility >= 0 else backbone.size_divisibility
        self.sem_seg_postprocess_before_inference = sem_seg_postprocess_before_inference
        # Not persistent: official checkpoints have no pixel_mean / pixel_std entries.
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        self.semantic_on = semantic_on
        self.panoptic_on = panoptic_on
        self.instance_on = instance_on
        self.test_topk_per_image = test_topk_per_image
        if not self.semantic_on and not self.sem_seg_postprocess_before_inference:
            raise ValueError(
                "MODEL.MASK_FORMER.TEST.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE must be True "
                "when SEMANTIC_ON is False"
            )

    @classmethod
    def from_config(cls, cfg):
        mf = cfg.MODEL.MASK_FORMER
        backbone = build_backbone(cfg)
        sem_seg_head = build_sem_seg_head(cfg, backbone.output_shape())

        matcher = HungarianMatcher(
            cost_class=mf.CLASS_WEIGHT, cost_mask=mf.MASK_WEIGHT, cost_dice=mf.DICE_WEIGHT,
            num_points=mf.TRAIN_NUM_POINTS,
        )
        weight_dict = {"loss_ce": mf.CLASS_WEIGHT, "loss_mask": mf.MASK_WEIGHT, "loss_dice": mf.DICE_WEIGHT}
        if mf.DEEP_SUPERVISION:
            # DEC_LAYERS - 1 decoder layers, each with its own auxiliary prediction.
            for i in range(mf.DEC_LAYERS - 1):
                weight_dict.update({f"{k}_{i}": v for k, v in list(weight_dict.items())[:3]})
        criterion = SetCriterion(
            sem_seg_head.num_classes,
            matcher=matcher,
            weight_dict=weight_dict,
            eos_coef=mf.NO_OBJECT_WEIGHT,
            losses=["labels", "masks"],
            num_points=mf.TRAIN_NUM_POINTS,
            oversample_ratio=mf.OVERSAMPLE_RATIO,
            importance_sample_ratio=mf.IMPORTANCE_SAMPLE_RATIO,
        )
        thing_ids = []
        if cfg.DATASETS.TRAIN:
            meta = MetadataCatalog.get(cfg.DATASETS.TRAIN[0])
            thing_ids = list(meta.get("thing_dataset_id_to_contiguous_id", {}).values())
        test = mf.TEST
        return {
            "backbone": backbone,
            "sem_seg_head": sem_seg_head,
            "criterion": criterion,
            "num_queries": mf.NUM_OBJECT_QUERIES,
            "object_mask_threshold": test.OBJECT_MASK_THRESHOLD,
            "overlap_threshold": test.OVERLAP_THRESHOLD,
            "thing_ids": thing_ids,
            "size_divisibility": mf.SIZE_DIVISIBILITY,
            "sem_seg_postprocess_before_inference": (
                test.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE or test.PANOPTIC_ON or test.INSTANCE_ON
            ),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "semantic_on": test.SEMANTIC_ON,
            "panoptic_on": test.PANOPTIC_ON,
            "instance_on": test.INSTANCE_ON,
            "test_topk_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess_image(self, batched_inputs: List[Dict]) -> ImageList:
        images = [(x["image"].to(self.device) - self.pixel_mean) / self.pixel_std for x in batched_inputs]
        return ImageList.from_tensors(images, self.size_divisibility)

    def forward(self, batched_inputs: List[Dict]):
        images = self.preprocess_image(batched_inputs)
        outputs = self.sem_seg_head(self.backbone(images.tensor))

        if self.training:
            targets = self.prepare_targets([x["instances"].to(self.device) for x in batched_inputs], images)
            losses = self.criterion(outputs, targets)
            unweighted = sorted(set(losses) - set(self.criterion.weight_dict))
            if unweighted:
                raise KeyError(f"criterion returned losses without a weight: {unweighted}")
            return {k: v * self.criterion.weight_dict[k] for k, v in losses.items()}

        output_sizes = [(x.get("height", h), x.get("width", w)) for x, (h, w) in zip(batched_inputs, images.image_sizes)]
        return self.inference(
            outputs["pred_logits"], outputs["pred_masks"], tuple(images.tensor.shape[-2:]), images.image_sizes, output_sizes
        )

    def inference(
        self,
        mask_cls_results: torch.Tensor,
        mask_pred_results: torch.Tensor,
        padded_size: Tuple[int, int],
        image_sizes: List[Tuple[int, int]],
        output_sizes: List[Tuple[int, int]],
    ) -> List[Dict]:
        """Post-processing of the network's final predictions (also used on exported models' outputs).

        Args:
            mask_cls_results: (B, Q, K+1) class logits.
            mask_pred_results: (B, Q, H_pad/4, W_pad/4) mask logits.
            padded_size: (H_pad, W_pad) of the padded batch the network saw.
            image_sizes: per image, its (h, w) inside the padded batch.
            output_sizes: per image, the (height, width) to predict at (the original image size).

        Returns:
            per image, a dict with "sem_seg", "panoptic_seg" and/or "instances", as enabled.
        """
        # Instance inference alone selects its top-k (query, class) pairs from the class scores
        # only, so just the selected queries' masks are upsampled (bilinear resizing is per channel:
        # the same values as selecting from all upsampled masks, at a cost in k, not Q).
        instance_only = self.instance_on and not (self.semantic_on or self.panoptic_on)
        if not instance_only:
            # Mask logits from 1/4 to the padded batch size.
            mask_pred_results = F.interpolate(mask_pred_results, size=padded_size, mode="bilinear", align_corners=False)
        processed_results = []
        for mask_cls, mask_pred, image_size, (height, width) in zip(
            mask_cls_results, mask_pred_results, image_sizes, output_sizes
        ):
            if instance_only:
                instances = self._instance_inference_lowres(mask_cls, mask_pred, padded_size, image_size, height, width)
                processed_results.append({"instances": instances})
                continue
            result = {}
            if self.sem_seg_postprocess_before_inference:
                mask_pred = retry_if_cuda_oom(sem_seg_postprocess)(mask_pred, image_size, height, width)
                mask_cls = mask_cls.to(mask_pred)
            if self.semantic_on:
                r = retry_if_cuda_oom(semantic_inference)(mask_cls, mask_pred)
                if not self.sem_seg_postprocess_before_inference:
                    r = retry_if_cuda_oom(sem_seg_postprocess)(r, image_size, height, width)
                result["sem_seg"] = r
            if self.panoptic_on:
                result["panoptic_seg"] = retry_if_cuda_oom(panoptic_inference)(
                    mask_cls, mask_pred, self.thing_ids, self.object_mask_threshold, self.overlap_threshold
                )
            if self.instance_on:
                result["instances"] = retry_if_cuda_oom(instance_inference)(
                    mask_cls, mask_pred, self.test_topk_per_image, self.thing_ids if self.panoptic_on else None
                )
            processed_results.append(result)
        return processed_results

    def _instance_inference_lowres(self, mask_cls, mask_pred, padded_size, image_size, height, width) -> Instances:
        """Instance inference of one image from its 1/4-resolution mask logits ``mask_pred`` (Q, h, w):
        the same result as :func:`instance_inference` on the masks upsampled to the padded size and
        post-processed (spec §2.4, §2.7), upsampling only the top-k selected queries' masks."""
        scores, classes, query_indices = instance_topk(mask_cls.to(mask_pred), self.test_topk_per_image)
        return retry_if_cuda_oom(instances_from_lowres_selection)(
            scores, classes, mask_pred[query_indices], padded_size, image_size, (height, width)
        )

    def prepare_targets(self, instances, images: ImageList) -> List[Dict[str, torch.Tensor]]:
        """Per image ``{"labels": (N,), "masks": (N, H, W)}``, masks zero-padded to the batch size."""
        h_pad, w_pad = images.tensor.shape[-2:]
        targets = []
        for inst in instances:
            masks = inst.gt_masks if torch.is_tensor(inst.gt_masks) else inst.gt_masks.tensor
            padded = masks.new_zeros((masks.shape[0], h_pad, w_pad))
            padded[:, : masks.shape[1], : masks.shape[2]] = masks
            targets.append({"labels": inst.gt_classes, "masks": padded})
        return targets


register_model_tasks(
    "MaskFormer",
    lambda cfg: frozenset(
        task
        for task, on in (
            (SEMANTIC, cfg.MODEL.MASK_FORMER.TEST.SEMANTIC_ON),
            (INSTANCE, cfg.MODEL.MASK_FORMER.TEST.INSTANCE_ON),
            (PANOPTIC, cfg.MODEL.MASK_FORMER.TEST.PANOPTIC_ON),
        )
        if on
    ),
)
