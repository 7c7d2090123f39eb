"""``TransfinerROIHeads``: Detectron2's ``StandardROIHeads`` with Mask Transfiner's mask pooler (the RoI
feature pyramid and the p2 semantic stack, ``shared/specs/transfiner.md`` §4, §15.3)."""
from typing import List

import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, StandardROIHeads
from detectron2.modeling.roi_heads.mask_head import build_mask_head
from detectron2.structures import Instances

from .pooler import TransfinerMaskPooler

__all__ = ["TransfinerROIHeads"]


@ROI_HEADS_REGISTRY.register()
class TransfinerROIHeads(StandardROIHeads):
    """Stock box branch; the mask branch pools with :class:`TransfinerMaskPooler` (whose 5-tuple goes
    to the mask head, normally ``TransfinerMaskHead``). In training, every sampled proposal also
    carries ``gt_index``, the index of its matched GT in the image, so the full-image incoherence
    targets are computed once per GT instead of once per proposal."""

    @classmethod
    def _init_mask_head(cls, cfg, input_shape):
        if not cfg.MODEL.MASK_ON:
            return {}
        in_features = cfg.MODEL.ROI_HEADS.IN_FEATURES
        resolution = cfg.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION
        channels = [input_shape[f].channels for f in in_features][0]
        t = cfg.MODEL.TRANSFINER
        pooler = TransfinerMaskPooler(
            output_size=resolution,
            scales=tuple(1.0 / input_shape[k].stride for k in in_features),
            sampling_ratio=cfg.MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO,
            pooler_type=cfg.MODEL.ROI_MASK_HEAD.POOLER_TYPE,
            in_channels=channels,
            refine_sizes=t.REFINE_RESOLUTIONS,
            max_rois_train=t.MAX_REFINE_ROIS_TRAIN,
            max_rois_test=t.MAX_REFINE_ROIS_TEST,
            semantic_num_conv=t.SEMANTIC_NUM_CONV,
            semantic_conv_dim=t.SEMANTIC_CONV_DIM,
        )
        shape = ShapeSpec(channels=channels, width=resolution, height=resolution)
        return {"mask_in_features": in_features, "mask_pooler": pooler, "mask_head": build_mask_head(cfg, shape)}

    @torch.no_grad()
    def label_and_sample_proposals(self, proposals: List[Instances], targets: List[Instances]) -> List[Instances]:
        """Stock sampling; ``gt_index`` (a ``gt_*`` field, so the stock code propagates it) is added to
        copies of the targets first."""
        indexed = []
        for t in targets:
            t = Instances(t.image_size, **t.get_fields())
            t.gt_index = torch.arange(len(t), device=t.gt_boxes.device)
            indexed.append(t)
        return super().label_and_sample_proposals(proposals, indexed)
