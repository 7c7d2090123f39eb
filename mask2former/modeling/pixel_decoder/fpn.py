"""MaskFormer-v1's plain FPN pixel decoder (``shared/specs/mask2former.md`` section 4.7).

No Mask2Former config uses it, but it is the default value of ``MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME``.
Module names follow the reference (``adapter_{i}``, ``layer_{i}``, ``mask_features``) so MaskFormer-v1
checkpoints load.
"""
import logging
from typing import Callable, Dict, List, Optional, Tuple, Union

import fvcore.nn.weight_init as weight_init
import torch
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from torch import nn
from torch.nn import functional as F

from . import PIXEL_DECODER_REGISTRY

__all__ = ["BasePixelDecoder"]

logger = logging.getLogger(__name__)


@PIXEL_DECODER_REGISTRY.register()
class BasePixelDecoder(nn.Module):
    """Top-down FPN over all input features (res2..res5).

    With inputs indexed fine to coarse ``i = 0..N-1`` (module suffix ``i + 1``): the coarsest has only
    an output conv ``layer_N`` (3x3, norm, ReLU; no lateral); each other has a lateral 1x1 conv
    ``adapter_{i+1}`` (norm, no activation) and an output conv ``layer_{i+1}`` (3x3, norm, ReLU).
    Top-down: ``y = layer_N(x_coarsest)``, then ``y = layer(adapter(x) + nearest_upsample(y))`` per
    finer level. ``mask_features`` is a 3x3 conv (with bias) on the finest ``y``.
    """

    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        conv_dim: int,
        mask_dim: int,
        norm: Optional[Union[str, Callable]] = None,
        num_multi_scale_features: int = 3,
    ):
        """
        Args:
            input_shape: channels and stride of every input feature.
            conv_dim: width of the FPN convs.
            mask_dim: channels of the mask features.
            norm: norm of every FPN conv ("" or None for none).
            num_multi_scale_features: how many top-down maps (coarsest first) are returned for the
                transformer decoder.
        """
        super().__init__()
        shapes = sorted(input_shape.items(), key=lambda kv: kv[1].stride)
        self.in_features = [k for k, _ in shapes]  # fine to coarse
        feature_channels = [v.channels for _, v in shapes]

        # A bias only when there is no norm (the reference tests for the empty string).
        use_bias = norm == ""
        lateral_convs: List[Optional[Conv2d]] = []
        output_convs: List[Conv2d] = []
        for idx, in_channels in enumerate(feature_channels):
            is_coarsest = idx == len(feature_channels) - 1
            # The coarsest level has no lateral conv: its output conv reads the backbone map.
            lateral_conv = None
            if not is_coarsest:
                lateral_conv = Conv2d(
                    in_channels, conv_dim, kernel_size=1, bias=use_bias, norm=get_norm(norm, conv_dim)
                )
            output_conv = Conv2d(
                in_channels if is_coarsest else conv_dim,
                conv_dim,
                kernel_size=3,
                stride=1,
                padding=1,
                bias=use_bias,
                norm=get_norm(norm, conv_dim),
                activation=F.relu,
            )
            if lateral_conv is not None:
                weight_init.c2_xavier_fill(lateral_conv)
                self.add_module(f"adapter_{idx + 1}", lateral_conv)
            weight_init.c2_xavier_fill(output_conv)
            self.add_module(f"layer_{idx + 1}", output_conv)
            lateral_convs.append(lateral_conv)
            output_convs.append(output_conv)
        # Top-down order (coarse to fine) for forward_features. Plain lists, so not registered twice.
        self.lateral_convs = lateral_convs[::-1]
        self.output_convs = output_convs[::-1]

        self.mask_dim = mask_dim
        self.mask_features = Conv2d(conv_dim, mask_dim, kernel_size=3, stride=1, padding=1)
        weight_init.c2_xavier_fill(self.mask_features)

        self.maskformer_num_feature_levels = num_multi_scale_features

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]) -> dict:
        head = cfg.MODEL.SEM_SEG_HEAD
        return {
            "input_shape": {k: v for k, v in input_shape.items() if k in head.IN_FEATURES},
            "conv_dim": head.CONVS_DIM,
            "mask_dim": head.MASK_DIM,
            "norm": head.NORM,
        }

    def forward_features(
        self, features: Dict[str, torch.Tensor]
    ) -> Tuple[torch.Tensor, None, List[torch.Tensor]]:
        """
        Args:
            features: backbone maps by name, ``features[f]`` of shape (B, C_f, H/s_f, W/s_f).

        Returns:
            mask_features: (B, mask_dim, h0, w0) at the finest input's resolution (H/4 for res2).
            None (no transformer-encoder output).
            multi_scale_features: the first ``num_multi_scale_features`` top-down maps
                (B, conv_dim, h, w), lowest resolution first (strides 32, 16, 8 for res2..res5).
        """
        multi_scale_features: List[torch.Tensor] = []
        y: Optional[torch.Tensor] = None
        for idx, f in enumerate(self.in_features[::-1]):  # coarse to fine
            x = features[f]
            lateral_conv = self.lateral_convs[idx]
            if lateral_conv is None:
                y = self.output_convs[idx](x)
            else:
                cur_fpn = lateral_conv(x)
                # Nearest upsampling, following FPN (the deformable decoder uses bilinear).
                y = self.output_convs[idx](cur_fpn + F.interpolate(y, size=cur_fpn.shape[-2:], mode="nearest"))
            if len(multi_scale_features) < self.maskformer_num_feature_levels:
                multi_scale_features.append(y)
        return self.mask_features(y), None, multi_scale_features

    def forward(self, features: Dict[str, torch.Tensor], targets=None):
        logger.warning("Calling forward() of a pixel decoder is not its interface; use forward_features().")
        return self.forward_features(features)
