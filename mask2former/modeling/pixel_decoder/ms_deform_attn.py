"""Multi-scale deformable attention (Zhu et al., "Deformable DETR", ICLR 2021) in pure PyTorch.

The reference repository ships a CUDA kernel and a PyTorch path for CPU. This project's reference
implementation is pure PyTorch (``F.grid_sample`` per level, :func:`ms_deform_attn_core`), correct on
every device, with autograd providing the backward pass; on the CPU a compiled kernel
(``ms_deform_attn_fast.py``, forward and backward, equal within float rounding) is used when it can
be built, and the pure-PyTorch path otherwise. See ``shared/specs/mask2former.md`` section 4.4.

Coordinate convention (shared by :func:`ms_deform_attn_core` and :class:`MSDeformAttn`):
locations are normalised ``(x, y)`` pairs in which ``(0, 0)`` is the top-left *corner* of the
top-left pixel and ``(1, 1)`` the bottom-right corner of the bottom-right pixel of a level, so the
centre of pixel (row ``i``, column ``j``) of an ``H x W`` level is ``((j + 0.5) / W, (i + 0.5) / H)``.
A location is read by bilinear interpolation between the four nearest pixel centres, i.e. at the
continuous pixel coordinate ``(x * W - 0.5, y * H - 0.5)``; neighbours that fall outside the map
contribute zero. This is ``F.grid_sample(..., mode="bilinear", padding_mode="zeros",
align_corners=False)`` on the grid ``2 * location - 1``, the convention of the reference kernel.
"""
import math
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.init import constant_, xavier_uniform_

from .ms_deform_attn_fast import fast_path_available, ms_deform_attn_fast

__all__ = ["ms_deform_attn_core", "MSDeformAttn"]


def _use_fast_path(value: torch.Tensor) -> bool:
    """The compiled CPU kernel serves CPU float tensors in eager mode; tracing, scripting and
    export (ONNX, torch.export) see the pure-PyTorch path, which is built from standard operators."""
    if value.device.type != "cpu" or value.dtype not in (torch.float32, torch.float64):
        return False
    if torch.jit.is_scripting() or torch.jit.is_tracing() or torch.compiler.is_compiling():
        return False
    if torch.onnx.is_in_onnx_export():
        return False
    return fast_path_available()


def level_shapes(spatial_shapes: Union[torch.Tensor, Sequence[Sequence[int]]]) -> List[Tuple[int, int]]:
    """(L, 2) tensor or sequence of (H_l, W_l) -> list of (H_l, W_l) pairs (grid_sample needs ints).

    A sequence passes through unchanged, so symbolic sizes (``torch.export`` with dynamic height and
    width) stay symbolic; reading a tensor's values would fix them to the traced image's size."""
    if isinstance(spatial_shapes, torch.Tensor):
        return [(int(h), int(w)) for h, w in spatial_shapes.tolist()]
    return [(h, w) for h, w in spatial_shapes]


def ms_deform_attn_core(
    value: torch.Tensor,
    spatial_shapes: Union[torch.Tensor, Sequence[Sequence[int]]],
    level_start_index: Union[torch.Tensor, Sequence[int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """The sampling-and-weighting core of multi-scale deformable attention.

    ``out[b, q, m*D + d] = sum_{l, p} attention_weights[b, q, m, l, p]
    * bilinear(value level l, head m, channel d; sampling_locations[b, q, m, l, p])``,
    with the coordinate convention of the module docstring (zero outside the map).
    Differentiable with respect to ``value``, ``sampling_locations`` and ``attention_weights``.

    Args:
        value: (B, S, M, D) per-head values of all levels, flattened level after level, each level
            row-major (token ``start_l + i * W_l + j`` is pixel (i, j) of level l). S = sum H_l*W_l.
        spatial_shapes: (L, 2) integer (H_l, W_l) per level (a long tensor or a sequence).
        level_start_index: (L,) index in S of the first token of each level.
        sampling_locations: (B, Q, M, L, P, 2) normalised (x, y) locations, nominally in [0, 1];
            values outside are allowed and read zeros beyond the border.
        attention_weights: (B, Q, M, L, P) weights (the module passes a softmax over L*P).

    Returns:
        (B, Q, M*D) tensor, head-major along the last dim (head m owns channels m*D .. m*D+D-1).
    """
    B, S, M, D = value.shape
    if sampling_locations.dim() != 6 or sampling_locations.shape[-1] != 2:
        raise ValueError(f"sampling_locations must be (B, Q, M, L, P, 2), got {tuple(sampling_locations.shape)}")
    _, Q, _, L, P, _ = sampling_locations.shape
    if sampling_locations.shape[:3] != (B, Q, M):
        raise ValueError(
            f"sampling_locations {tuple(sampling_locations.shape)} does not match value {tuple(value.shape)}"
        )
    if attention_weights.shape != (B, Q, M, L, P):
        raise ValueError(
            f"attention_weights must be {(B, Q, M, L, P)}, got {tuple(attention_weights.shape)}"
        )
    shapes = level_shapes(spatial_shapes)
    starts = level_start_index.tolist() if isinstance(level_start_index, torch.Tensor) else list(level_start_index)
    if L == 0:
        raise ValueError("ms_deform_attn_core needs at least one level")
    if len(shapes) != L or len(starts) != L:
        raise ValueError(
            f"{L} levels in sampling_locations but {len(shapes)} spatial shapes / {len(starts)} start indices"
        )
    sizes = [h * w for h, w in shapes]
    if sum(sizes) != S:
        raise ValueError(f"value has {S} tokens but the spatial shapes {shapes} add up to {sum(sizes)}")
    if starts != [sum(sizes[:i]) for i in range(L)]:
        raise ValueError(f"level_start_index {starts} is not the running sum of the level sizes {sizes}")

    # grid_sample's normalised grid is [-1, 1] with align_corners=False <=> our [0, 1] corner convention.
    grids = 2 * sampling_locations - 1
    out: Optional[torch.Tensor] = None
    for lvl, ((H, W), start) in enumerate(zip(shapes, starts)):
        # (B, H*W, M, D) -> (B, M, D, H*W) -> (B*M, D, H, W): one image per (batch, head).
        value_l = value[:, start:start + H * W].permute(0, 2, 3, 1).reshape(B * M, D, H, W)
        # (B, Q, M, P, 2) -> (B, M, Q, P, 2) -> (B*M, Q, P, 2): a Q x P "image" of locations.
        grid_l = grids[:, :, :, lvl].transpose(1, 2).reshape(B * M, Q, P, 2)
        sampled_l = F.grid_sample(
            value_l, grid_l, mode="bilinear", padding_mode="zeros", align_corners=False
        )  # (B*M, D, Q, P)
        weight_l = attention_weights[:, :, :, lvl].transpose(1, 2).reshape(B * M, 1, Q, P)
        # Reduced level by level rather than stacking all levels first: saves one (B*M, D, Q, L*P) copy.
        contrib = (sampled_l * weight_l).sum(-1)  # (B*M, D, Q)
        out = contrib if out is None else out + contrib
    return out.view(B, M * D, Q).transpose(1, 2).contiguous()


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention module.

    Each query attends, per head and per level, to ``n_points`` locations predicted from the query as
    offsets (in pixels of that level) around a reference point, with softmax weights over all
    ``n_levels * n_points`` samples of the head. Parameter names and shapes follow the reference so
    that official checkpoints load:

    * ``sampling_offsets``: Linear(d_model -> n_heads * n_levels * n_points * 2), output index
      ``((m * L + l) * P + p) * 2 + t`` with t = 0 for x, 1 for y;
    * ``attention_weights``: Linear(d_model -> n_heads * n_levels * n_points), index ``(m * L + l) * P + p``;
    * ``value_proj``, ``output_proj``: Linear(d_model -> d_model).
    """

    def __init__(self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4):
        """
        Args:
            d_model: channels of queries, values and output; must be divisible by ``n_heads``.
            n_levels: number of feature levels sampled.
            n_heads: attention heads (each owns ``d_model // n_heads`` value channels).
            n_points: sampling points per head and level.
        """
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.d_model = d_model
        self.n_levels = n_levels
        self.n_heads = n_heads
        self.n_points = n_points

        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)

        self._reset_parameters()

    def _reset_parameters(self) -> None:
        """The reference initialisation (spec 4.4).

        Offsets start query-independent (zero weight) with head m's points spread along the direction
        at angle 2*pi*m/M, scaled so the larger coordinate is 1, point p at distance (p + 1) of that
        unit step, identically on every level; attention starts uniform (zero weight and bias).
        Named with a leading underscore like the reference, whose encoder calls it after its own
        Xavier pass over all matrices.
        """
        constant_(self.sampling_offsets.weight, 0.0)
        # Computed in float32 with the reference's operation order so that the bias matches it
        # bit for bit (e.g. head 5 gets -0.99999964, not -1).
        thetas = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)  # (M, 2)
        grid = grid / grid.abs().max(-1, keepdim=True)[0]
        grid = grid.view(self.n_heads, 1, 1, 2).repeat(1, self.n_levels, self.n_points, 1)
        for p in range(self.n_points):
            grid[:, :, p, :] *= p + 1
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.view(-1))
        constant_(self.attention_weights.weight, 0.0)
        constant_(self.attention_weights.bias, 0.0)
        xavier_uniform_(self.value_proj.weight)
        constant_(self.value_proj.bias, 0.0)
        xavier_uniform_(self.output_proj.weight)
        constant_(self.output_proj.bias, 0.0)

    def forward(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        input_flatten: torch.Tensor,
        input_spatial_shapes: torch.Tensor,
        input_level_start_index: torch.Tensor,
        input_padding_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """
        Args:
            query: (B, Lq, d_model).
            reference_points: (B, Lq, n_levels, 2) normalised (x, y) in [0, 1] (module docstring
                convention), or (B, Lq, n_levels, 4) boxes (cx, cy, w, h), in which case offsets are
                relative to the box size (``offset / n_points * wh / 2``) instead of in pixels.
            input_flatten: (B, S, d_model) values of all levels, flattened level after level, each
                row-major; S = sum_l H_l * W_l.
            input_spatial_shapes: (n_levels, 2) long, (H_l, W_l), or a sequence of (H_l, W_l) pairs
                (what the encoder passes, so that export keeps the sizes symbolic).
            input_level_start_index: (n_levels,) long, first token of each level in S (or a sequence).
            input_padding_mask: optional (B, S) bool, True at padded tokens (their values become 0).
                Mask2Former never passes one.

        Returns:
            (B, Lq, d_model).
        """
        B, Lq, _ = query.shape
        _, S, _ = input_flatten.shape
        M, L, P = self.n_heads, self.n_levels, self.n_points

        value = self.value_proj(input_flatten)
        if input_padding_mask is not None:
            value = value.masked_fill(input_padding_mask[..., None], 0.0)
        value = value.view(B, S, M, self.d_model // M)

        offsets = self.sampling_offsets(query).view(B, Lq, M, L, P, 2)
        # Softmax jointly over all levels and points of a head.
        weights = self.attention_weights(query).view(B, Lq, M, L * P).softmax(-1).view(B, Lq, M, L, P)

        if reference_points.shape[-1] == 2:
            # Offsets are in pixels of each level: divide x by W_l and y by H_l.
            if isinstance(input_spatial_shapes, torch.Tensor):
                normalizer = torch.stack([input_spatial_shapes[..., 1], input_spatial_shapes[..., 0]], -1)
            else:
                normalizer = torch.tensor(
                    [[w, h] for h, w in input_spatial_shapes], dtype=offsets.dtype, device=offsets.device
                )
            locations = (
                reference_points[:, :, None, :, None, :]
                + offsets / normalizer[None, None, None, :, None, :]
            )
        elif reference_points.shape[-1] == 4:
            locations = (
                reference_points[:, :, None, :, None, :2]
                + offsets / P * reference_points[:, :, None, :, None, 2:] * 0.5
            )
        else:
            raise ValueError(
                f"reference_points must end in 2 (points) or 4 (boxes), got {tuple(reference_points.shape)}"
            )
        if _use_fast_path(value):
            out = ms_deform_attn_fast(value, input_spatial_shapes, input_level_start_index, locations, weights)
        else:
            out = ms_deform_attn_core(value, input_spatial_shapes, input_level_start_index, locations, weights)
        return self.output_proj(out)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, n_levels={self.n_levels}, n_heads={self.n_heads}, n_points={self.n_points}"
