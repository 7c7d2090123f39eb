"""Backbones used by more than one model, and their config keys."""
from .config import add_swin_config  # noqa: F401
from .swin import SwinTransformer  # noqa: F401
# Registers D2SwinTransformer and Transfiner's build_swin[tb]_[fpn_]backbone in BACKBONE_REGISTRY.
from .d2_swin import D2SwinTransformer, TransfinerSwinTransformer  # noqa: F401
# Registers D2MixVisionTransformer (MiT / SegFormer encoder; configured by MODEL.MIT, see cft/config.py).
from .mit import D2MixVisionTransformer, MixVisionTransformer  # noqa: F401,E402
