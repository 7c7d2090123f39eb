"""Mask2Former's pixel decoder: a multi-scale deformable-attention transformer encoder over the coarse
backbone levels followed by a light FPN for the finer ones (``shared/specs/mask2former.md`` section 4).

Module and parameter names follow the reference so that official checkpoints load: under the pixel
decoder, ``input_proj.{i}.{0,1}``, ``transformer.level_embed``, ``transformer.encoder.layers.{k}.*``,
``mask_features``, ``adapter_{j}`` and ``layer_{j}``.
"""
import logging
import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import fvcore.nn.weight_init as weight_init
import torch
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from torch import nn
from torch.nn import functional as F

from ..position_encoding import PositionEmbeddingSine
from . import PIXEL_DECODER_REGISTRY
from .ms_deform_attn import MSDeformAttn, level_shapes

__all__ = [
    "MSDeformAttnTransformerEncoderLayer",
    "MSDeformAttnTransformerEncoder",
    "MSDeformAttnTransformerEncoderOnly",
    "MSDeformAttnPixelDecoder",
]

logger = logging.getLogger(__name__)

_ACTIVATIONS: Dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"relu": F.relu, "gelu": F.gelu, "glu": F.glu}


class MSDeformAttnTransformerEncoderLayer(nn.Module):
    """Post-norm encoder layer (spec 4.5)::

        x = norm1(x + dropout1(self_attn(query=x + pos, reference_points, values=x)))
        x = norm2(x + dropout3(linear2(dropout2(act(linear1(x))))))
    """

    def __init__(
        self,
        d_model: int = 256,
        d_ffn: int = 1024,
        dropout: float = 0.1,
        activation: str = "relu",
        n_levels: int = 4,
        n_heads: int = 8,
        n_points: int = 4,
    ):
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)

        self.linear1 = nn.Linear(d_model, d_ffn)
        self.activation = _ACTIVATIONS[activation]
        self.dropout2 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.dropout3 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(
        self,
        src: torch.Tensor,
        pos: Optional[torch.Tensor],
        reference_points: torch.Tensor,
        spatial_shapes: Union[torch.Tensor, Sequence[Tuple[int, int]]],
        level_start_index: Union[torch.Tensor, Sequence[int]],
        padding_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """
        Args:
            src: (B, S, C) tokens of all levels; they are both the queries and the sampled values.
            pos: (B, S, C) positional term added to the queries only, or None.
            reference_points: (B, S, L, 2) normalised (x, y) reference of every token on every level.
            spatial_shapes: (L, 2) long (H_l, W_l) or a sequence of such pairs; level_start_index:
                (L,) long or a sequence.
            padding_mask: optional (B, S) bool, True at padded tokens.

        Returns:
            (B, S, C).
        """
        query = src if pos is None else src + pos
        src2 = self.self_attn(query, reference_points, src, spatial_shapes, level_start_index, padding_mask)
        src = self.norm1(src + self.dropout1(src2))
        src2 = self.linear2(self.dropout2(self.activation(self.linear1(src))))
        return self.norm2(src + self.dropout3(src2))


class MSDeformAttnTransformerEncoder(nn.Module):
    """A stack of :class:`MSDeformAttnTransformerEncoderLayer` (``layers.{k}``, weights not shared)."""

    def __init__(self, layers: List[MSDeformAttnTransformerEncoderLayer]):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.num_layers = len(layers)

    @staticmethod
    def get_reference_points(
        spatial_shapes: List[Tuple[int, int]], batch_size: int, device: torch.device
    ) -> torch.Tensor:
        """Reference point of every token: the centre of its own pixel, in normalised (x, y).

        Token (i, j) of an H x W level gets ((j + 0.5) / W, (i + 0.5) / H). Since nothing is padded
        (all valid ratios are 1) the same normalised point is used on every level.

        Returns:
            (batch_size, S, L, 2) float32.
        """
        refs = []
        for h, w in spatial_shapes:
            # arange + 0.5 equals linspace(0.5, h - 0.5, h) exactly (a step of 1) and, unlike
            # linspace, keeps symbolic sizes symbolic under torch.export.
            ref_y, ref_x = torch.meshgrid(
                (torch.arange(h, dtype=torch.float32, device=device) + 0.5) / h,
                (torch.arange(w, dtype=torch.float32, device=device) + 0.5) / w,
                indexing="ij",
            )
            refs.append(torch.stack((ref_x.reshape(-1), ref_y.reshape(-1)), -1))  # (h*w, 2), row-major
        ref = torch.cat(refs, 0)  # (S, 2)
        return ref[None, :, None, :].expand(batch_size, -1, len(spatial_shapes), -1)

    def forward(
        self,
        src: torch.Tensor,
        spatial_shapes: Union[torch.Tensor, Sequence[Tuple[int, int]]],
        level_start_index: Union[torch.Tensor, Sequence[int]],
        pos: Optional[torch.Tensor] = None,
        padding_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """
        Args:
            src: (B, S, C); spatial_shapes: (L, 2) long or (H_l, W_l) pairs; level_start_index: (L,)
                long or a sequence;
            pos: (B, S, C) or None; padding_mask: (B, S) bool or None.

        Returns:
            (B, S, C).
        """
        shapes = level_shapes(spatial_shapes)
        reference_points = self.get_reference_points(shapes, src.shape[0], src.device)
        out = src
        for layer in self.layers:
            out = layer(out, pos, reference_points, spatial_shapes, level_start_index, padding_mask)
        return out


class MSDeformAttnTransformerEncoderOnly(nn.Module):
    """Deformable-DETR encoder (no decoder) over a list of same-width feature maps.

    Holds ``level_embed`` (n_levels, d_model), added to each level's positional encoding, and
    ``encoder`` (:class:`MSDeformAttnTransformerEncoder`).
    """

    def __init__(
        self,
        d_model: int = 256,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        dim_feedforward: int = 1024,
        dropout: float = 0.1,
        activation: str = "relu",
        num_feature_levels: int = 4,
        enc_n_points: int = 4,
    ):
        super().__init__()
        self.d_model = d_model
        self.nhead = nhead
        self.num_feature_levels = num_feature_levels
        self.encoder = MSDeformAttnTransformerEncoder(
            [
                MSDeformAttnTransformerEncoderLayer(
                    d_model, dim_feedforward, dropout, activation, num_feature_levels, nhead, enc_n_points
                )
                for _ in range(num_encoder_layers)
            ]
        )
        self.level_embed = nn.Parameter(torch.empty(num_feature_levels, d_model))
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        # Reference order: Xavier on every matrix, then the deformable modules restore their own
        # (zero-weight offsets, direction-grid bias) init, then the level embeddings ~ N(0, 1).
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for m in self.modules():
            if isinstance(m, MSDeformAttn):
                m._reset_parameters()
        nn.init.normal_(self.level_embed)

    def forward(
        self, srcs: List[torch.Tensor], pos_embeds: List[torch.Tensor]
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """
        Args:
            srcs: L maps (B, C, H_l, W_l), in the order of ``level_embed`` (coarse to fine in
                Mask2Former).
            pos_embeds: L positional encodings of the same shapes.

        Returns:
            memory: (B, S, C), S = sum_l H_l * W_l, levels concatenated in input order, row-major.
            spatial_shapes: (L, 2) long (H_l, W_l).
            level_start_index: (L,) long.
        """
        if len(srcs) != self.num_feature_levels or len(pos_embeds) != self.num_feature_levels:
            raise ValueError(
                f"expected {self.num_feature_levels} levels, got {len(srcs)} maps and {len(pos_embeds)} encodings"
            )
        src_flatten, pos_flatten, shapes = [], [], []
        for lvl, (src, pos) in enumerate(zip(srcs, pos_embeds)):
            shapes.append(src.shape[-2:])
            src_flatten.append(src.flatten(2).transpose(1, 2))  # (B, H*W, C)
            pos_flatten.append(pos.flatten(2).transpose(1, 2) + self.level_embed[lvl].view(1, 1, -1))
        src_flatten = torch.cat(src_flatten, 1)
        pos_flatten = torch.cat(pos_flatten, 1)
        # The encoder gets the sizes as Python pairs (symbolic under export, see level_shapes); the
        # tensors are returned for callers of the reference interface.
        shapes = [(h, w) for h, w in shapes]
        starts = [sum(h * w for h, w in shapes[:lvl]) for lvl in range(len(shapes))]
        memory = self.encoder(src_flatten, shapes, starts, pos_flatten)
        spatial_shapes = torch.tensor(shapes, dtype=torch.long, device=src_flatten.device)
        level_start_index = torch.tensor(starts, dtype=torch.long, device=src_flatten.device)
        return memory, spatial_shapes, level_start_index


@PIXEL_DECODER_REGISTRY.register()
class MSDeformAttnPixelDecoder(nn.Module):
    """Mask2Former's pixel decoder (spec 4.1, 4.2, 4.6).

    The encoder levels (``DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES``; res3..res5) are projected to
    ``conv_dim`` (``input_proj``, coarse to fine), run jointly through the deformable encoder with sine
    + level positional terms, and split back into maps. Each finer input level down to
    ``common_stride`` (res2) is then added as an FPN level: lateral 1x1 conv (``adapter_j``) + bilinear
    upsampling of the previous output, then a 3x3 conv (``layer_j``). A 1x1 conv (``mask_features``)
    on the finest map gives the per-pixel embeddings.
    """

    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        transformer_dropout: float,
        transformer_nheads: int,
        transformer_dim_feedforward: int = 1024,
        transformer_enc_layers: int,
        transformer_enc_n_points: int = 4,
        conv_dim: int,
        mask_dim: int,
        norm: Optional[Union[str, Callable]] = None,
        transformer_in_features: List[str],
        common_stride: int,
        num_multi_scale_features: int = 3,
    ):
        """
        Args:
            input_shape: channels and stride of every input feature (res2..res5).
            transformer_dropout: dropout of the encoder layers.
            transformer_nheads: heads of the deformable attention.
            transformer_dim_feedforward: FFN width of the encoder layers (the reference hard-codes
                1024; it does not use MASK_FORMER.DIM_FEEDFORWARD).
            transformer_enc_layers: number of encoder layers.
            transformer_enc_n_points: sampling points per head and level (the reference hard-codes 4).
            conv_dim: width of the encoder and of the FPN convs.
            mask_dim: channels of the mask features.
            norm: norm of the FPN convs (``adapter_j``/``layer_j``); the encoder input projections
                always use GroupNorm(32, conv_dim), as in the reference.
            transformer_in_features: names of the features fed to the encoder; their number is the
                number of encoder levels.
            common_stride: stride of the mask features; FPN levels are added for the input features
                from the finest encoder stride down to this one.
            num_multi_scale_features: how many maps (coarsest first) are returned for the
                transformer decoder.
        """
        super().__init__()
        missing = [f for f in transformer_in_features if f not in input_shape]
        if missing:
            raise ValueError(f"encoder features {missing} are not among the input features {sorted(input_shape)}")
        # All inputs, fine to coarse (res2 .. res5).
        shapes = sorted(input_shape.items(), key=lambda kv: kv[1].stride)
        self.in_features = [k for k, _ in shapes]
        self.feature_strides = [v.stride for _, v in shapes]
        self.feature_channels = [v.channels for _, v in shapes]

        # Encoder inputs, fine to coarse as well.
        enc_shapes = [(k, v) for k, v in shapes if k in transformer_in_features]
        self.transformer_in_features = [k for k, _ in enc_shapes]
        self.transformer_feature_strides = [v.stride for _, v in enc_shapes]
        enc_channels = [v.channels for _, v in enc_shapes]
        self.transformer_num_feature_levels = len(self.transformer_in_features)

        # input_proj[i] serves encoder level i, coarse to fine (0 <- res5).
        self.input_proj = nn.ModuleList(
            [
                nn.Sequential(nn.Conv2d(c, conv_dim, kernel_size=1), nn.GroupNorm(32, conv_dim))
                for c in enc_channels[::-1]
            ]
        )
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.constant_(proj[0].bias, 0)

        self.transformer = MSDeformAttnTransformerEncoderOnly(
            d_model=conv_dim,
            nhead=transformer_nheads,
            num_encoder_layers=transformer_enc_layers,
            dim_feedforward=transformer_dim_feedforward,
            dropout=transformer_dropout,
            num_feature_levels=self.transformer_num_feature_levels,
            enc_n_points=transformer_enc_n_points,
        )
        self.pe_layer = PositionEmbeddingSine(conv_dim // 2, normalize=True)

        self.mask_dim = mask_dim
        self.mask_features = Conv2d(conv_dim, mask_dim, kernel_size=1, stride=1, padding=0)
        weight_init.c2_xavier_fill(self.mask_features)

        self.maskformer_num_feature_levels = num_multi_scale_features
        self.common_stride = common_stride
        # One FPN level per factor of 2 between the finest encoder stride and common_stride.
        self.num_fpn_levels = int(
            round(math.log2(min(self.transformer_feature_strides)) - math.log2(common_stride))
        )

        # A bias only when there is no norm (the reference tests for the empty string).
        use_bias = norm == ""
        lateral_convs, output_convs = [], []
        for idx, in_channels in enumerate(self.feature_channels[: self.num_fpn_levels]):
            lateral_conv = Conv2d(
                in_channels, conv_dim, kernel_size=1, bias=use_bias, norm=get_norm(norm, conv_dim)
            )
            output_conv = Conv2d(
                conv_dim,
                conv_dim,
                kernel_size=3,
                stride=1,
                padding=1,
                bias=use_bias,
                norm=get_norm(norm, conv_dim),
                activation=F.relu,
            )
            weight_init.c2_xavier_fill(lateral_conv)
            weight_init.c2_xavier_fill(output_conv)
            # Registered under the reference names; the lists below only fix the iteration order.
            self.add_module(f"adapter_{idx + 1}", lateral_conv)
            self.add_module(f"layer_{idx + 1}", output_conv)
            lateral_convs.append(lateral_conv)
            output_convs.append(output_conv)
        # Top-down order (coarse to fine) for forward_features. Plain lists, so not registered twice.
        self.lateral_convs = lateral_convs[::-1]
        self.output_convs = output_convs[::-1]

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]) -> dict:
        head = cfg.MODEL.SEM_SEG_HEAD
        ret = {
            "input_shape": {k: v for k, v in input_shape.items() if k in head.IN_FEATURES},
            "conv_dim": head.CONVS_DIM,
            "mask_dim": head.MASK_DIM,
            "norm": head.NORM,
            "transformer_dropout": cfg.MODEL.MASK_FORMER.DROPOUT,
            "transformer_nheads": cfg.MODEL.MASK_FORMER.NHEADS,
            "transformer_enc_layers": head.TRANSFORMER_ENC_LAYERS,
            "transformer_in_features": head.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES,
            "common_stride": head.COMMON_STRIDE,
            # The reference hard-codes 1024; the key's default is that value.
            "transformer_dim_feedforward": head.DEFORMABLE_TRANSFORMER_ENCODER_DIM_FEEDFORWARD,
        }
        # DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS / _N_HEADS are deliberately not read: the reference
        # ignores them (4 points, MASK_FORMER.NHEADS heads), and reading them would let a config
        # change parameter shapes away from the official checkpoints.
        return ret

    def forward_features(
        self, features: Dict[str, torch.Tensor]
    ) -> Tuple[torch.Tensor, None, List[torch.Tensor]]:
        """
        Args:
            features: backbone maps by name, ``features[f]`` of shape (B, C_f, H/s_f, W/s_f); must
                contain every input feature.

        Returns:
            mask_features: (B, mask_dim, H/common_stride, W/common_stride) float32.
            None (the slot the MaskFormer-v1 decoders use for their transformer-encoder output).
            multi_scale_features: ``num_multi_scale_features`` maps (B, conv_dim, h, w), lowest
                resolution first (for res3..res5 encoder inputs: strides 32, 16, 8).
        """
        device_type = next(iter(features.values())).device.type
        # Deformable sampling is kept in float32 even under AMP, as in the reference.
        with torch.autocast(device_type=device_type, enabled=False):
            srcs, pos = [], []
            for idx, f in enumerate(self.transformer_in_features[::-1]):  # coarse to fine
                x = features[f].float()
                srcs.append(self.input_proj[idx](x))
                pos.append(self.pe_layer(x))

            y, _, _ = self.transformer(srcs, pos)
            bs = y.shape[0]
            shapes = [tuple(s.shape[-2:]) for s in srcs]
            # Contiguous maps: a transposed view is channels-last in memory, on which bilinear
            # resizing below runs about 6x slower on CPU.
            out = [
                z.transpose(1, 2).reshape(bs, -1, h, w).contiguous()
                for z, (h, w) in zip(torch.split(y, [h * w for h, w in shapes], dim=1), shapes)
            ]

            # Extra FPN levels, coarse to fine (only res2 for Mask2Former).
            for idx, f in enumerate(self.in_features[: self.num_fpn_levels][::-1]):
                cur_fpn = self.lateral_convs[idx](features[f].float())
                # Bilinear (not nearest, unlike BasePixelDecoder), as in the reference.
                y = cur_fpn + F.interpolate(out[-1], size=cur_fpn.shape[-2:], mode="bilinear", align_corners=False)
                out.append(self.output_convs[idx](y))

            multi_scale_features = out[: self.maskformer_num_feature_levels]
            return self.mask_features(out[-1]), None, multi_scale_features

    def forward(self, features: Dict[str, torch.Tensor], targets=None):
        logger.warning("Calling forward() of a pixel decoder is not its interface; use forward_features().")
        return self.forward_features(features)
