"""Mask2Former's config keys.

Ported from the official ``add_maskformer2_config`` (facebookresearch/Mask2Former
``mask2former/config.py``) with the reference defaults. Keys that more than one model uses are not
defined here:

* ``segcommon.config.add_common_config`` owns ``INPUT.DATASET_MAPPER_NAME``, ``INPUT.COLOR_AUG_SSD``,
  ``INPUT.SIZE_DIVISIBILITY``, ``INPUT.IMAGE_SIZE/MIN_SCALE/MAX_SCALE``, ``SOLVER.OPTIMIZER``,
  ``SOLVER.BACKBONE_MULTIPLIER``, ``SOLVER.WEIGHT_DECAY_EMBED`` and, through Detectron2's DeepLab
  config, ``INPUT.CROP.SINGLE_CATEGORY_MAX_AREA``, ``SOLVER.POLY_LR_*`` and
  ``MODEL.RESNETS.{STEM_TYPE, RES5_MULTI_GRID, RES4_DILATION}``. Their shared defaults keep
  Detectron2's behaviour (SGD, multiplier 1.0, the stock mapper); where the official function used
  other defaults (AdamW, 0.1, "mask_former_semantic") every official Mask2Former YAML sets the value
  itself, which ``tests/test_configs.py`` checks.
* ``segcommon.backbone.add_swin_config`` owns ``MODEL.SWIN.*`` (the Swin backbone, also used by CFT).
"""
from detectron2.config import CfgNode as CN

from segcommon.backbone.config import add_swin_config
from segcommon.config import add_common_config

__all__ = ["add_maskformer2_config", "add_mask2former_config"]


def add_maskformer2_config(cfg: CN) -> None:
    """Adds Mask2Former's keys (``MODEL.MASK_FORMER.*`` and its ``MODEL.SEM_SEG_HEAD.*`` additions) to
    ``cfg`` in place, after the shared keys and the Swin keys. Safe to call more than once."""
    add_common_config(cfg)
    add_swin_config(cfg)
    if "MASK_FORMER" in cfg.MODEL:
        return

    cfg.MODEL.MASK_FORMER = CN()

    # Loss.
    # Whether every decoder layer's predictions (and the learnable queries') get the loss, not only
    # the last layer's.
    cfg.MODEL.MASK_FORMER.DEEP_SUPERVISION = True
    # Classification weight of the "no object" class (eos_coef).
    cfg.MODEL.MASK_FORMER.NO_OBJECT_WEIGHT = 0.1
    # Weight of the classification loss and of the class cost of the Hungarian matcher.
    cfg.MODEL.MASK_FORMER.CLASS_WEIGHT = 1.0
    # Weight of the dice loss and of the dice cost of the matcher.
    cfg.MODEL.MASK_FORMER.DICE_WEIGHT = 1.0
    # Weight of the sigmoid binary cross-entropy mask loss and of the mask cost of the matcher.
    cfg.MODEL.MASK_FORMER.MASK_WEIGHT = 20.0

    # Transformer.
    # Attention heads of the transformer decoder and of the pixel decoder's deformable encoder.
    cfg.MODEL.MASK_FORMER.NHEADS = 8
    # Dropout of the pixel decoder's deformable encoder layers (the masked-attention decoder has none).
    cfg.MODEL.MASK_FORMER.DROPOUT = 0.1
    # Hidden width of the feed-forward networks of the transformer decoder layers.
    cfg.MODEL.MASK_FORMER.DIM_FEEDFORWARD = 2048
    # Transformer encoder layers of the MaskFormer-v1 decoder ("StandardTransformerDecoder") only.
    cfg.MODEL.MASK_FORMER.ENC_LAYERS = 0
    # Number of prediction sets: the masked-attention decoder has DEC_LAYERS - 1 layers, plus one
    # prediction from the learnable queries before the first layer.
    cfg.MODEL.MASK_FORMER.DEC_LAYERS = 6
    # Pre-norm (True) or post-norm (False) transformer layers.
    cfg.MODEL.MASK_FORMER.PRE_NORM = False
    # Width of the transformer decoder (query features).
    cfg.MODEL.MASK_FORMER.HIDDEN_DIM = 256
    # Number of object queries.
    cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES = 100
    # Which feature feeds the transformer decoder: "multi_scale_pixel_decoder" (Mask2Former),
    # "transformer_encoder", "pixel_embedding" or a backbone feature name such as "res5" (MaskFormer).
    cfg.MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE = "res5"
    # Always project the decoder's input features to HIDDEN_DIM, even when the widths already agree.
    cfg.MODEL.MASK_FORMER.ENFORCE_INPUT_PROJ = False

    # Inference.
    cfg.MODEL.MASK_FORMER.TEST = CN()
    # Which outputs the model produces at inference: per-pixel semantic scores ("sem_seg"),
    # instances ("instances"), panoptic segments ("panoptic_seg").
    cfg.MODEL.MASK_FORMER.TEST.SEMANTIC_ON = True
    cfg.MODEL.MASK_FORMER.TEST.INSTANCE_ON = False
    cfg.MODEL.MASK_FORMER.TEST.PANOPTIC_ON = False
    # Panoptic inference: queries whose class score is not above this threshold are dropped.
    cfg.MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD = 0.0
    # Panoptic inference: a segment is kept only if at least this fraction of its mask survives
    # the overlap with higher-scoring segments.
    cfg.MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD = 0.0
    # Resize the mask predictions to the output size before (True) or after (False) the semantic /
    # panoptic / instance inference.
    cfg.MODEL.MASK_FORMER.TEST.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE = False

    # Model-side padding of the batched images to a multiple of this value; -1 uses the backbone's
    # ``size_divisibility`` (0 for ResNet, 32 for Swin).
    cfg.MODEL.MASK_FORMER.SIZE_DIVISIBILITY = 32

    # Name of the transformer decoder in the project's transformer-decoder registry.
    cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME = "MultiScaleMaskedTransformerDecoder"

    # Point-sampled mask loss (PointRend-style importance sampling).
    # Number of points sampled per mask for the mask losses and the matcher's mask costs.
    cfg.MODEL.MASK_FORMER.TRAIN_NUM_POINTS = 112 * 112
    # Oversampling factor k: k * TRAIN_NUM_POINTS random candidate points are drawn.
    cfg.MODEL.MASK_FORMER.OVERSAMPLE_RATIO = 3.0
    # Importance-sampling fraction beta: this fraction of the points are the most uncertain
    # candidates, the rest are uniformly random.
    cfg.MODEL.MASK_FORMER.IMPORTANCE_SAMPLE_RATIO = 0.75

    # Pixel decoder (keys added to Detectron2's SEM_SEG_HEAD).
    # Channels of the per-pixel mask embeddings.
    cfg.MODEL.SEM_SEG_HEAD.MASK_DIM = 256
    # Transformer encoder layers inside the pixel decoder (6 deformable layers in Mask2Former).
    cfg.MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS = 0
    # Name of the pixel decoder in SEM_SEG_HEADS_REGISTRY (Mask2Former: "MSDeformAttnPixelDecoder").
    cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME = "BasePixelDecoder"
    # Backbone features that go through the multi-scale deformable attention encoder.
    cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES = ["res3", "res4", "res5"]
    # Hidden width of the feed-forward networks of the deformable encoder layers (the official pixel
    # decoder hard-codes 1024).
    cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_DIM_FEEDFORWARD = 1024
    # Sampling points per head and level of the deformable attention. Not read by the official
    # pixel decoder, which hard-codes 4.
    cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS = 4
    # Attention heads of the deformable attention. Not read by the official pixel decoder, which
    # uses MODEL.MASK_FORMER.NHEADS.
    cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS = 8


# The name used by train_net.py's table of model packages and by the project's other packages.
add_mask2former_config = add_maskformer2_config
