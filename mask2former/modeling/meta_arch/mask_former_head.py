"""``MaskFormerHead``: the pixel decoder followed by the transformer decoder (the "predictor")."""
from typing import Dict, Optional

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import nn

from ..pixel_decoder import build_pixel_decoder
from ..transformer_decoder import build_transformer_decoder

__all__ = ["MaskFormerHead"]


@SEM_SEG_HEADS_REGISTRY.register()
class MaskFormerHead(nn.Module):
    """Runs ``pixel_decoder.forward_features`` on the backbone features, then the predictor on the
    pixel decoder's multi-scale features and per-pixel mask embeddings. Has no parameters of its own:
    its state-dict entries are ``pixel_decoder.*`` and ``predictor.*``.
    """

    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        num_classes: int,
        pixel_decoder: nn.Module,
        transformer_predictor: nn.Module,
        transformer_in_feature: str = "multi_scale_pixel_decoder",
        ignore_value: int = -1,
        loss_weight: float = 1.0,
    ):
        """
        Args:
            input_shape: backbone features the head reads (``SEM_SEG_HEAD.IN_FEATURES``).
            num_classes: K, the number of classes (without "no object").
            pixel_decoder: module with ``forward_features(features) -> (mask_features, _, multi_scale)``.
            transformer_predictor: the transformer decoder, called as
                ``predictor(multi_scale_features, mask_features, mask)``.
            transformer_in_feature: what feeds the predictor; only "multi_scale_pixel_decoder"
                (every Mask2Former config) is implemented.
            ignore_value, loss_weight: kept for config compatibility; Mask2Former does not use them.
        """
        super().__init__()
        if transformer_in_feature != "multi_scale_pixel_decoder":
            raise ValueError(
                f"MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE={transformer_in_feature!r} is the "
                "MaskFormer-v1 wiring, which is not implemented; use 'multi_scale_pixel_decoder'"
            )
        self.in_features = [k for k, _ in sorted(input_shape.items(), key=lambda kv: kv[1].stride)]
        self.num_classes = num_classes
        self.ignore_value = ignore_value
        self.loss_weight = loss_weight
        self.pixel_decoder = pixel_decoder
        self.predictor = transformer_predictor
        self.transformer_in_feature = transformer_in_feature

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        input_shape = {k: v for k, v in input_shape.items() if k in cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES}
        return {
            "input_shape": input_shape,
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            "ignore_value": cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            "loss_weight": cfg.MODEL.SEM_SEG_HEAD.LOSS_WEIGHT,
            "pixel_decoder": build_pixel_decoder(cfg, input_shape),
            "transformer_in_feature": cfg.MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE,
            "transformer_predictor": build_transformer_decoder(
                cfg, cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM, mask_classification=True
            ),
        }

    def forward(self, features: Dict[str, torch.Tensor], mask: Optional[torch.Tensor] = None) -> Dict:
        """features: backbone outputs ``{name: (B, C, H/s, W/s)}``. Returns the predictor's dict:
        ``pred_logits`` (B, Q, K+1), ``pred_masks`` (B, Q, H/4, W/4), ``aux_outputs``."""
        mask_features, _, multi_scale_features = self.pixel_decoder.forward_features(features)
        return self.predictor(multi_scale_features, mask_features, mask)
