"""Mask Transfiner's node encoder: sine positional encoding, the DETR-style transformer encoder over
quadtree-node tokens, node fusion (``conv_fuse``) and the per-token pixel decoder (``conv_r1``).

Follows ``shared/specs/transfiner.md`` §5.5, §6 and §13. Parameter names (``layers.{k}.self_attn``,
``linear1/2``, ``norm1/2``, ``conv_fuse``, ``conv_r1.{0,2}``) are the official checkpoint's.
"""
import copy
import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["sine_position_encoding", "TransfinerEncoderLayer", "NodeEncoder"]


def sine_position_encoding(
    height: int,
    width: int,
    num_feats: int = 128,
    temperature: float = 10000.0,
    scale: float = 2 * math.pi,
    one_based: bool = True,
    device: Optional[torch.device] = None,
) -> Tensor:
    """Sine positional encoding of an ``height x width`` grid (§6).

    The row coordinate of cell r is ``(r + 1) / (height + 1e-6) * scale`` with ``one_based`` (the
    reference's cumulative-count convention, so the first cell sits at 1/H, not at the cell centre),
    else the cell centre ``(r + 0.5) / height * scale``; columns likewise. Channel k < num_feats
    encodes the row as ``sin`` (even k) / ``cos`` (odd k) of ``y / temperature ** (2 (k // 2) /
    num_feats)``; channels num_feats.. encode the column the same way.

    Returns:
        (2 * num_feats, height, width) float32.
    """
    rows = torch.arange(height, dtype=torch.float32, device=device)
    cols = torch.arange(width, dtype=torch.float32, device=device)
    if one_based:
        # The reference divides the cumulative count by its last value plus eps.
        y = (rows + 1) / (height + 1e-6) * scale
        x = (cols + 1) / (width + 1e-6) * scale
    else:
        y = (rows + 0.5) / height * scale
        x = (cols + 0.5) / width * scale
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_feats)

    def encode(coord: Tensor) -> Tensor:  # (S,) -> (S, num_feats), sin/cos interleaved
        t = coord[:, None] / dim_t
        return torch.stack((t[:, 0::2].sin(), t[:, 1::2].cos()), dim=2).flatten(1)

    pos_y = encode(y)[:, None, :].expand(height, width, num_feats)
    pos_x = encode(x)[None, :, :].expand(height, width, num_feats)
    return torch.cat((pos_y, pos_x), dim=2).permute(2, 0, 1).contiguous()


class TransfinerEncoderLayer(nn.Module):
    """One DETR encoder layer: self-attention with the positional encoding added to queries and keys
    (values without it), then a ReLU FFN; post-norm (the reference) or pre-norm. Dropout on the
    attention weights, on both residual branches and on the FFN hidden activation."""

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: str = "relu",
        normalize_before: bool = False,
    ):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        if activation not in ("relu", "gelu", "glu"):
            raise ValueError(f"activation should be relu/gelu/glu, not {activation!r}")
        self.activation = getattr(F, activation)
        self.normalize_before = normalize_before

    def forward(self, src: Tensor, pos: Tensor) -> Tensor:
        """
        Args:
            src: (L, B, d_model) tokens, sequence first.
            pos: (L, B, d_model) positional encoding.

        Returns:
            (L, B, d_model).
        """
        if self.normalize_before:
            src2 = self.norm1(src)
            q = k = src2 + pos
            src = src + self.dropout1(self.self_attn(q, k, value=src2, need_weights=False)[0])
            src2 = self.norm2(src)
            src2 = self.linear2(self.dropout(self.activation(self.linear1(src2))))
            return src + self.dropout2(src2)
        q = k = src + pos
        # need_weights=False: the attention map is not returned, which lets PyTorch use its fused
        # kernel (no L x L weights kept; inference sequences reach 196 + 784 + 3136 + 12544 tokens).
        # Same maths as the reference's default call, up to float rounding.
        src = self.norm1(src + self.dropout1(self.self_attn(q, k, value=src, need_weights=False)[0]))
        src2 = self.linear2(self.dropout(self.activation(self.linear1(src))))
        return self.norm2(src + self.dropout2(src2))


class NodeEncoder(nn.Module):
    """Node fusion + sequence encoder + pixel decoder (the reference's ``encoder`` module).

    Each token is ``[RoI feature (in_channels), coarse probability (1)]``; ``conv_fuse`` (1x1 conv,
    in_channels + 1 -> d_model) fuses it, ``layers`` encode the sequence, ``conv_r1`` (1x1 conv,
    ReLU, 1x1 conv to 1, sigmoid) decodes one foreground **probability** per token.
    """

    def __init__(
        self,
        in_channels: int = 256,
        d_model: int = 256,
        nhead: int = 4,
        num_layers: int = 3,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: str = "relu",
        normalize_before: bool = False,
        decoder_hidden_dim: int = 256,
    ):
        super().__init__()
        layer = TransfinerEncoderLayer(d_model, nhead, dim_feedforward, dropout, activation, normalize_before)
        self.layers = nn.ModuleList([copy.deepcopy(layer) for _ in range(num_layers)])
        # 1x1 convs (not Linear) because the official checkpoint stores 4-D kernels.
        self.conv_fuse = nn.Conv2d(in_channels + 1, d_model, 1, 1)
        self.conv_r1 = nn.Sequential(
            nn.Conv2d(d_model, decoder_hidden_dim, 1, 1),
            nn.ReLU(),
            nn.Conv2d(decoder_hidden_dim, 1, 1, 1),
            nn.Sigmoid(),
        )
        # §13: every weight with >= 2 dims is re-initialised Xavier-uniform; biases keep defaults.
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def encode(self, tokens: Tensor, pos: Tensor) -> Tensor:
        """
        Args:
            tokens: (B, L, in_channels + 1) unfused tokens.
            pos: (B, L, d_model) positional encodings.

        Returns:
            (L, B, d_model) encoded tokens.
        """
        # (B, C+1, L, 1) so that conv_fuse is the reference's 1x1 conv on a (L x 1) "image".
        x = self.conv_fuse(tokens.transpose(1, 2).unsqueeze(-1)).squeeze(-1).permute(2, 0, 1)
        pos = pos.transpose(0, 1)
        for layer in self.layers:
            x = layer(x, pos)
        return x

    def decode(self, encoded: Tensor) -> Tensor:
        """(L, B, d_model) -> (B, L) foreground probabilities."""
        return self.conv_r1(encoded.permute(1, 2, 0).unsqueeze(-1))[:, 0, :, 0]

    def forward(self, tokens: Tensor, pos: Tensor) -> Tensor:
        """(B, L, in_channels + 1) tokens and (B, L, d_model) positions -> (B, L) probabilities."""
        return self.decode(self.encode(tokens, pos))
