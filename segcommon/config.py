"""Config keys shared by every model of the project.

All model packages' ``add_<model>_config`` functions are applied to one config by ``train_net.py``, so
a key used by more than one model is defined here, once, with a default that keeps Detectron2's stock
behaviour (SGD, no backbone multiplier, Detectron2's ``DatasetMapper``). Official YAML files set the
values their models need.
"""
from detectron2.config import CfgNode as CN
from detectron2.projects.deeplab import add_deeplab_config


def add_common_config(cfg: CN) -> None:
    """Adds the shared keys to ``cfg`` in place. Safe to call more than once."""
    if "DATASET_MAPPER_NAME" in cfg.INPUT:
        return
    # DeepLab's keys (WarmupPolyLR's POLY_LR_*, INPUT.CROP.SINGLE_CATEGORY_MAX_AREA,
    # RESNETS.STEM_TYPE, ...) are used by the official Mask2Former and CFT configs.
    add_deeplab_config(cfg)

    # Training data mapper, looked up by name in segcommon.data.MAPPER_REGISTRY;
    # "default" is Detectron2's DatasetMapper.
    cfg.INPUT.DATASET_MAPPER_NAME = "default"
    # Colour augmentation of SSD (photometric distortion) in the semantic mappers.
    cfg.INPUT.COLOR_AUG_SSD = False
    # Pad images (and targets) to this size in the semantic/panoptic mappers; -1: no padding.
    cfg.INPUT.SIZE_DIVISIBILITY = -1
    # Large-scale jitter (LSJ): ResizeScale(MIN_SCALE, MAX_SCALE) then FixedSizeCrop(IMAGE_SIZE).
    cfg.INPUT.IMAGE_SIZE = 1024
    cfg.INPUT.MIN_SCALE = 0.1
    cfg.INPUT.MAX_SCALE = 2.0

    # Optimiser: "SGD" or "ADAMW".
    cfg.SOLVER.OPTIMIZER = "SGD"
    # Learning-rate factor of parameters whose module name contains "backbone".
    cfg.SOLVER.BACKBONE_MULTIPLIER = 1.0
    # Weight decay of nn.Embedding parameters (query embeddings, level embeddings).
    cfg.SOLVER.WEIGHT_DECAY_EMBED = 0.0
