"""SOTR's modules. Importing this package registers the ``SOTR`` meta-architecture."""
from .heads import MaskHead, TwinTransformerHead, resize_to_grids, split_feats  # noqa: F401
from .meta_arch import SOTR  # noqa: F401
from .twin_transformer import TwinTransformer  # noqa: F401
