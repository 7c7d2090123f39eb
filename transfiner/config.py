"""Mask Transfiner's config keys.

The official code (SysCV/transfiner) adds no Transfiner key: every hyper-parameter is hard-coded in
its vendored Detectron2 (``poolers.py``, ``roi_heads/mask_head.py``). Here each of those constants is
a key under ``MODEL.TRANSFINER`` whose default is the reference value at commit 5b61fb5 (see
``shared/specs/transfiner.md`` §14.2 for the table and §4-§12, §16 for where each one acts).

The Swin-T / Swin-B configs of the reference register their backbone keys with
``swint/config.py`` / ``swinb/config.py``: ``MODEL.SWINT.*`` (defaults here: Swin-T) and
``MODEL.FPN.TOP_LEVELS``. Those helpers also set ``SOLVER.OPTIMIZER = "AdamW"`` and
``MODEL.BACKBONE.FREEZE_AT = -1``; both keys belong to the shared / Detectron2 defaults and are not
changed here (the official Swin YAMLs do not set them; see ``tests/test_configs.py``).
"""
import math

from detectron2.config import CfgNode as CN

from segcommon.config import add_common_config

__all__ = ["add_transfiner_config"]


def add_transfiner_config(cfg: CN) -> None:
    """Adds Mask Transfiner's keys (``MODEL.TRANSFINER.*``, ``MODEL.SWINT.*``,
    ``MODEL.FPN.TOP_LEVELS``) to ``cfg`` in place, after the shared keys. Safe to call more than once."""
    add_common_config(cfg)
    if "TRANSFINER" in cfg.MODEL:
        return

    # Swin backbone of the official Swin configs (build_swint_fpn_backbone / build_swinb_fpn_backbone).
    # Defaults are the reference's add_swint_config (Swin-T); its add_swinb_config sets
    # EMBED_DIM 128, DEPTHS [2, 2, 18, 2], NUM_HEADS [4, 8, 16, 32] instead.
    cfg.MODEL.SWINT = CN()
    # Channels of the first stage; stage i has EMBED_DIM * 2**i.
    cfg.MODEL.SWINT.EMBED_DIM = 96
    # Stages to output, named stage2..stage5 (strides 4, 8, 16, 32), each with an output LayerNorm.
    cfg.MODEL.SWINT.OUT_FEATURES = ["stage2", "stage3", "stage4", "stage5"]
    # Swin blocks per stage.
    cfg.MODEL.SWINT.DEPTHS = [2, 2, 6, 2]
    # Attention heads per stage.
    cfg.MODEL.SWINT.NUM_HEADS = [3, 6, 12, 24]
    # Side of the attention windows, in tokens.
    cfg.MODEL.SWINT.WINDOW_SIZE = 7
    # Hidden width of the block MLP as a multiple of the stage width (an int in the reference).
    cfg.MODEL.SWINT.MLP_RATIO = 4
    # Stochastic depth: per-block drop-path rates are linspace(0, DROP_PATH_RATE, sum(DEPTHS)).
    cfg.MODEL.SWINT.DROP_PATH_RATE = 0.2
    # Whether to add an absolute position embedding after the patch embedding.
    cfg.MODEL.SWINT.APE = False
    # Extra FPN levels on top of the backbone (RetinaNet/FCOS-style builders). Registered by the
    # reference's Swin helpers; the Mask R-CNN FPN builders do not read it (they add one max-pooled p6).
    cfg.MODEL.FPN.TOP_LEVELS = 2

    cfg.MODEL.TRANSFINER = CN()

    # RoI grids. The coarse / context grid is ROI_MASK_HEAD.POOLER_RESOLUTION (14); the coarse mask
    # logits are twice that. These are the quadtree levels, root first: each is twice the previous
    # one, and the root must equal 2 * POOLER_RESOLUTION.
    cfg.MODEL.TRANSFINER.REFINE_RESOLUTIONS = [28, 56, 112]
    # At most this many RoIs (the first ones of the batch's concatenated foreground proposals) are
    # pooled at the fine resolutions and refined in training; the others get no refinement.
    cfg.MODEL.TRANSFINER.MAX_REFINE_ROIS_TRAIN = 30
    # The same cap at inference, over the batch's concatenated detections (score order per image).
    cfg.MODEL.TRANSFINER.MAX_REFINE_ROIS_TEST = 10

    # Quadtree node selection: a cell of level REFINE_RESOLUTIONS[i] is a node when the (nearest-
    # upsampled) incoherence probability is >= the i-th threshold.
    cfg.MODEL.TRANSFINER.NODE_THRESHOLDS_TRAIN = [0.125, 0.5, 0.5]
    cfg.MODEL.TRANSFINER.NODE_THRESHOLDS_TEST = [1e-6, 0.125, 0.8]
    # Training: nodes sampled per level and RoI (without replacement when the level has enough;
    # otherwise a random permutation tiled NODE_TILE_FACTOR times, truncated).
    cfg.MODEL.TRANSFINER.NODES_PER_LEVEL_TRAIN = 150
    cfg.MODEL.TRANSFINER.NODE_TILE_FACTOR = 15
    # Training: a RoI with fewer selected nodes than this at any level is not refined.
    cfg.MODEL.TRANSFINER.MIN_NODES_PER_LEVEL_TRAIN = 10

    # Incoherence ground truth (from the full-image mask m): u = up(down(m, 1/DOWNSCALE)),
    # r = |m - u| (or m - u, see ABS_RESIDUE), r downscaled again, values >= RESIDUE_THRESH set to 1,
    # RoIAligned to the root grid, then >= ROI_THRESH.
    cfg.MODEL.TRANSFINER.INCOHERENCE_DOWNSCALE = 2
    cfg.MODEL.TRANSFINER.INCOHERENCE_RESIDUE_THRESH = 0.01
    cfg.MODEL.TRANSFINER.INCOHERENCE_ROI_THRESH = 0.05
    # True: residue |m - u| (reference HEAD, since Aug 2022); False: signed m - u (the earlier code,
    # which the released ResNet and Swin COCO models were very probably trained with).
    cfg.MODEL.TRANSFINER.INCOHERENCE_ABS_RESIDUE = True

    # Incoherence detector: widths of its four conv3x3 + ReLU layers (on detach(X14) + F) and of its
    # 2x2 deconvolution (no ReLU) before the 1x1 predictor.
    cfg.MODEL.TRANSFINER.INCOHERENCE_CONV_DIMS = [256, 256, 256, 128]
    cfg.MODEL.TRANSFINER.INCOHERENCE_DECONV_DIM = 128

    # Semantic stack on p2 inside the mask pooler (its output is added to p2 for the fine RoIs):
    # SEMANTIC_NUM_CONV conv3x3 layers of SEMANTIC_CONV_DIM channels with ReLU between them.
    cfg.MODEL.TRANSFINER.SEMANTIC_NUM_CONV = 4
    cfg.MODEL.TRANSFINER.SEMANTIC_CONV_DIM = 256

    # Node encoder: a DETR-style transformer encoder over [context tokens, 28, 56, 112 nodes].
    # Node fusion is a 1x1 conv (HIDDEN_DIM + 1 -> HIDDEN_DIM) of [RoI feature, coarse probability].
    cfg.MODEL.TRANSFINER.ENC_LAYERS = 3
    cfg.MODEL.TRANSFINER.HIDDEN_DIM = 256
    cfg.MODEL.TRANSFINER.NHEADS = 4
    cfg.MODEL.TRANSFINER.DIM_FEEDFORWARD = 2048
    cfg.MODEL.TRANSFINER.DROPOUT = 0.1
    # Activation of the encoder's feed-forward network.
    cfg.MODEL.TRANSFINER.ACTIVATION = "relu"
    # Pre-norm (True) or post-norm (False) encoder layers.
    cfg.MODEL.TRANSFINER.PRE_NORM = False
    # Hidden width of the per-token pixel decoder (1x1 conv, ReLU, 1x1 conv to 1, sigmoid).
    cfg.MODEL.TRANSFINER.DECODER_HIDDEN_DIM = 256

    # Sine positional encoding of every token (added to queries and keys): POS_NUM_FEATS channels
    # per axis (2 * POS_NUM_FEATS must equal HIDDEN_DIM), channel k divides the coordinate by
    # POS_TEMPERATURE ** (2 * (k // 2) / POS_NUM_FEATS); coordinates are normalised to (0, POS_SCALE].
    cfg.MODEL.TRANSFINER.POS_NUM_FEATS = 128
    cfg.MODEL.TRANSFINER.POS_TEMPERATURE = 10000.0
    cfg.MODEL.TRANSFINER.POS_SCALE = 2 * math.pi
    # Positions are cumulative counts, (index + 1) / (size + 1e-6), as in the reference (True), rather
    # than 0-based indices.
    cfg.MODEL.TRANSFINER.POS_ONE_BASED = True

    # Loss weights (the reference's effective values).
    # BCE of the coarse 28x28 mask logits ("loss_mask").
    cfg.MODEL.TRANSFINER.LOSS_MASK_WEIGHT = 1.0
    # Dice + BCE of the incoherence probabilities ("loss_mask_uncertain"): weight x (Dice + BCE).
    cfg.MODEL.TRANSFINER.LOSS_INCOHERENCE_WEIGHT = 0.5
    # L1 between refined probabilities and labels over all tokens ("loss_mask_refine").
    cfg.MODEL.TRANSFINER.LOSS_REFINE_WEIGHT = 1.0
    # BCE of the semantic logits on p2 against the union of foreground masks ("loss_semantic").
    cfg.MODEL.TRANSFINER.LOSS_SEMANTIC_WEIGHT = 0.25
    # BCE of the boundary logits ("loss_bound"); the reference computes 0.5 x (BCE + BCE), i.e. 1 x BCE.
    cfg.MODEL.TRANSFINER.LOSS_BOUNDARY_WEIGHT = 1.0

    # Demo-only post-processing (the reference switches it on with VIS_PERIOD == 100, which only its
    # demo sets): 3x3 max-dilation of the 112-level node selection and a 7x7 binomial blur (stride 1,
    # zero padding) of the refined 112x112 probabilities. Off for evaluation.
    cfg.MODEL.TRANSFINER.DEMO_SMOOTHING = False
    cfg.MODEL.TRANSFINER.DEMO_DILATION_KERNEL = 3
    cfg.MODEL.TRANSFINER.DEMO_BLUR_KERNEL = 7
