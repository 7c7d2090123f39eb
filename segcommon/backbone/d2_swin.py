"""Detectron2 adapters of the Swin Transformer of ``segcommon/backbone/swin.py``.

Two configurations of one implementation, each reproducing the official wrapper's state dict:

* ``D2SwinTransformer`` (Mask2Former, CFT): the class of facebookresearch/Mask2Former
  ``mask2former/modeling/backbone/swin.py``, built from ``MODEL.SWIN.*``
  (``segcommon/backbone/config.py``). Outputs ``res2..res5`` (strides 4, 8, 16, 32, channels
  ``EMBED_DIM * 2**i``); all four output norms ``norm0..norm3`` always exist, whatever
  ``OUT_FEATURES`` selects; nothing is frozen (the official class ignores ``MODEL.BACKBONE.FREEZE_AT``,
  which the Mask2Former configs set to 0, a value that would freeze the patch embedding here).
  Its state-dict keys are ``backbone.patch_embed.*``, ``backbone.layers.*``, ``backbone.norm{i}.*``.
* ``build_swint_backbone`` / ``build_swinb_backbone`` and the FPN versions ``build_swint_fpn_backbone`` /
  ``build_swinb_fpn_backbone`` (Mask Transfiner): the builders of SysCV/transfiner ``swint/`` and
  ``swinb/swin_transformer.py``, built from ``MODEL.SWINT.*`` (``transfiner/config.py``). Outputs
  ``stage2..stage5``; only the selected stages get an output norm; ``MODEL.BACKBONE.FREEZE_AT`` is the
  number of frozen stages in Swin's sense (see ``SwinTransformer``). The FPN versions wrap the Swin in
  Detectron2's ``FPN`` with one max-pooled ``p6`` (``LastLevelMaxPool``), so the Swin keys sit under
  ``backbone.bottom_up.`` after the FPN's ``backbone.fpn_lateral{2..5}`` / ``fpn_output{2..5}``.

Official defaults the Transfiner YAMLs rely on. The reference trains its Swin-T model with
``tools/train_net_swint.py`` (which calls ``swint.add_swint_config``) and its Swin-B model with
``tools/train_net_swinb.py`` (``swinb.add_swinb_config``): the two helpers register ``MODEL.SWINT`` with
different defaults (Swin-T: 96 / [2,2,6,2] / [3,6,12,24]; Swin-B: 128 / [2,2,18,2] / [4,8,16,32]), both
set ``MODEL.BACKBONE.FREEZE_AT = -1``, and ``mask_rcnn_swinb_FPN_3x.yaml`` sets none of these keys. This
project has one config for all models, whose ``MODEL.SWINT`` defaults are Swin-T and whose ``FREEZE_AT``
default is Detectron2's 2. The builders therefore apply their helper's defaults to every such key that
still holds the project's default: ``build_swinb_*`` takes Swin-B sizes for ``EMBED_DIM``, ``DEPTHS``,
``NUM_HEADS`` left at their Swin-T defaults, and both builders use ``FREEZE_AT = -1`` when it is left
at 2. Limitation: a value set explicitly but equal to the project default is indistinguishable from an
unset one (e.g. ``FREEZE_AT: 2`` with a Transfiner Swin builder means "nothing frozen"); set the Swin-B
keys to other values, or use ``build_swint_*`` with explicit sizes, to get something else.

Input normalisation: the backbones do not normalise; the meta-architecture does, with
``MODEL.PIXEL_MEAN`` / ``PIXEL_STD``. The ImageNet Swin weights expect RGB images normalised with
mean (123.675, 116.28, 103.53) and std (58.395, 57.12, 57.375) on a 0-255 scale, which the Mask2Former
Swin configs set together with ``INPUT.FORMAT: "RGB"``. The official Transfiner Swin YAMLs end up with
BGR input and these RGB-ordered statistics (a duplicated ``INPUT`` key drops their ``FORMAT: RGB``); their
released models were trained that way (``shared/specs/transfiner.md`` §14.3).
"""
import logging
from typing import Any, Dict, Sequence

from detectron2.config import CfgNode
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import BACKBONE_REGISTRY, FPN, Backbone
from detectron2.modeling.backbone.fpn import LastLevelMaxPool
from torch import Tensor, nn

from .stage_outputs import NamedStageOutputs
from .swin import SwinTransformer

__all__ = [
    "D2SwinTransformer",
    "TransfinerSwinTransformer",
    "build_swinb_backbone",
    "build_swinb_fpn_backbone",
    "build_swint_backbone",
    "build_swint_fpn_backbone",
]

logger = logging.getLogger(__name__)


@BACKBONE_REGISTRY.register()
class D2SwinTransformer(NamedStageOutputs, SwinTransformer, Backbone):
    """Swin Transformer as a Detectron2 backbone configured by ``MODEL.SWIN.*`` (Mask2Former, CFT).

    ``forward`` takes a normalised (N, 3, H, W) batch (any H, W; Detectron2 pads to
    ``size_divisibility`` = 32 anyway) and returns ``{name: (N, EMBED_DIM * 2**i, H / 2**(i+2),
    W / 2**(i+2))}`` for the names ``res{i+2}`` in ``MODEL.SWIN.OUT_FEATURES`` (sizes rounded up).
    """

    def __init__(self, cfg: CfgNode, input_shape: ShapeSpec):
        c = cfg.MODEL.SWIN
        depths = list(c.DEPTHS)
        super().__init__(
            pretrain_img_size=c.PRETRAIN_IMG_SIZE,
            patch_size=c.PATCH_SIZE,
            in_chans=input_shape.channels or 3,
            embed_dim=c.EMBED_DIM,
            depths=depths,
            num_heads=list(c.NUM_HEADS),
            window_size=c.WINDOW_SIZE,
            mlp_ratio=c.MLP_RATIO,
            qkv_bias=c.QKV_BIAS,
            qk_scale=c.QK_SCALE,
            drop_rate=c.DROP_RATE,
            attn_drop_rate=c.ATTN_DROP_RATE,
            drop_path_rate=c.DROP_PATH_RATE,
            norm_layer=nn.LayerNorm,
            ape=c.APE,
            patch_norm=c.PATCH_NORM,
            # All stages are computed and normalised (norm0..norm3 are in the official state dict);
            # OUT_FEATURES only filters what forward returns.
            out_indices=tuple(range(len(depths))),
            frozen_stages=-1,
            use_checkpoint=c.USE_CHECKPOINT,
        )
        self._set_stage_outputs("MODEL.SWIN.OUT_FEATURES", c.OUT_FEATURES, self.strides, self.num_features)

    @property
    def size_divisibility(self) -> int:
        # The deepest stride. The backbone itself pads to any size, but the pixel decoders combine
        # maps of neighbouring strides and expect exact factor-2 sizes.
        return 32


class TransfinerSwinTransformer(SwinTransformer, Backbone):
    """Swin Transformer as Mask Transfiner's Detectron2 backbone: outputs ``stage2..stage5``.

    Only the stages named in ``out_features`` are computed into outputs and get an output norm
    ``norm{i}`` (as in the official ``swint``/``swinb`` code). ``size_divisibility`` stays Detectron2's
    default 0, like the official class: the FPN around it reports 32.
    """

    def __init__(self, *, out_features: Sequence[str], depths: Sequence[int], **swin_kwargs: Any):
        names = [f"stage{i + 2}" for i in range(len(depths))]
        unknown = [n for n in out_features if n not in names]
        if unknown:
            raise ValueError(f"MODEL.SWINT.OUT_FEATURES: unknown {unknown}; expected a subset of {names}")
        out_indices = tuple(i for i, n in enumerate(names) if n in out_features)
        super().__init__(depths=depths, out_indices=out_indices, **swin_kwargs)
        self._out_features = [names[i] for i in out_indices]
        self._out_feature_strides = {names[i]: self.strides[i] for i in out_indices}
        self._out_feature_channels = {names[i]: self.num_features[i] for i in out_indices}

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        """x: (N, C, H, W) -> {"stage{i+2}": (N, C_i, ceil(H/s_i), ceil(W/s_i))} for the selected stages."""
        if x.dim() != 4:
            raise ValueError(f"SwinTransformer takes an input of shape (N, C, H, W), got {tuple(x.shape)}")
        return dict(zip(self._out_features, super().forward(x)))

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {
            n: ShapeSpec(channels=self._out_feature_channels[n], stride=self._out_feature_strides[n])
            for n in self._out_features
        }


# The project's registered defaults (transfiner/config.py's MODEL.SWINT sizes, i.e. the official
# swint/config.py values, and Detectron2's MODEL.BACKBONE.FREEZE_AT), and the official helpers' values
# the Transfiner Swin YAMLs rely on instead. tests/segcommon/backbone/test_swin.py checks the former
# against the registered config.
PROJECT_SWINT_SIZES: Dict[str, Any] = {"EMBED_DIM": 96, "DEPTHS": [2, 2, 6, 2], "NUM_HEADS": [3, 6, 12, 24]}
OFFICIAL_SWINB_SIZES: Dict[str, Any] = {"EMBED_DIM": 128, "DEPTHS": [2, 2, 18, 2], "NUM_HEADS": [4, 8, 16, 32]}
PROJECT_FREEZE_AT = 2
OFFICIAL_TRANSFINER_FREEZE_AT = -1


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    return a == b


def _transfiner_swin(
    cfg: CfgNode, input_shape: ShapeSpec, official_sizes: Dict[str, Any], name: str
) -> TransfinerSwinTransformer:
    """Builds the Swin of Transfiner's builder ``name`` from ``MODEL.SWINT.*``, taking the official
    helper's value (``official_sizes``, ``FREEZE_AT -1``) for keys left at the project's default."""
    c = cfg.MODEL.SWINT
    sizes = {}
    for key, project_default in PROJECT_SWINT_SIZES.items():
        value = c[key]
        if _same(value, project_default) and not _same(value, official_sizes[key]):
            logger.info(f"{name}: MODEL.SWINT.{key} left at {value}; using the official {official_sizes[key]}")
            value = official_sizes[key]
        sizes[key] = list(value) if isinstance(value, (list, tuple)) else value
    freeze_at = cfg.MODEL.BACKBONE.FREEZE_AT
    if freeze_at == PROJECT_FREEZE_AT:
        logger.info(f"{name}: MODEL.BACKBONE.FREEZE_AT left at {freeze_at}; using the official -1")
        freeze_at = OFFICIAL_TRANSFINER_FREEZE_AT
    return TransfinerSwinTransformer(
        out_features=list(c.OUT_FEATURES),
        depths=sizes["DEPTHS"],
        pretrain_img_size=224,
        patch_size=4,
        in_chans=input_shape.channels or 3,
        embed_dim=sizes["EMBED_DIM"],
        num_heads=sizes["NUM_HEADS"],
        window_size=c.WINDOW_SIZE,
        mlp_ratio=c.MLP_RATIO,
        qkv_bias=True,
        qk_scale=None,
        drop_rate=0.0,
        attn_drop_rate=0.0,
        drop_path_rate=c.DROP_PATH_RATE,
        norm_layer=nn.LayerNorm,
        ape=c.APE,
        patch_norm=True,
        frozen_stages=freeze_at,
    )


def _transfiner_fpn(cfg: CfgNode, bottom_up: Backbone) -> FPN:
    # Detectron2's FPN with a max-pooled p6, as Mask R-CNN's build_resnet_fpn_backbone
    # (MODEL.FPN.TOP_LEVELS is only read by the official RetinaNet builders).
    return FPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelMaxPool(),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )


@BACKBONE_REGISTRY.register()
def build_swint_backbone(cfg: CfgNode, input_shape: ShapeSpec) -> Backbone:
    """Transfiner's Swin from ``MODEL.SWINT.*`` (official ``swint`` defaults for unset keys)."""
    return _transfiner_swin(cfg, input_shape, PROJECT_SWINT_SIZES, "build_swint_backbone")


@BACKBONE_REGISTRY.register()
def build_swinb_backbone(cfg: CfgNode, input_shape: ShapeSpec) -> Backbone:
    """Transfiner's Swin from ``MODEL.SWINT.*`` with the official ``swinb`` defaults (Swin-B: 128,
    [2,2,18,2], [4,8,16,32]) for size keys left at the project's Swin-T defaults."""
    return _transfiner_swin(cfg, input_shape, OFFICIAL_SWINB_SIZES, "build_swinb_backbone")


@BACKBONE_REGISTRY.register()
def build_swint_fpn_backbone(cfg: CfgNode, input_shape: ShapeSpec) -> Backbone:
    """``build_swint_backbone`` + FPN (``MODEL.FPN.*``, max-pooled p6): p2..p6, strides 4..64."""
    return _transfiner_fpn(cfg, build_swint_backbone(cfg, input_shape))


@BACKBONE_REGISTRY.register()
def build_swinb_fpn_backbone(cfg: CfgNode, input_shape: ShapeSpec) -> Backbone:
    """``build_swinb_backbone`` + FPN (``MODEL.FPN.*``, max-pooled p6): p2..p6, strides 4..64."""
    return _transfiner_fpn(cfg, build_swinb_backbone(cfg, input_shape))
