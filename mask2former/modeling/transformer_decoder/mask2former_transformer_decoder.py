"""Mask2Former's multi-scale masked-attention transformer decoder (the "predictor").

Follows the official ``MultiScaleMaskedTransformerDecoder`` (facebookresearch/Mask2Former) as described
in ``shared/specs/mask2former.md`` §5: parameter names, shapes, initialisation and formulas are those of
the reference, so official checkpoints load under ``sem_seg_head.predictor.``.

Layouts: the transformer sub-layers work on **sequence-first** tensors, ``(L, B, C)`` (queries ``L = Q``,
memory ``L = h * w``), as torch's ``nn.MultiheadAttention`` expects with ``batch_first=False`` (kept so
that the parameter layout and the attention-mask layout are the reference's). Prediction heads return
**batch-first** tensors ``(B, Q, ...)``.
"""
import logging
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import fvcore.nn.weight_init as weight_init
import torch
from detectron2.config import CfgNode, configurable
from detectron2.layers import Conv2d
from torch import Tensor, nn
from torch.nn import functional as F

from ..position_encoding import PositionEmbeddingSine

__all__ = [
    "MultiScaleMaskedTransformerDecoder",
    "SelfAttentionLayer",
    "CrossAttentionLayer",
    "FFNLayer",
    "MLP",
    "compute_attention_mask",
    "unblock_fully_masked_rows",
]

logger = logging.getLogger(__name__)

# A query may attend to a pixel only where its predicted mask probability reaches this value.
MASK_ATTENTION_THRESHOLD = 0.5


def _get_activation_fn(activation: str) -> Callable[[Tensor], Tensor]:
    if activation == "relu":
        return F.relu
    if activation == "gelu":
        return F.gelu
    raise ValueError(f"activation should be 'relu' or 'gelu', got {activation!r}")


def _with_pos_embed(tensor: Tensor, pos: Optional[Tensor]) -> Tensor:
    return tensor if pos is None else tensor + pos


def _xavier_uniform_matrices(module: nn.Module) -> None:
    # The reference re-initialises every >= 2-d parameter of a sub-layer with Xavier-uniform; the
    # packed MHA ``in_proj_weight`` (3C, C) is therefore treated as one matrix, not as three.
    for p in module.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)


class SelfAttentionLayer(nn.Module):
    """Self-attention among the queries with a residual connection and LayerNorm.

    Post-norm: ``tgt <- LN(tgt + MHA(tgt + qpos, tgt + qpos, tgt))``.
    Pre-norm:  ``t = LN(tgt); tgt <- tgt + MHA(t + qpos, t + qpos, t)``.
    """

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dropout: float = 0.0,
        normalize_before: bool = False,
    ):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.normalize_before = normalize_before
        _xavier_uniform_matrices(self)

    def forward(
        self,
        tgt: Tensor,
        tgt_mask: Optional[Tensor] = None,
        tgt_key_padding_mask: Optional[Tensor] = None,
        query_pos: Optional[Tensor] = None,
    ) -> Tensor:
        """
        Args:
            tgt: (Q, B, C) query features, sequence-first.
            tgt_mask: optional (Q, Q) or (B * nhead, Q, Q) attention mask (True = blocked).
            tgt_key_padding_mask: optional (B, Q), True = padded.
            query_pos: optional (Q, B, C) positional embedding added to queries and keys.

        Returns:
            (Q, B, C)
        """
        t = self.norm(tgt) if self.normalize_before else tgt
        q = k = _with_pos_embed(t, query_pos)
        t = self.self_attn(q, k, value=t, attn_mask=tgt_mask, key_padding_mask=tgt_key_padding_mask)[0]
        tgt = tgt + self.dropout(t)
        return tgt if self.normalize_before else self.norm(tgt)


class CrossAttentionLayer(nn.Module):
    """Cross-attention from the queries into a memory (one feature level), residual + LayerNorm.

    Post-norm: ``tgt <- LN(tgt + MHA(tgt + qpos, mem + pos, mem, attn_mask))``.
    Pre-norm:  ``tgt <- tgt + MHA(LN(tgt) + qpos, mem + pos, mem, attn_mask)`` (memory not normalised).
    The level embedding, already added to ``memory`` by the caller, thus reaches keys and values.
    """

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dropout: float = 0.0,
        normalize_before: bool = False,
    ):
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.normalize_before = normalize_before
        _xavier_uniform_matrices(self)

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        memory_mask: Optional[Tensor] = None,
        memory_key_padding_mask: Optional[Tensor] = None,
        pos: Optional[Tensor] = None,
        query_pos: Optional[Tensor] = None,
    ) -> Tensor:
        """
        Args:
            tgt: (Q, B, C) query features, sequence-first.
            memory: (S, B, C) flattened feature map, sequence-first (S = h * w).
            memory_mask: optional bool (B * nhead, Q, S), True = the query may not attend to that
                pixel; row ``b * nhead + m`` belongs to image b, head m. A row must not be all True
                (softmax over no key gives NaN): see :func:`unblock_fully_masked_rows`.
            memory_key_padding_mask: optional (B, S), True = padded.
            pos: optional (S, B, C) positional encoding added to the keys only.
            query_pos: optional (Q, B, C) added to the queries only.

        Returns:
            (Q, B, C)
        """
        t = self.norm(tgt) if self.normalize_before else tgt
        t = self.multihead_attn(
            query=_with_pos_embed(t, query_pos),
            key=_with_pos_embed(memory, pos),
            value=memory,
            attn_mask=memory_mask,
            key_padding_mask=memory_key_padding_mask,
        )[0]
        tgt = tgt + self.dropout(t)
        return tgt if self.normalize_before else self.norm(tgt)


class FFNLayer(nn.Module):
    """Feed-forward block ``Linear2(act(Linear1(.)))`` with a residual connection and LayerNorm
    (post-norm: after the residual; pre-norm: on the block's input)."""

    def __init__(
        self,
        d_model: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.0,
        activation: str = "relu",
        normalize_before: bool = False,
    ):
        super().__init__()
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.activation = _get_activation_fn(activation)
        self.normalize_before = normalize_before
        _xavier_uniform_matrices(self)

    def forward(self, tgt: Tensor) -> Tensor:
        """tgt: (..., C), any layout; returns the same shape."""
        t = self.norm(tgt) if self.normalize_before else tgt
        t = self.linear2(self.dropout(self.activation(self.linear1(t))))
        tgt = tgt + self.dropout(t)
        return tgt if self.normalize_before else self.norm(tgt)


class MLP(nn.Module):
    """``num_layers`` linear layers ``input_dim -> hidden_dim -> ... -> output_dim`` with ReLU between
    them (none after the last). Works on (..., input_dim)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        self.num_layers = num_layers
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims_in, dims_out))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < self.num_layers - 1:
                x = F.relu(x)
        return x


def compute_attention_mask(mask_logits: Tensor, target_size: Sequence[int], num_heads: int) -> Tensor:
    """The masked-attention mask derived from mask predictions (before un-blocking full rows).

    Args:
        mask_logits: (B, Q, H, W) mask logits (H, W = 1/4 of the input).
        target_size: (h, w) of the memory level the next layer attends to.
        num_heads: attention heads M.

    Returns:
        bool (B * M, Q, h * w), True = blocked (``sigmoid < 0.5`` after bilinear resizing with
        ``align_corners=False``); row ``b * M + m`` is image b, head m (the order torch's
        ``nn.MultiheadAttention`` uses for a 3-d ``attn_mask``). Detached: no gradient flows through
        the mask.
    """
    a = F.interpolate(mask_logits, size=tuple(target_size), mode="bilinear", align_corners=False)
    return attention_mask_from_logits(a, num_heads)


def attention_mask_from_logits(mask_logits: Tensor, num_heads: int) -> Tensor:
    """:func:`compute_attention_mask` of mask logits (B, Q, h, w) already at the target level."""
    # sigmoid(a) < 0.5 rather than a < 0: identical except where float32 rounds sigmoid of a tiny
    # negative logit to exactly 0.5, and the reference compares the probability.
    blocked = mask_logits.sigmoid().flatten(2) < MASK_ATTENTION_THRESHOLD  # (B, Q, h*w)
    blocked = blocked.unsqueeze(1).expand(-1, num_heads, -1, -1).flatten(0, 1)  # (B*M, Q, h*w)
    return blocked.detach()


def unblock_fully_masked_rows(attn_mask: Tensor) -> Tensor:
    """Returns ``attn_mask`` (bool (N, Q, S), True = blocked) with every row that blocks all S keys
    set to all-False: a query whose mask is empty at this level attends everywhere instead of
    producing NaN from a softmax over nothing."""
    return attn_mask & ~attn_mask.all(dim=-1, keepdim=True)


class MultiScaleMaskedTransformerDecoder(nn.Module):
    """Masked-attention transformer decoder over 3 feature levels (Mask2Former).

    ``dec_layers`` is the number of transformer layers. :meth:`from_config` follows the official
    arithmetic ``dec_layers = MODEL.MASK_FORMER.DEC_LAYERS - 1``: the config counts *prediction sets*
    (one from the learnable queries before the first layer plus one after each layer), so the
    official DEC_LAYERS = 10 gives 9 layers, 10 predictions and 9 ``aux_outputs``.

    Each layer ``i`` attends to level ``i % num_feature_levels`` (1/32, 1/16, 1/8, 1/32, ...) in the
    order masked cross-attention -> self-attention -> FFN. A query may only attend to the pixels its
    previous mask prediction (resized to that level) calls foreground; queries with an empty mask
    attend everywhere.
    """

    # Version 2 renamed ``static_query`` to ``query_feat``.
    _version = 2

    @configurable
    def __init__(
        self,
        in_channels: int,
        mask_classification: bool = True,
        *,
        num_classes: int,
        hidden_dim: int,
        num_queries: int,
        nheads: int,
        dim_feedforward: int,
        dec_layers: int,
        pre_norm: bool,
        mask_dim: int,
        enforce_input_project: bool,
        deep_supervision: bool = True,
        num_feature_levels: int = 3,
        dropout: float = 0.0,
        mask_embed_layers: int = 3,
    ):
        """
        Args:
            in_channels: channels of the multi-scale input features.
            mask_classification: must be True (the decoder always classifies its masks).
            num_classes: K; the classifier has K + 1 outputs, the last one "no object".
            hidden_dim: width C of queries and memory.
            num_queries: Q.
            nheads: attention heads (C must be divisible by it).
            dim_feedforward: hidden width of the FFN layers.
            dec_layers: number of transformer layers (= ``MODEL.MASK_FORMER.DEC_LAYERS - 1``, see the
                class docstring); 0 is allowed (prediction from the learnable queries only).
            pre_norm: pre-LayerNorm (True) or post-LayerNorm (False) sub-layers.
            mask_dim: channels of ``mask_features`` (output of the mask-embedding MLP).
            enforce_input_project: add a 1x1 conv projection per level even when
                ``in_channels == hidden_dim`` (otherwise identity, which has no state-dict keys).
            deep_supervision: return the intermediate predictions in ``aux_outputs``; when False
                ``aux_outputs`` is an empty list (the official decoder always fills it and the loss
                discards the auxiliary terms instead).
            num_feature_levels: number of input levels visited round-robin (the reference uses 3).
            dropout: dropout of the attention and FFN sub-layers (the reference uses 0.0 and does not
                read ``MODEL.MASK_FORMER.DROPOUT``).
            mask_embed_layers: depth of the mask-embedding MLP (the reference uses 3).
        """
        super().__init__()
        if not mask_classification:
            raise ValueError("MultiScaleMaskedTransformerDecoder supports mask_classification=True only")
        if dec_layers < 0:
            raise ValueError(f"dec_layers must be >= 0 (MODEL.MASK_FORMER.DEC_LAYERS >= 1), got {dec_layers}")
        self.mask_classification = mask_classification
        self.deep_supervision = deep_supervision

        # Sine encoding with hidden_dim / 2 frequencies per axis, so that y and x together fill C.
        self.pe_layer = PositionEmbeddingSine(hidden_dim // 2, normalize=True)

        self.num_heads = nheads
        self.num_layers = dec_layers
        self.transformer_self_attention_layers = nn.ModuleList()
        self.transformer_cross_attention_layers = nn.ModuleList()
        self.transformer_ffn_layers = nn.ModuleList()
        # The three lists are registered in this order (self, cross, FFN) although the forward runs
        # cross-attention first: it fixes the reference's state-dict order.
        for _ in range(self.num_layers):
            self.transformer_self_attention_layers.append(
                SelfAttentionLayer(hidden_dim, nheads, dropout=dropout, normalize_before=pre_norm)
            )
            self.transformer_cross_attention_layers.append(
                CrossAttentionLayer(hidden_dim, nheads, dropout=dropout, normalize_before=pre_norm)
            )
            self.transformer_ffn_layers.append(
                FFNLayer(hidden_dim, dim_feedforward, dropout=dropout, normalize_before=pre_norm)
            )

        # Applied in the prediction heads in both norm modes.
        self.decoder_norm = nn.LayerNorm(hidden_dim)

        self.num_queries = num_queries
        # Learnable initial query features (the "content") and query positional embeddings.
        self.query_feat = nn.Embedding(num_queries, hidden_dim)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)

        self.num_feature_levels = num_feature_levels
        self.level_embed = nn.Embedding(num_feature_levels, hidden_dim)
        self.input_proj = nn.ModuleList()
        for _ in range(num_feature_levels):
            if in_channels != hidden_dim or enforce_input_project:
                proj = Conv2d(in_channels, hidden_dim, kernel_size=1)
                weight_init.c2_xavier_fill(proj)
                self.input_proj.append(proj)
            else:
                # An empty Sequential is the identity and adds no state-dict keys.
                self.input_proj.append(nn.Sequential())

        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, mask_embed_layers)

    @classmethod
    def from_config(cls, cfg: CfgNode, in_channels: int, mask_classification: bool) -> Dict[str, Any]:
        dec_layers = cfg.MODEL.MASK_FORMER.DEC_LAYERS
        if dec_layers < 1:
            raise ValueError(f"MODEL.MASK_FORMER.DEC_LAYERS must be >= 1, got {dec_layers}")
        return {
            "in_channels": in_channels,
            "mask_classification": mask_classification,
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            "hidden_dim": cfg.MODEL.MASK_FORMER.HIDDEN_DIM,
            "num_queries": cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES,
            "nheads": cfg.MODEL.MASK_FORMER.NHEADS,
            "dim_feedforward": cfg.MODEL.MASK_FORMER.DIM_FEEDFORWARD,
            # DEC_LAYERS counts prediction sets; the learnable queries give one before any layer.
            "dec_layers": dec_layers - 1,
            "pre_norm": cfg.MODEL.MASK_FORMER.PRE_NORM,
            "enforce_input_project": cfg.MODEL.MASK_FORMER.ENFORCE_INPUT_PROJ,
            "mask_dim": cfg.MODEL.SEM_SEG_HEAD.MASK_DIM,
            "deep_supervision": cfg.MODEL.MASK_FORMER.DEEP_SUPERVISION,
        }

    def _load_from_state_dict(
        self,
        state_dict: Dict[str, Tensor],
        prefix: str,
        local_metadata: Dict[str, Any],
        strict: bool,
        missing_keys: List[str],
        unexpected_keys: List[str],
        error_msgs: List[str],
    ) -> None:
        # Version-1 checkpoints call the query features ``static_query``. Decided from the keys
        # present, not from the version metadata, which a plain dict checkpoint does not carry (the
        # metadata test would wrongly flag every current checkpoint loaded from a plain dict).
        old_prefix, new_prefix = prefix + "static_query.", prefix + "query_feat."
        renamed = False
        for k in [k for k in state_dict if k.startswith(old_prefix)]:
            new_k = new_prefix + k[len(old_prefix):]
            if new_k not in state_dict:
                state_dict[new_k] = state_dict.pop(k)
                renamed = True
        if renamed:
            logger.warning(
                f"{self.__class__.__name__}: renamed legacy '{old_prefix}*' keys to '{new_prefix}*'."
            )
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def forward(
        self, x: List[Tensor], mask_features: Tensor, mask: Optional[Tensor] = None
    ) -> Dict[str, Any]:
        """
        Args:
            x: ``num_feature_levels`` maps (B, in_channels, h_l, w_l), coarsest first
                (1/32, 1/16, 1/8 for the MSDeformAttn pixel decoder).
            mask_features: (B, mask_dim, H/4, W/4) per-pixel embeddings.
            mask: ignored (the reference does not mask padded pixels here); kept for the call
                signature ``predictor(multi_scale_features, mask_features, mask)``.

        Returns:
            dict, batch-first:
              * "pred_logits": (B, Q, K+1) class logits after the last layer;
              * "pred_masks": (B, Q, H/4, W/4) mask logits after the last layer;
              * "aux_outputs": ``dec_layers`` dicts with the same two keys, the predictions from the
                learnable queries first, then after layers 0 .. dec_layers - 2 (empty when
                ``deep_supervision`` is False, and in eval mode, where only the last prediction's
                mask logits are computed at 1/4 resolution).
        """
        del mask
        if len(x) != self.num_feature_levels:
            raise ValueError(f"expected {self.num_feature_levels} feature levels, got {len(x)}")

        src: List[Tensor] = []
        pos: List[Tensor] = []
        size_list: List[Tuple[int, int]] = []
        for i in range(self.num_feature_levels):
            size_list.append((x[i].shape[-2], x[i].shape[-1]))
            # (B, C, h, w) -> (h*w, B, C). The level embedding goes into the memory itself (keys and
            # values), unlike the pixel decoder, which adds it to the positional term.
            pos.append(self.pe_layer(x[i], None).flatten(2).permute(2, 0, 1))
            proj = self.input_proj[i](x[i]).flatten(2) + self.level_embed.weight[i][None, :, None]
            src.append(proj.permute(2, 0, 1))

        bs = src[0].shape[1]
        query_embed = self.query_embed.weight.unsqueeze(1).repeat(1, bs, 1)  # (Q, B, C)
        output = self.query_feat.weight.unsqueeze(1).repeat(1, bs, 1)  # (Q, B, C)

        predictions_class: List[Tensor] = []
        predictions_mask: List[Tensor] = []
        # In eval mode only the last prediction is returned. Each earlier one only gives the next
        # layer its attention mask: the mask logits resized to a coarser level. Resizing is linear
        # and per channel, so it commutes with the projection onto the mask embeddings: resizing
        # mask_features once per level and projecting there gives the same attention masks (to
        # float rounding) without computing 1/4-resolution masks that nothing reads.
        resized_mask_features: List[Optional[Tensor]] = [None] * self.num_feature_levels
        if not self.training and self.num_layers > 0:
            resized_mask_features = [
                F.interpolate(mask_features, size=size, mode="bilinear", align_corners=False) for size in size_list
            ]

        # Predictions from the learnable queries supervise them directly and give the first mask.
        outputs_class, outputs_mask, attn_mask = self.forward_prediction_heads(
            output, mask_features, attn_mask_target_size=size_list[0], attn_mask_features=resized_mask_features[0]
        )
        predictions_class.append(outputs_class)
        predictions_mask.append(outputs_mask)

        for i in range(self.num_layers):
            level_index = i % self.num_feature_levels
            attn_mask = unblock_fully_masked_rows(attn_mask)
            output = self.transformer_cross_attention_layers[i](
                output,
                src[level_index],
                memory_mask=attn_mask,
                memory_key_padding_mask=None,  # padded pixels are not masked (reference behaviour)
                pos=pos[level_index],
                query_pos=query_embed,
            )
            output = self.transformer_self_attention_layers[i](
                output, tgt_mask=None, tgt_key_padding_mask=None, query_pos=query_embed
            )
            output = self.transformer_ffn_layers[i](output)

            # The mask for the next layer is sized for the level that layer will attend to.
            next_level = (i + 1) % self.num_feature_levels
            outputs_class, outputs_mask, attn_mask = self.forward_prediction_heads(
                output,
                mask_features,
                attn_mask_target_size=size_list[next_level],
                attn_mask_features=None if i == self.num_layers - 1 else resized_mask_features[next_level],
            )
            predictions_class.append(outputs_class)
            predictions_mask.append(outputs_mask)

        assert len(predictions_class) == self.num_layers + 1
        return {
            "pred_logits": predictions_class[-1],
            "pred_masks": predictions_mask[-1],
            "aux_outputs": self._set_aux_loss(predictions_class, predictions_mask) if self.training else [],
        }

    def forward_prediction_heads(
        self,
        output: Tensor,
        mask_features: Tensor,
        attn_mask_target_size: Sequence[int],
        attn_mask_features: Optional[Tensor] = None,
    ) -> Tuple[Tensor, Optional[Tensor], Tensor]:
        """
        Args:
            output: (Q, B, C) query features, sequence-first.
            mask_features: (B, mask_dim, H/4, W/4).
            attn_mask_target_size: (h, w) of the level the next layer attends to.
            attn_mask_features: when given, ``mask_features`` already resized to
                ``attn_mask_target_size``: the attention mask is computed from it and no
                1/4-resolution mask logits are returned (None in their place).

        Returns:
            class logits (B, Q, K+1), mask logits (B, Q, H/4, W/4) or None, and the attention mask
            for the next layer, bool (B * nheads, Q, h * w), True = blocked (see
            :func:`compute_attention_mask`).
        """
        decoder_output = self.decoder_norm(output).transpose(0, 1)  # (B, Q, C)
        outputs_class = self.class_embed(decoder_output)
        mask_embed = self.mask_embed(decoder_output)
        if attn_mask_features is None:
            outputs_mask = torch.einsum("bqc,bchw->bqhw", mask_embed, mask_features)
            attn_mask = compute_attention_mask(outputs_mask, attn_mask_target_size, self.num_heads)
            return outputs_class, outputs_mask, attn_mask
        logits = torch.einsum("bqc,bchw->bqhw", mask_embed, attn_mask_features)
        return outputs_class, None, attention_mask_from_logits(logits, self.num_heads)

    @torch.jit.unused
    def _set_aux_loss(
        self, outputs_class: List[Tensor], outputs_seg_masks: List[Tensor]
    ) -> List[Dict[str, Tensor]]:
        # Every prediction set except the final one, which is returned at the top level.
        if not self.deep_supervision:
            return []
        return [
            {"pred_logits": a, "pred_masks": b}
            for a, b in zip(outputs_class[:-1], outputs_seg_masks[:-1])
        ]
