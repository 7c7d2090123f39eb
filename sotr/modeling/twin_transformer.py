"""The twin transformer of SOTR (the "hybrid twin" design of the paper), as the official code runs it.

One layer is two residual sub-blocks, each the *sum* of two gated branches that read the same input::

    x = x + g1 * ColumnAttention(x) + g2 * RowAttention(x)
    x = x + g3 * ConvFF1(x)         + g4 * ConvFF2(x)

The gates ``g`` are 0-dim parameters initialised to 0 (ReZero), so a fresh transformer is exactly the
identity. There is no LayerNorm, no positional embedding and no dropout. Before the layers the map is
concatenated with itself along the width; after them the two halves are averaged (see
``shared/specs/sotr.md`` §5.6: the halves diverge at the seam, and released checkpoints were trained
this way).

Module names reproduce the official state-dict keys (``layers.blocks.<k>.<b>.fn.g`` ...; §5.7).
"""
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["TwinTransformer", "AxialSelfAttention"]


class ScalarGate(nn.Module):
    """``fn(x) * g`` with a learnable 0-dim gate ``g`` initialised to 0 (ReZero)."""

    def __init__(self, fn: nn.Module):
        super().__init__()
        self.fn = fn
        # 0-dim, not [1]: official checkpoints store the gates with shape [].
        self.g = nn.Parameter(torch.tensor(0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x) * self.g


class MultiHeadSelfAttention(nn.Module):
    """Plain multi-head self-attention over token sequences (B, L, C): no mask, no dropout.

    ``to_kv`` packs K (first ``dim`` outputs) and V (last ``dim``) in one bias-free projection; head h
    uses channels ``h*e ... (h+1)*e - 1`` of Q, K and V (e = dim / heads).
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.head_dim = dim // heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_kv = nn.Linear(dim, 2 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L, C) -> (B, L, C)."""
        b, length, c = tokens.shape
        q = self.to_q(tokens)
        k, v = self.to_kv(tokens).chunk(2, dim=-1)
        # (B, L, C) -> (B, heads, L, e)
        q, k, v = (t.reshape(b, length, self.heads, self.head_dim).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, scale=self.head_dim ** -0.5)
        return self.to_out(out.transpose(1, 2).reshape(b, length, c))


class AxialSelfAttention(nn.Module):
    """Gated self-attention along one spatial axis of an (N, C, H, W) map.

    ``axis=2`` ("column attention"): each column of H pixels is a sequence (N*W sequences).
    ``axis=3`` ("row attention"): each row of W pixels is a sequence (N*H sequences).
    """

    def __init__(self, dim: int, heads: int, axis: int):
        super().__init__()
        if axis not in (2, 3):
            raise ValueError(f"axis must be 2 (height) or 3 (width), got {axis}")
        self.axis = axis
        # Official name chain: <block>.fn (ReZero gate) .fn (attention).
        self.fn = ScalarGate(MultiHeadSelfAttention(dim, heads))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, C, H, W)."""
        # Move the attended axis next to the channels: (N, other, L, C).
        perm = (0, 3, 2, 1) if self.axis == 2 else (0, 2, 3, 1)
        y = x.permute(*perm)
        shape = y.shape
        y = self.fn(y.reshape(-1, shape[-2], shape[-1])).reshape(shape)
        # (0, 3, 2, 1) is its own inverse; (0, 2, 3, 1) is undone by (0, 3, 1, 2).
        inv = (0, 3, 2, 1) if self.axis == 2 else (0, 3, 1, 2)
        return y.permute(*inv)


def _conv_feed_forward(dim: int, slope: float) -> nn.Sequential:
    # Indices 0 and 2 hold the convs (official keys "fn.0.*", "fn.2.*").
    return nn.Sequential(
        nn.Conv2d(dim, dim, 3, padding=1),
        nn.LeakyReLU(slope),
        nn.Conv2d(dim, dim, 3, padding=1),
    )


class ParallelResidualStack(nn.Module):
    """Applies ``x = x + f(x) + g(x)`` for every pair ``(f, g)`` in ``blocks``, in order."""

    def __init__(self, blocks: Sequence[nn.ModuleList]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for f, g in self.blocks:
            x = x + f(x) + g(x)
        return x


class TwinTransformer(nn.Module):
    """SOTR's twin transformer: (N, C, H, W) -> (N, C, H, W), any H and W.

    ``layers.blocks`` holds ``2 * depth`` pairs: even k = (column attention, row attention) of layer
    k / 2, odd k = its two convolutional feed-forward branches.
    """

    def __init__(
        self,
        dim: int = 256,
        depth: int = 12,
        heads: int = 8,
        leaky_relu_slope: float = 0.01,
        duplicate_width: bool = True,
    ):
        """
        Args:
            dim: token width (the channels of the input map).
            depth: number of layers.
            heads: attention heads of both axial attentions (head width ``dim / heads``).
            leaky_relu_slope: negative slope inside the feed-forward branches.
            duplicate_width: concatenate the input with itself along the width and average the two
                halves at the end, as the official model does. False skips it (not checkpoint-exact).
        """
        super().__init__()
        self.duplicate_width = duplicate_width
        blocks = []
        for _ in range(depth):
            # Column attention (along the height), then row attention (along the width).
            blocks.append(nn.ModuleList([AxialSelfAttention(dim, heads, axis=a) for a in (2, 3)]))
            blocks.append(
                nn.ModuleList([ScalarGate(_conv_feed_forward(dim, leaky_relu_slope)) for _ in range(2)])
            )
        self.layers = ParallelResidualStack(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.duplicate_width:
            return self.layers(x)
        w = x.shape[-1]
        y = self.layers(torch.cat((x, x), dim=-1))
        return (y[..., :w] + y[..., w:]) / 2
