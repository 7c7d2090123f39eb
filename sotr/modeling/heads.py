"""SOTR's two heads: the instance head (twin transformer + class and kernel linear heads) and the mask
branch (multi-level upsampling module). ``shared/specs/sotr.md`` §4, §6 and §7.

Module names reproduce the official keys: ``cate_head.{transformer, cate_pred, kernel_pred}`` and
``mask_head.{convs_all_levels.<i>.conv<j>.<0|1>, conv_pred.<0|1>}``.
"""
import math
from typing import List, Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from .twin_transformer import TwinTransformer

__all__ = ["split_feats", "resize_to_grids", "TwinTransformerHead", "MaskHead"]


def _bilinear(x: torch.Tensor, **kwargs) -> torch.Tensor:
    return F.interpolate(x, mode="bilinear", align_corners=False, **kwargs)


def split_feats(feats: Sequence[torch.Tensor]) -> List[torch.Tensor]:
    """Prepares the five instance levels from (p2, p3, p4, p5, p6).

    p2 is halved (bilinear, scale 0.5), p6 is resized to p5's size, p3-p5 are unchanged.

    Args:
        feats: five (N, C, H_l, W_l) maps.

    Returns:
        five (N, C, ., .) maps: level 0 at stride 8, levels 1-4 at strides 8, 16, 32, 32.
    """
    if len(feats) != 5:
        raise ValueError(f"SOTR expects 5 instance feature maps (p2-p6), got {len(feats)}")
    return [
        _bilinear(feats[0], scale_factor=0.5),
        feats[1],
        feats[2],
        feats[3],
        _bilinear(feats[4], size=feats[3].shape[-2:]),
    ]


def resize_to_grids(feats: Sequence[torch.Tensor], num_grids: Sequence[int]) -> List[torch.Tensor]:
    """Bilinear resize of level l to a square S_l x S_l grid, whatever the aspect ratio."""
    return [_bilinear(f, size=(s, s)) for f, s in zip(feats, num_grids)]


class TwinTransformerHead(nn.Module):
    """The instance head: a twin transformer shared by all levels, then two shared linear layers.

    It also runs the transformer on the full-resolution p5, whose output replaces p5 as the mask
    branch's fourth input.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        num_kernels: int,
        num_grids: Sequence[int],
        prior_prob: float,
        num_layers: int = 12,
        num_heads: int = 8,
        leaky_relu_slope: float = 0.01,
        duplicate_width: bool = True,
        mask_level: int = 3,
    ):
        """
        Args:
            in_channels: width of the instance features, the transformer and the linear heads' input.
            num_classes: K, the class logits per cell (no background logit).
            num_kernels: D, the length of each cell's dynamic 1x1 kernel.
            num_grids: S per level.
            prior_prob: initial foreground probability of every class logit (focal-loss prior).
            num_layers, num_heads, leaky_relu_slope, duplicate_width: see :class:`TwinTransformer`.
            mask_level: the level whose un-resized input also goes through the transformer for the
                mask branch (3: p5, hard-coded in the reference).
        """
        super().__init__()
        self.num_grids = list(num_grids)
        self.mask_level = mask_level
        self.transformer = TwinTransformer(
            dim=in_channels,
            depth=num_layers,
            heads=num_heads,
            leaky_relu_slope=leaky_relu_slope,
            duplicate_width=duplicate_width,
        )
        self.cate_pred = nn.Linear(in_channels, num_classes)
        self.kernel_pred = nn.Linear(in_channels, num_kernels)
        # Every class starts with probability prior_prob, so the focal loss is not swamped by the
        # background cells at the start of training.
        nn.init.constant_(self.cate_pred.bias, -math.log((1 - prior_prob) / prior_prob))

    def forward(
        self, feats: Sequence[torch.Tensor]
    ) -> Tuple[List[torch.Tensor], List[torch.Tensor], torch.Tensor]:
        """
        Args:
            feats: the five instance levels from :func:`split_feats`, (N, C, H_l, W_l).

        Returns:
            cate_preds: per level, (N, K, S_l, S_l) class logits.
            kernel_preds: per level, (N, D, S_l, S_l) dynamic kernels.
            mask_feat: (N, C, H_5, W_5) transformer output on the un-resized ``feats[mask_level]``.
        """
        cate_preds, kernel_preds = [], []
        for feat in resize_to_grids(feats, self.num_grids):
            tokens = self.transformer(feat).permute(0, 2, 3, 1)  # (N, S, S, C)
            cate_preds.append(self.cate_pred(tokens).permute(0, 3, 1, 2))
            kernel_preds.append(self.kernel_pred(tokens).permute(0, 3, 1, 2))
        mask_feat = self.transformer(feats[self.mask_level])
        return cate_preds, kernel_preds, mask_feat


def _conv_unit(in_channels: int, out_channels: int, norm: str) -> nn.Sequential:
    """conv 3x3 (bias only without norm), GroupNorm(32) when ``norm == "GN"``, ReLU."""
    layers: List[nn.Module] = [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=norm != "GN")]
    if norm == "GN":
        layers.append(nn.GroupNorm(32, out_channels))
    layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class MaskHead(nn.Module):
    """Multi-level upsampling mask branch: one tower per input brings it to stride 4, the towers are
    summed, and a 1x1 conv + GN + ReLU gives the (non-negative) mask features.

    Tower i has ``max(i, 1)`` conv units; every unit of towers i >= 1 is followed by a bilinear x2.
    """

    def __init__(self, *, num_levels: int, in_channels: int, channels: int, num_masks: int, norm: str):
        """
        Args:
            num_levels: number of inputs (4: p2, p3, p4 and the transformed p5).
            in_channels: width of the inputs.
            channels: width of the towers.
            num_masks: width of the output mask features (= the dynamic kernel length).
            norm: "GN" or "none" (towers only; ``conv_pred`` always has its GroupNorm).
        """
        super().__init__()
        if norm not in ("GN", "none"):
            raise ValueError(f"MODEL.SOTR.NORM must be 'GN' or 'none', got {norm!r}")
        self.convs_all_levels = nn.ModuleList()
        for i in range(num_levels):
            tower = nn.Sequential()
            for j in range(max(i, 1)):
                tower.add_module(f"conv{j}", _conv_unit(in_channels if j == 0 else channels, channels, norm))
                if i > 0:
                    up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
                    tower.add_module(f"upsample{j}", up)
            self.convs_all_levels.append(tower)
        self.conv_pred = nn.Sequential(
            nn.Conv2d(channels, num_masks, 1, bias=norm != "GN"),
            nn.GroupNorm(32, num_masks),
            nn.ReLU(),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """
        Args:
            feats: ``num_levels`` maps at strides 4, 8, 16, 32 (N, in_channels, ., .).

        Returns:
            (N, num_masks, H_pad/4, W_pad/4) mask features.
        """
        if len(feats) != len(self.convs_all_levels):
            raise ValueError(f"MaskHead expects {len(self.convs_all_levels)} inputs, got {len(feats)}")
        x = self.convs_all_levels[0](feats[0])
        for tower, feat in zip(self.convs_all_levels[1:], feats[1:]):
            x = x + tower(feat)
        return self.conv_pred(x)
