"""Config keys of the backbones that more than one model uses.

``MODEL.SWIN`` configures the Swin Transformer wrapped as a Detectron2 backbone (``D2SwinTransformer``,
registered in ``BACKBONE_REGISTRY``), as in the official Mask2Former code
(facebookresearch/Mask2Former ``mask2former/config.py``): Mask2Former's Swin configs and CFT's Swin-L
configs select it with ``MODEL.BACKBONE.NAME: "D2SwinTransformer"``. The defaults are Mask2Former's
(Swin-T, ImageNet-1k 224 weights); the official YAML files set the variant.

Mask Transfiner's Swin backbones use their own namespace, ``MODEL.SWINT`` (``transfiner/config.py``).
"""
from detectron2.config import CfgNode as CN

__all__ = ["add_swin_config"]


def add_swin_config(cfg: CN) -> None:
    """Adds ``MODEL.SWIN.*`` to ``cfg`` in place. Safe to call more than once."""
    if "SWIN" in cfg.MODEL:
        return
    cfg.MODEL.SWIN = CN()
    # Image size of the ImageNet pre-training. Only sizes the absolute position embedding, i.e. it
    # matters only when APE is True.
    cfg.MODEL.SWIN.PRETRAIN_IMG_SIZE = 224
    # Side of the square patches of the patch embedding (a conv with this kernel and stride).
    cfg.MODEL.SWIN.PATCH_SIZE = 4
    # Channels of the first stage; stage i has EMBED_DIM * 2**i (T/S: 96, B: 128, L: 192).
    cfg.MODEL.SWIN.EMBED_DIM = 96
    # Number of Swin blocks per stage (T: [2, 2, 6, 2]; S, B, L: [2, 2, 18, 2]).
    cfg.MODEL.SWIN.DEPTHS = [2, 2, 6, 2]
    # Attention heads per stage (T/S: [3, 6, 12, 24]; B: [4, 8, 16, 32]; L: [6, 12, 24, 48]).
    cfg.MODEL.SWIN.NUM_HEADS = [3, 6, 12, 24]
    # Side of the attention windows, in tokens (7 for the 224 models, 12 for the 384 models).
    cfg.MODEL.SWIN.WINDOW_SIZE = 7
    # Hidden width of the block MLP as a multiple of the stage width.
    cfg.MODEL.SWIN.MLP_RATIO = 4.0
    # Whether the qkv projection has a bias.
    cfg.MODEL.SWIN.QKV_BIAS = True
    # Attention scale; None means head_dim ** -0.5.
    cfg.MODEL.SWIN.QK_SCALE = None
    # Dropout after the patch embedding and in the MLPs / attention projections.
    cfg.MODEL.SWIN.DROP_RATE = 0.0
    # Dropout on the attention weights.
    cfg.MODEL.SWIN.ATTN_DROP_RATE = 0.0
    # Stochastic depth: per-block drop-path rates are linspace(0, DROP_PATH_RATE, sum(DEPTHS)).
    cfg.MODEL.SWIN.DROP_PATH_RATE = 0.3
    # Whether to add an absolute position embedding after the patch embedding.
    cfg.MODEL.SWIN.APE = False
    # Whether to apply LayerNorm after the patch embedding.
    cfg.MODEL.SWIN.PATCH_NORM = True
    # Stages to output, named res2..res5 (strides 4, 8, 16, 32); each gets its own output LayerNorm.
    cfg.MODEL.SWIN.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    # Activation checkpointing per block (saves memory, costs a second forward).
    cfg.MODEL.SWIN.USE_CHECKPOINT = False
