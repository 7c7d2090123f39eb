"""CFT's config keys.

The reference (BebDong/EMOSeg) is MMSegmentation code with Python configs, so these keys are this
project's (``shared/specs/cft.md`` §7.2, defaults = the R50 / ADE20K reference config). The values
of the other reference configs are in ``configs/cft/``.

Keys used by more than one model are not defined here: ``SOLVER.OPTIMIZER``, ``INPUT.COLOR_AUG_SSD``,
``INPUT.CROP.SINGLE_CATEGORY_MAX_AREA`` and ``SOLVER.POLY_LR_*`` come from
``segcommon.config.add_common_config``, the Swin-L backbone keys ``MODEL.SWIN.*`` from
``segcommon.backbone.add_swin_config``. The head reuses Detectron2's ``MODEL.SEM_SEG_HEAD`` keys
(``NAME``, ``IN_FEATURES``, ``NUM_CLASSES``, ``IGNORE_VALUE``, ``CONVS_DIM`` = head width,
``COMMON_STRIDE``, ``NORM`` = fusion-conv norm, ``LOSS_WEIGHT`` = cross-entropy weight).

Optimiser and schedule use the shared builders (``segcommon/solver.py``), so the reference's
parameter groups are approximated there (see ``configs/cft/Base-CFT.yaml``): the head's x10
learning rate is ``BASE_LR`` = 10 x the reference lr with ``BACKBONE_MULTIPLIER`` 0.1, one weight
decay serves both groups, and the schedule is DeepLab's ``WarmupPolyLR``. ``MODEL.MIT.*`` configures
the shared MiT backbone (``segcommon/backbone/mit.py``); only CFT uses it, so its keys live here.
"""
from detectron2.config import CfgNode as CN

from segcommon.backbone.config import add_swin_config
from segcommon.config import add_common_config

__all__ = ["add_cft_config"]


def add_cft_config(cfg: CN) -> None:
    """Adds CFT's keys (``MODEL.CFT.*``, ``MODEL.MIT.*``, ``INPUT.CFT_RESIZE.*``) to ``cfg`` in place, after the shared keys and the Swin keys. Safe to call more than once."""
    add_common_config(cfg)
    add_swin_config(cfg)
    if "CFT" in cfg.MODEL:
        return

    cfg.MODEL.CFT = CN()
    # CFT blocks (category-feature cross-attention).
    # Attention heads of each block's cross-attention (head width = CONVS_DIM / NUM_HEADS).
    cfg.MODEL.CFT.NUM_HEADS = 4
    # Groups of the two grouped 1x1 convs of the class-embedding module (the reference ties this to
    # the number of heads).
    cfg.MODEL.CFT.EMBED_GROUPS = 4
    # Hidden width of the depth-wise-conv FFN as a multiple of CONVS_DIM.
    cfg.MODEL.CFT.MLP_RATIO = 4
    # Whether the key/value projection of the class tokens has a bias.
    cfg.MODEL.CFT.QKV_BIAS = True
    # Dropout on the attention weights.
    cfg.MODEL.CFT.ATTN_DROP = 0.0
    # Dropout after the output projection and in the FFN.
    cfg.MODEL.CFT.DROP = 0.0
    # Epsilon of the blocks' LayerNorms.
    cfg.MODEL.CFT.LN_EPS = 1e-6
    # Reference quirk: attention weights are softmax(-q.k / sqrt(d)) (the scaled similarities are
    # subtracted from their row maximum). False uses the standard sign (convert weights accordingly).
    cfg.MODEL.CFT.NEGATE_ATTN_LOGITS = True
    # Dropout2d before the 1x1 classifier.
    cfg.MODEL.CFT.CLS_DROPOUT = 0.1
    # align_corners of every bilinear resize in the head, the losses and inference.
    cfg.MODEL.CFT.ALIGN_CORNERS = False

    # Losses.
    # Pixel cross-entropy averaged over non-ignored pixels (True) or over all pixels (False, reference).
    cfg.MODEL.CFT.CE_AVG_NON_IGNORE = False
    # Category-mask loss on the sum of the stage mask logits: MASK_LOSS_WEIGHT x
    # (MASK_FOCAL_WEIGHT x sigmoid focal + MASK_DICE_WEIGHT x dice), over the classes present.
    cfg.MODEL.CFT.MASK_FOCAL_WEIGHT = 5.0
    cfg.MODEL.CFT.MASK_DICE_WEIGHT = 2.0
    cfg.MODEL.CFT.MASK_LOSS_WEIGHT = 1.0
    # Alpha and gamma of that sigmoid focal loss.
    cfg.MODEL.CFT.FOCAL_ALPHA = 0.25
    cfg.MODEL.CFT.FOCAL_GAMMA = 2.0

    # Inference.
    cfg.MODEL.CFT.TEST = CN()
    # "whole": one pass on the resized image; "slide": overlapping CROP_SIZE windows at STRIDE whose
    # logits are averaged.
    cfg.MODEL.CFT.TEST.MODE = "whole"
    # Slide window (height, width) and stride (height, width); unused in whole mode. The reference
    # strides are 512 (Cityscapes 768 crop), 768 (Cityscapes 1024 crop) and 320 (Pascal Context).
    cfg.MODEL.CFT.TEST.CROP_SIZE = (512, 512)
    cfg.MODEL.CFT.TEST.STRIDE = (341, 341)
    # Stretch the resized test image so both sides are multiples of this (MiT-B5: 32); 0: off.
    cfg.MODEL.CFT.TEST.RESIZE_TO_MULTIPLE = 0

    # Mix Transformer (SegFormer encoder) backbone, "D2MixVisionTransformer"; defaults are MiT-B2.
    cfg.MODEL.MIT = CN()
    # Channels of the first stage's embedding; stage widths are EMBED_DIMS * NUM_HEADS[i].
    cfg.MODEL.MIT.EMBED_DIMS = 64
    # Transformer blocks per stage (B2: [3, 4, 6, 3]; B5: [3, 6, 40, 3]).
    cfg.MODEL.MIT.NUM_LAYERS = [3, 4, 6, 3]
    # Attention heads per stage.
    cfg.MODEL.MIT.NUM_HEADS = [1, 2, 5, 8]
    # Kernel sizes and strides of the overlapping patch embeddings (padding = kernel // 2).
    cfg.MODEL.MIT.PATCH_SIZES = [7, 3, 3, 3]
    cfg.MODEL.MIT.STRIDES = [4, 2, 2, 2]
    # Spatial-reduction ratio of the keys/values per stage (a conv with kernel = stride = ratio, then
    # LayerNorm, when > 1).
    cfg.MODEL.MIT.SR_RATIOS = [8, 4, 2, 1]
    # Hidden width of the Mix-FFN as a multiple of the stage width.
    cfg.MODEL.MIT.MLP_RATIO = 4
    # Whether the q and kv projections have biases.
    cfg.MODEL.MIT.QKV_BIAS = True
    # Dropout after projections / on attention weights.
    cfg.MODEL.MIT.DROP_RATE = 0.0
    cfg.MODEL.MIT.ATTN_DROP_RATE = 0.0
    # Stochastic depth, spread linearly over all blocks.
    cfg.MODEL.MIT.DROP_PATH_RATE = 0.1
    # Epsilon of the LayerNorms.
    cfg.MODEL.MIT.LN_EPS = 1e-6
    # Stages to output, named res2..res5 (strides 4, 8, 16, 32).
    cfg.MODEL.MIT.OUT_FEATURES = ["res2", "res3", "res4", "res5"]

    # Training resize (MMSeg RandomResize with keep_ratio): draw r ~ U(RATIO_RANGE), rescale the image
    # to fit in the orientation-free box (int(SCALE[0] * r), int(SCALE[1] * r)) keeping its aspect.
    cfg.INPUT.CFT_RESIZE = CN()
    cfg.INPUT.CFT_RESIZE.SCALE = (2048, 512)
    cfg.INPUT.CFT_RESIZE.RATIO_RANGE = (0.5, 2.0)

