"""SOTR's config keys.

Ported from the official defaults (easton-cau/SOTR ``adet/config/defaults.py``, an AdelaiDet fork):
all of ``MODEL.SOTR.*`` with the reference values, plus the AdelaiDet keys that the SOTR path reads
(``INPUT.HFLIP_TRAIN``, ``INPUT.CROP.CROP_INSTANCE``) or that an official YAML sets
(``MODEL.RESNETS.DEFORM_INTERVAL``). AdelaiDet's other leftovers (``MODEL.VOVNET``, ``MODEL.DLA``,
``MODEL.BASIS_MODULE``, ``MODEL.TOP_MODULE``, ``MODEL.BiFPN``, ``MODEL.MOBILENET``,
``MODEL.BACKBONE.ANTI_ALIAS``) belong to other AdelaiDet models, are set by no SOTR YAML and are not
registered.

``MODEL.SOTR.TRANSFORMER`` exposes the twin transformer's sizes, which the reference hard-codes;
the defaults reproduce the official model, and ``configs/sotr/R50_RT.yaml`` (the paper's real-time
SOTR-RT) changes its depth.
"""
from detectron2.config import CfgNode as CN

from segcommon.config import add_common_config

__all__ = ["add_sotr_config"]


def add_sotr_config(cfg: CN) -> None:
    """Adds SOTR's keys to ``cfg`` in place, after the shared keys. Safe to call more than once."""
    add_common_config(cfg)
    if "SOTR" in cfg.MODEL:
        return

    # AdelaiDet keys used by SOTR's configs and data path.
    # Deformable-conv interval of AdelaiDet's own ResNet builder. SOTR uses Detectron2's
    # build_resnet_fpn_backbone, which ignores it (every block of a DEFORM_ON_PER_STAGE stage is
    # deformable); R_101_DCN.yaml sets it to 3.
    cfg.MODEL.RESNETS.DEFORM_INTERVAL = 1
    # Random horizontal flip (p = 0.5) of the training images.
    cfg.INPUT.HFLIP_TRAIN = True
    # When INPUT.CROP.ENABLED: crop so that no instance is cut (AdelaiDet's instance-aware crop).
    cfg.INPUT.CROP.CROP_INSTANCE = True

    cfg.MODEL.SOTR = CN()

    # Instance branch.
    # FPN maps feeding the five instance levels (p2 is halved, p6 resized to p5's size).
    cfg.MODEL.SOTR.INSTANCE_IN_FEATURES = ["p2", "p3", "p4", "p5", "p6"]
    # Nominal stride of each instance level; only used by the inference minimum-area filter.
    cfg.MODEL.SOTR.FPN_INSTANCE_STRIDES = [8, 8, 16, 32, 32]
    # Inclusive range of sqrt(box area) assigned to each level, in input pixels. The reference
    # default is the tuple ((1, 96), (48, 192), (96, 384), (192, 768), (384, 2048)); it is stored as a
    # list of [low, high] pairs so that the config survives a YAML round trip unchanged.
    cfg.MODEL.SOTR.FPN_SCALE_RANGES = [[1, 96], [48, 192], [96, 384], [192, 768], [384, 2048]]
    # Centre-region scale: the grid cells covered by a box of SIGMA x the instance box's width and
    # height, centred on the mask's centre of mass (at most the 3x3 cells around it), are positive.
    cfg.MODEL.SOTR.SIGMA = 0.2
    # Width of the instance-branch input (must equal the FPN width); input width of the class and
    # kernel heads and width of the twin transformer.
    cfg.MODEL.SOTR.INSTANCE_IN_CHANNELS = 256
    # SOLOv2 leftover: width of a conv tower that SOTR does not have. Not used.
    cfg.MODEL.SOTR.INSTANCE_CHANNELS = 512
    # SOLOv2 leftover: convs of that tower. Not used.
    cfg.MODEL.SOTR.NUM_INSTANCE_CONVS = 4
    # SOLOv2 leftover: deformable convs in that tower. Not used.
    cfg.MODEL.SOTR.USE_DCN_IN_INSTANCE = False
    # SOLOv2 leftover: deformable-conv type of that tower. Not used.
    cfg.MODEL.SOTR.TYPE_DCN = "DCN"
    # Grid size S of each instance level (S x S cells, one class score and one kernel per cell).
    cfg.MODEL.SOTR.NUM_GRIDS = [40, 36, 24, 16, 12]
    # Number of foreground classes (COCO: 80); also the background value of the class targets.
    cfg.MODEL.SOTR.NUM_CLASSES = 80
    # Length of the predicted dynamic kernels (1x1 kernels over NUM_MASKS channels: must equal it).
    cfg.MODEL.SOTR.NUM_KERNELS = 256
    # Normalisation of the mask-branch towers: "GN" or "none".
    cfg.MODEL.SOTR.NORM = "GN"
    # SOLOv2 leftover: coordinate channels. SOTR concatenates none. Not used.
    cfg.MODEL.SOTR.USE_COORD_CONV = True
    # Prior probability that initialises the class-logit bias to -log((1 - p) / p).
    cfg.MODEL.SOTR.PRIOR_PROB = 0.01

    # Mask branch (multi-level upsampling module).
    # FPN maps of the mask branch; the fourth is replaced by the transformer output on p5.
    cfg.MODEL.SOTR.MASK_IN_FEATURES = ["p2", "p3", "p4", "p5"]
    # Input width of the first conv of each mask tower.
    cfg.MODEL.SOTR.MASK_IN_CHANNELS = 256
    # Width of the mask towers.
    cfg.MODEL.SOTR.MASK_CHANNELS = 128
    # Channels of the mask features the dynamic kernels are applied to.
    cfg.MODEL.SOTR.NUM_MASKS = 256

    # Inference.
    # Candidates kept (by score) before NMS.
    cfg.MODEL.SOTR.NMS_PRE = 500
    # Class-score threshold of the candidates (strictly greater).
    cfg.MODEL.SOTR.SCORE_THR = 0.1
    # Score threshold after matrix NMS (greater or equal).
    cfg.MODEL.SOTR.UPDATE_THR = 0.05
    # Mask binarisation threshold (strictly greater); also the IoU threshold of NMS_TYPE "mask".
    cfg.MODEL.SOTR.MASK_THR = 0.5
    # Maximum number of instances per image.
    cfg.MODEL.SOTR.MAX_PER_IMG = 100
    # Test-time input resize factor of a dead helper in the reference. Not used.
    cfg.MODEL.SOTR.RESIZE_INPUT_FACTOR = 1
    # Emit tight boxes around the predicted masks (so COCO bbox AP means something). Not a reference
    # key: the reference always returns all-zero boxes (False reproduces that); mask AP is the same.
    cfg.MODEL.SOTR.BOXES_FROM_MASKS = True
    # NMS type: "matrix" (score decay) or "mask" (sequential mask NMS).
    cfg.MODEL.SOTR.NMS_TYPE = "matrix"
    # Matrix-NMS decay kernel: "gaussian" or "linear".
    cfg.MODEL.SOTR.NMS_KERNEL = "gaussian"
    # Sigma of the Gaussian matrix-NMS kernel (multiplies IoU**2; an int in the reference).
    cfg.MODEL.SOTR.NMS_SIGMA = 2

    # Losses.
    cfg.MODEL.SOTR.LOSS = CN()
    # Sigmoid (not softmax) focal loss for the classes. Only the sigmoid form exists; not read.
    cfg.MODEL.SOTR.LOSS.FOCAL_USE_SIGMOID = True
    # Alpha and gamma of the sigmoid focal loss of the class scores.
    cfg.MODEL.SOTR.LOSS.FOCAL_ALPHA = 0.25
    cfg.MODEL.SOTR.LOSS.FOCAL_GAMMA = 2.0
    # Weight of the class focal loss ("loss_cate").
    cfg.MODEL.SOTR.LOSS.FOCAL_WEIGHT = 1.0
    # Weight of the mask dice loss ("loss_ins").
    cfg.MODEL.SOTR.LOSS.DICE_WEIGHT = 3.0

    # Twin transformer (hard-coded in the reference; the defaults are the reference values). One
    # module is shared by the five grid levels and the full-resolution p5 pass.
    cfg.MODEL.SOTR.TRANSFORMER = CN()
    # Number of twin-transformer layers (12 in the released models, 2 in the paper's SOTR-RT).
    cfg.MODEL.SOTR.TRANSFORMER.NUM_LAYERS = 12
    # Attention heads of the row and column attentions (head width INSTANCE_IN_CHANNELS / NUM_HEADS).
    cfg.MODEL.SOTR.TRANSFORMER.NUM_HEADS = 8
    # Negative slope of the LeakyReLU inside the convolutional feed-forward branches.
    cfg.MODEL.SOTR.TRANSFORMER.LEAKY_RELU_SLOPE = 0.01
    # Concatenate the input with itself along the width before the layers and average the two halves
    # after them, as the reference (and its checkpoints) do. False drops that step.
    cfg.MODEL.SOTR.TRANSFORMER.DUPLICATE_WIDTH = True
