"""The ``SOTR`` meta-architecture: ResNet-FPN, twin-transformer instance head with class and dynamic
kernel outputs, multi-level upsampling mask branch, SOLO-style targets and losses, and matrix-NMS
inference. Follows the official easton-cau/SOTR ``adet/modeling/sotr/sotr.py``; see
``shared/specs/sotr.md`` §2.
"""
from typing import Dict, List, Sequence, Tuple

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from detectron2.modeling.backbone import Backbone
from detectron2.structures import ImageList, Instances
from torch import nn

from segcommon.evaluation.build import INSTANCE, register_model_tasks

from ..heads import MaskHead, TwinTransformerHead, split_feats
from ..losses import sotr_losses
from ..matrix_nms import point_nms
from ..postprocessing import InferenceParams, inference_single_image
from ..targets import build_targets

__all__ = ["SOTR"]

# SOTR's level layout is fixed by the reference: five instance levels (p2 halved ... p6 resized to
# p5) and four mask-branch inputs whose fourth (p5) is replaced by the transformer output.
NUM_INSTANCE_LEVELS = 5
NUM_MASK_LEVELS = 4
MASK_LEVEL = 3


@META_ARCH_REGISTRY.register()
class SOTR(nn.Module):
    """SOTR: segmenting objects with transformers (Guo et al., ICCV 2021).

    Input: Detectron2's list of per-image dicts with ``image`` (3, h, w) in ``INPUT.FORMAT``, optional
    ``height``/``width`` (output size) and, in training, ``instances`` with ``gt_boxes``,
    ``gt_classes`` and ``gt_masks`` (``BitMasks`` at the image size). Output in training:
    ``{"loss_ins", "loss_cate"}``; in inference, per image, ``{"instances": Instances}`` at
    ``(height, width)`` with ``pred_masks``, ``scores``, ``pred_classes`` and ``pred_boxes``.
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        cate_head: TwinTransformerHead,
        mask_head: MaskHead,
        instance_in_features: Sequence[str],
        mask_in_features: Sequence[str],
        num_classes: int,
        num_grids: Sequence[int],
        scale_ranges: Sequence[Sequence[float]],
        sigma: float,
        focal_alpha: float,
        focal_gamma: float,
        focal_weight: float,
        dice_weight: float,
        inference_params: InferenceParams,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
    ):
        """
        Args:
            backbone: ResNet-FPN returning at least the instance and mask input features.
            cate_head: the twin-transformer instance head.
            mask_head: the mask branch.
            instance_in_features: the five FPN maps of the instance levels (p2-p6).
            mask_in_features: the four FPN maps of the mask branch (p2-p5; the fourth is replaced).
            num_classes: K (also the background label of the class targets).
            num_grids: S per level.
            scale_ranges: inclusive [low, high] of sqrt(box area) per level, in input pixels.
            sigma: centre-region scale of the target assignment.
            focal_alpha, focal_gamma, focal_weight: class focal loss.
            dice_weight: weight of the mask dice loss.
            inference_params: thresholds and sizes of the inference.
            pixel_mean, pixel_std: per-channel normalisation in ``INPUT.FORMAT`` order.
        """
        super().__init__()
        self.backbone = backbone
        self.cate_head = cate_head
        self.mask_head = mask_head
        self.instance_in_features = list(instance_in_features)
        self.mask_in_features = list(mask_in_features)
        self.num_classes = num_classes
        self.num_grids = list(num_grids)
        self.scale_ranges = [tuple(r) for r in scale_ranges]
        self.sigma = sigma
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.focal_weight = focal_weight
        self.dice_weight = dice_weight
        self.inference_params = inference_params
        # Not persistent: official checkpoints have no pixel_mean / pixel_std entries.
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

        if len(self.instance_in_features) != NUM_INSTANCE_LEVELS:
            raise ValueError(f"MODEL.SOTR.INSTANCE_IN_FEATURES must name 5 maps, got {self.instance_in_features}")
        if len(self.mask_in_features) != NUM_MASK_LEVELS:
            raise ValueError(f"MODEL.SOTR.MASK_IN_FEATURES must name 4 maps, got {self.mask_in_features}")
        for name, value in (
            ("NUM_GRIDS", self.num_grids),
            ("FPN_SCALE_RANGES", self.scale_ranges),
            ("FPN_INSTANCE_STRIDES", list(inference_params.strides)),
        ):
            if len(value) != NUM_INSTANCE_LEVELS:
                raise ValueError(f"MODEL.SOTR.{name} must have 5 entries (one per level), got {value}")

    @classmethod
    def from_config(cls, cfg):
        s = cfg.MODEL.SOTR
        backbone = build_backbone(cfg)
        shapes = backbone.output_shape()
        missing = [f for f in (*s.INSTANCE_IN_FEATURES, *s.MASK_IN_FEATURES) if f not in shapes]
        if missing:
            raise ValueError(f"the backbone has no feature(s) {missing}; it returns {sorted(shapes)}")
        widths = {shapes[f].channels for f in s.INSTANCE_IN_FEATURES}
        if widths != {s.INSTANCE_IN_CHANNELS}:
            raise ValueError(
                f"MODEL.SOTR.INSTANCE_IN_CHANNELS={s.INSTANCE_IN_CHANNELS} must equal the width of "
                f"every instance feature (the FPN width), got {sorted(widths)}"
            )
        if s.NUM_KERNELS != s.NUM_MASKS:
            # Dynamic kernels are 1x1 convs over the NUM_MASKS mask-feature channels.
            raise ValueError(f"MODEL.SOTR.NUM_KERNELS ({s.NUM_KERNELS}) must equal NUM_MASKS ({s.NUM_MASKS})")
        cate_head = TwinTransformerHead(
            in_channels=s.INSTANCE_IN_CHANNELS,
            num_classes=s.NUM_CLASSES,
            num_kernels=s.NUM_KERNELS,
            num_grids=s.NUM_GRIDS,
            prior_prob=s.PRIOR_PROB,
            num_layers=s.TRANSFORMER.NUM_LAYERS,
            num_heads=s.TRANSFORMER.NUM_HEADS,
            leaky_relu_slope=s.TRANSFORMER.LEAKY_RELU_SLOPE,
            duplicate_width=s.TRANSFORMER.DUPLICATE_WIDTH,
            mask_level=MASK_LEVEL,
        )
        mask_head = MaskHead(
            num_levels=len(s.MASK_IN_FEATURES),
            in_channels=s.MASK_IN_CHANNELS,
            channels=s.MASK_CHANNELS,
            num_masks=s.NUM_MASKS,
            norm=s.NORM,
        )
        return {
            "backbone": backbone,
            "cate_head": cate_head,
            "mask_head": mask_head,
            "instance_in_features": s.INSTANCE_IN_FEATURES,
            "mask_in_features": s.MASK_IN_FEATURES,
            "num_classes": s.NUM_CLASSES,
            "num_grids": s.NUM_GRIDS,
            "scale_ranges": s.FPN_SCALE_RANGES,
            "sigma": s.SIGMA,
            "focal_alpha": s.LOSS.FOCAL_ALPHA,
            "focal_gamma": s.LOSS.FOCAL_GAMMA,
            "focal_weight": s.LOSS.FOCAL_WEIGHT,
            "dice_weight": s.LOSS.DICE_WEIGHT,
            "inference_params": InferenceParams(
                num_grids=list(s.NUM_GRIDS),
                strides=list(s.FPN_INSTANCE_STRIDES),
                score_thr=s.SCORE_THR,
                mask_thr=s.MASK_THR,
                nms_pre=s.NMS_PRE,
                nms_type=s.NMS_TYPE,
                nms_kernel=s.NMS_KERNEL,
                nms_sigma=s.NMS_SIGMA,
                update_thr=s.UPDATE_THR,
                max_per_img=s.MAX_PER_IMG,
                boxes_from_masks=s.BOXES_FROM_MASKS,
            ),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess_image(self, batched_inputs: List[Dict]) -> ImageList:
        """Normalises, then zero-pads to the backbone's size divisibility (padded pixels are 0)."""
        images = [(x["image"].to(self.device) - self.pixel_mean) / self.pixel_std for x in batched_inputs]
        return ImageList.from_tensors(images, self.backbone.size_divisibility)

    def predict(self, images: ImageList) -> Tuple[List[torch.Tensor], List[torch.Tensor], torch.Tensor]:
        """
        Returns:
            cate_preds: per level, (N, K, S_l, S_l) class logits.
            kernel_preds: per level, (N, D, S_l, S_l) dynamic kernels.
            mask_features: (N, D, H_pad/4, W_pad/4).
        """
        features = self.backbone(images.tensor)
        ins_feats = split_feats([features[f] for f in self.instance_in_features])
        cate_preds, kernel_preds, p5_transformed = self.cate_head(ins_feats)
        mask_feats = [features[f] for f in self.mask_in_features]
        mask_feats[MASK_LEVEL] = p5_transformed
        return cate_preds, kernel_preds, self.mask_head(mask_feats)

    def forward(self, batched_inputs: List[Dict]):
        images = self.preprocess_image(batched_inputs)
        cate_preds, kernel_preds, mask_features = self.predict(images)
        if self.training:
            gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
            return self.losses(cate_preds, kernel_preds, mask_features, gt_instances)
        return self.inference(cate_preds, kernel_preds, mask_features, images.image_sizes, batched_inputs)

    def losses(
        self,
        cate_preds: List[torch.Tensor],
        kernel_preds: List[torch.Tensor],
        mask_features: torch.Tensor,
        gt_instances: List[Instances],
    ) -> Dict[str, torch.Tensor]:
        targets = build_targets(
            gt_instances,
            tuple(mask_features.shape[-2:]),
            self.scale_ranges,
            self.num_grids,
            self.sigma,
            self.num_classes,
        )
        return sotr_losses(
            cate_preds,
            kernel_preds,
            mask_features,
            targets,
            num_classes=self.num_classes,
            focal_alpha=self.focal_alpha,
            focal_gamma=self.focal_gamma,
            focal_weight=self.focal_weight,
            dice_weight=self.dice_weight,
        )

    @torch.no_grad()
    def inference(
        self,
        cate_preds: List[torch.Tensor],
        kernel_preds: List[torch.Tensor],
        mask_features: torch.Tensor,
        image_sizes: List[Tuple[int, int]],
        batched_inputs: List[Dict],
    ) -> List[Dict[str, Instances]]:
        # Point NMS on the probabilities, then (N, S, S, K) -> per image (cells, K).
        scores = [point_nms(c.sigmoid()).permute(0, 2, 3, 1) for c in cate_preds]
        kernels = [k.permute(0, 2, 3, 1) for k in kernel_preds]
        results = []
        for n, (inputs, image_size) in enumerate(zip(batched_inputs, image_sizes)):
            output_size = (inputs.get("height", image_size[0]), inputs.get("width", image_size[1]))
            instances = inference_single_image(
                torch.cat([s[n].reshape(-1, self.num_classes) for s in scores]),
                torch.cat([k[n].reshape(-1, k.shape[-1]) for k in kernels]),
                mask_features[n],
                image_size,
                output_size,
                self.inference_params,
            )
            results.append({"instances": instances})
        return results


register_model_tasks("SOTR", lambda cfg: frozenset({INSTANCE}))
