"""Transformer decoders of Mask2Former (the "predictor" of ``MaskFormerHead``) and their registry."""
from detectron2.config import CfgNode
from detectron2.utils.registry import Registry
from torch import nn

from .mask2former_transformer_decoder import MultiScaleMaskedTransformerDecoder

__all__ = [
    "TRANSFORMER_DECODER_REGISTRY",
    "build_transformer_decoder",
    "MultiScaleMaskedTransformerDecoder",
]

# The registry's name is the reference's, so messages read the same.
TRANSFORMER_DECODER_REGISTRY = Registry("TRANSFORMER_MODULE")
TRANSFORMER_DECODER_REGISTRY.__doc__ = """
Registry for the transformer decoders of MaskFormer-style heads, selected by
``cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME``.

A registered class is called as ``obj(cfg, in_channels, mask_classification)`` (a Detectron2
``@configurable`` class whose ``from_config(cls, cfg, in_channels, mask_classification)`` reads the
rest) and must return an ``nn.Module`` whose ``forward(x, mask_features, mask=None)`` takes the list of
multi-scale features ``x`` (B, in_channels, h_l, w_l), the per-pixel embeddings ``mask_features``
(B, MASK_DIM, H/4, W/4) and an ignored padding mask, and returns
``{"pred_logits": (B, Q, K+1), "pred_masks": (B, Q, H/4, W/4), "aux_outputs": [...]}``.
"""

TRANSFORMER_DECODER_REGISTRY.register(MultiScaleMaskedTransformerDecoder)


def build_transformer_decoder(cfg: CfgNode, in_channels: int, mask_classification: bool = True) -> nn.Module:
    """Builds the transformer decoder named by ``cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME``.

    Raises:
        KeyError: naming the config key and the registered names when the name is unknown.
    """
    name = cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME
    if name not in TRANSFORMER_DECODER_REGISTRY:
        known = sorted(k for k, _ in TRANSFORMER_DECODER_REGISTRY)
        raise KeyError(
            f"MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME: unknown transformer decoder {name!r}; "
            f"registered: {known}"
        )
    return TRANSFORMER_DECODER_REGISTRY.get(name)(cfg, in_channels, mask_classification)
