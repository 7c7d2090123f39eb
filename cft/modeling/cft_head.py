"""``CFTHead``: the CFT decode head ("v1", the model of arXiv 2308.05581), registered in
``SEM_SEG_HEADS_REGISTRY``.

State-dict names equal the reference's ``decode_head.*`` names (``shared/reference/cft/*.json``)
minus the unused ``loss_decode.1.criterion.empty_weight`` buffer; ``scale_heads`` is the fusion
conv-norm-ReLU (the reference's name), ``fpn_convs`` the per-stage 3x3 smoothing convs.
"""
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import ShapeSpec, get_norm
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import Tensor, nn

from segcommon.layers import resize_bilinear

from .cft_block import CFTBlock
from .losses import category_mask_losses, pixel_cross_entropy, sum_stage_masks

__all__ = ["CFTHead", "FusionConv"]


class FusionConv(nn.Module):
    """Conv3x3 (no bias) -> norm -> ReLU under the reference's attribute names ``conv`` / ``bn``
    (MMCV ``ConvModule``). ``bn`` is whatever ``get_norm(norm)`` builds (SyncBN in the reference
    configs, GN in the CPU toy config)."""

    def __init__(self, in_channels: int, out_channels: int, norm: str):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=False)
        self.bn = get_norm(norm, out_channels) or nn.Identity()
        self.activate = nn.ReLU(inplace=True)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        return self.activate(self.bn(self.conv(x)))


@SEM_SEG_HEADS_REGISTRY.register()
class CFTHead(nn.Module):
    """
    Top-down aggregation of the backbone maps with three CFT blocks, then concat fusion and a 1x1
    classifier. With input maps finest first (strides 4, 8, 16, 32):

    * ``lateral_convs[i]``: 1x1 conv (with bias) of stage i to C channels, L_i;
    * block j (``cfts[j]``, run for j = 2, 1, 0) takes the query L_j and the context (L_3 for j = 2,
      else the previous block's output) and returns H_j (the size of L_j) and class-mask logits at
      the context's size; masks are collected coarsest first [M_32, M_16, M_8];
    * fusion: [L_3, fpn_convs[2](H_2), fpn_convs[1](H_1), fpn_convs[0](H_0)] resized to stride 4,
      concatenated (4C), ``scale_heads`` conv3x3-norm-ReLU (-> C), Dropout2d, ``conv_seg`` 1x1 -> K.

    Returns, from ``forward``: training ``(None, losses)``; inference ``(logits, {})`` with logits
    (B, K, H/4, W/4) (the meta-architecture resizes them to the image).
    """

    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        num_classes: int,
        conv_dim: int = 256,
        norm: str = "SyncBN",
        ignore_value: int = 255,
        loss_weight: float = 1.0,
        num_heads: int = 4,
        embed_groups: int = 4,
        mlp_ratio: int = 4,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        drop: float = 0.0,
        ln_eps: float = 1e-6,
        negate_attn_logits: bool = True,
        cls_dropout: float = 0.1,
        align_corners: bool = False,
        ce_avg_non_ignore: bool = False,
        mask_focal_weight: float = 5.0,
        mask_dice_weight: float = 2.0,
        mask_loss_weight: float = 1.0,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
    ):
        """
        Args:
            input_shape: the backbone maps the head reads; used finest (smallest stride) first.
            num_classes: K.
            conv_dim: head width C.
            norm: norm of the fusion conv (Detectron2 ``get_norm`` name).
            ignore_value: label of unlabelled and padded pixels.
            loss_weight: weight of the pixel cross-entropy.
            num_heads, embed_groups, mlp_ratio, qkv_bias, attn_drop, drop, ln_eps,
                negate_attn_logits: of every :class:`CFTBlock` (``MODEL.CFT.*``).
            cls_dropout: Dropout2d probability before the classifier.
            align_corners: of every bilinear resize in the head and losses.
            ce_avg_non_ignore: see :func:`pixel_cross_entropy`.
            mask_focal_weight, mask_dice_weight, mask_loss_weight: the mask loss is
                ``mask_loss_weight * (mask_focal_weight * focal + mask_dice_weight * dice)``.
            focal_alpha, focal_gamma: of the sigmoid focal loss.
        """
        super().__init__()
        shapes = sorted(input_shape.items(), key=lambda kv: kv[1].stride)
        if len(shapes) < 2:
            raise ValueError(f"CFTHead needs at least two input maps, got {list(input_shape)}")
        self.in_features = [k for k, _ in shapes]
        in_channels = [v.channels for _, v in shapes]
        self.num_classes = num_classes
        self.ignore_value = ignore_value
        self.loss_weight = loss_weight
        self.align_corners = align_corners
        self.ce_avg_non_ignore = ce_avg_non_ignore
        self.mask_focal_weight = mask_focal_weight * mask_loss_weight
        self.mask_dice_weight = mask_dice_weight * mask_loss_weight
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma

        self.lateral_convs = nn.ModuleList(nn.Conv2d(c, conv_dim, 1) for c in in_channels)
        self.cfts = nn.ModuleList(
            CFTBlock(
                conv_dim, num_heads, num_classes, embed_groups, mlp_ratio, attn_drop, drop,
                qkv_bias, ln_eps, negate_attn_logits,
            )
            for _ in in_channels[:-1]
        )
        self.fpn_convs = nn.ModuleList(nn.Conv2d(conv_dim, conv_dim, 3, 1, 1) for _ in in_channels[:-1])
        self.scale_heads = FusionConv(len(in_channels) * conv_dim, conv_dim, norm)
        self.dropout = nn.Dropout2d(cls_dropout) if cls_dropout > 0 else nn.Identity()
        self.conv_seg = nn.Conv2d(conv_dim, num_classes, 1)
        self._init_weights()

    def _init_weights(self) -> None:
        # The reference's init_cfg; every other layer keeps PyTorch's default (cft.md 2.9).
        nn.init.normal_(self.conv_seg.weight, std=0.01)
        nn.init.zeros_(self.conv_seg.bias)
        for block in self.cfts:
            nn.init.trunc_normal_(block.cross_attn.kv.embed.weight, std=0.02)
            if block.cross_attn.kv.embed.bias is not None:
                nn.init.zeros_(block.cross_attn.kv.embed.bias)

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]) -> Dict:
        h, c = cfg.MODEL.SEM_SEG_HEAD, cfg.MODEL.CFT
        return {
            "input_shape": {k: v for k, v in input_shape.items() if k in h.IN_FEATURES},
            "num_classes": h.NUM_CLASSES,
            "conv_dim": h.CONVS_DIM,
            "norm": h.NORM,
            "ignore_value": h.IGNORE_VALUE,
            "loss_weight": h.LOSS_WEIGHT,
            "num_heads": c.NUM_HEADS,
            "embed_groups": c.EMBED_GROUPS,
            "mlp_ratio": c.MLP_RATIO,
            "qkv_bias": c.QKV_BIAS,
            "attn_drop": c.ATTN_DROP,
            "drop": c.DROP,
            "ln_eps": c.LN_EPS,
            "negate_attn_logits": c.NEGATE_ATTN_LOGITS,
            "cls_dropout": c.CLS_DROPOUT,
            "align_corners": c.ALIGN_CORNERS,
            "ce_avg_non_ignore": c.CE_AVG_NON_IGNORE,
            "mask_focal_weight": c.MASK_FOCAL_WEIGHT,
            "mask_dice_weight": c.MASK_DICE_WEIGHT,
            "mask_loss_weight": c.MASK_LOSS_WEIGHT,
            "focal_alpha": c.FOCAL_ALPHA,
            "focal_gamma": c.FOCAL_GAMMA,
        }

    def layers(self, features: Dict[str, Tensor]) -> Tuple[Tensor, List[Tensor]]:
        """
        Args:
            features: backbone maps ``{name: (B, C_i, H_i, W_i)}``.

        Returns:
            logits (B, K, H_0, W_0) at the finest input's size, and the class-mask logits of the
            blocks in execution order (coarsest first), each (B, K, h, w) at its context's size.
        """
        laterals = [conv(features[f]) for conv, f in zip(self.lateral_convs, self.in_features)]
        high = laterals[-1]
        fused = [high]
        masks = []
        for j in range(len(self.cfts) - 1, -1, -1):
            high, mask = self.cfts[j](laterals[j], high)
            masks.append(mask)
            # The smoothed copy feeds only the fusion; the next block gets the raw block output.
            fused.append(self.fpn_convs[j](high))
        size = fused[-1].shape[-2:]
        fused = [resize_bilinear(x, size, self.align_corners) for x in fused]
        out = self.scale_heads(torch.cat(fused, dim=1))
        return self.conv_seg(self.dropout(out)), masks

    def forward(
        self, features: Dict[str, Tensor], targets: Optional[Tensor] = None
    ) -> Tuple[Optional[Tensor], Dict[str, Tensor]]:
        """targets: (B, H, W) int64 labels of the (padded) input batch, required in training."""
        logits, masks = self.layers(features)
        if not self.training:
            return logits, {}
        if targets is None:
            raise ValueError("CFTHead needs targets in training")
        return None, self.losses(logits, masks, targets)

    def losses(self, logits: Tensor, masks: List[Tensor], targets: Tensor) -> Dict[str, Tensor]:
        """
        Args:
            logits: (B, K, h, w) head output; masks: the blocks' class-mask logits;
            targets: (B, H, W) labels.

        Returns:
            ``loss_sem_seg`` (weighted CE), ``loss_mask_focal`` and ``loss_mask_dice`` (weighted).
        """
        size = targets.shape[-2:]
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=self.align_corners)
        ce = pixel_cross_entropy(logits, targets, self.ignore_value, self.ce_avg_non_ignore)
        mask_sum = sum_stage_masks(masks, size, self.align_corners)
        focal, dice = category_mask_losses(
            mask_sum, targets, self.ignore_value, self.focal_alpha, self.focal_gamma
        )
        return {
            "loss_sem_seg": ce * self.loss_weight,
            "loss_mask_focal": focal * self.mask_focal_weight,
            "loss_mask_dice": dice * self.mask_dice_weight,
        }
