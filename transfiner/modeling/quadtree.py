"""Quadtree node selection, token construction, training-time node sampling and inference-time
write-back of Mask Transfiner (``shared/specs/transfiner.md`` §7, §8, §11, §12).

Levels are the quadtree resolutions (28, 56, 112): level 0 is the root, and a node (i, j) of level l
has the children (2i..2i+1, 2j..2j+1) at level l + 1. Only the root has an incoherence prediction; the
finer levels threshold its nearest-neighbour upsampling (the reference's single detector).
"""
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "LevelNodes",
    "select_nodes",
    "gather_level_nodes",
    "context_tokens",
    "sample_training_nodes",
    "write_back",
    "binomial_blur",
]


@dataclass
class LevelNodes:
    """The selected nodes of one quadtree level over n RoIs, in row-major (RoI, row, column) order.

    Attributes:
        roi: (K,) int64 RoI index of each node.
        rows, cols: (K,) int64 cell of each node.
        tokens: (K, C + 1) ``[RoI feature, coarse probability]``.
        pos: (K, D) positional encoding of the cell on this level's grid.
        labels: (K,) float GT mask value at the node (training), else None.
    """

    roi: Tensor
    rows: Tensor
    cols: Tensor
    tokens: Tensor
    pos: Tensor
    labels: Optional[Tensor] = None

    def counts(self, num_rois: int) -> List[int]:
        """Number of nodes of each RoI."""
        return torch.bincount(self.roi, minlength=num_rois).tolist()


def select_nodes(
    incoherence: Tensor, sizes: Sequence[int], thresholds: Sequence[float], dilation_kernel: int = 0
) -> List[Tensor]:
    """Quadtree node masks from the root incoherence probabilities (§7).

    Args:
        incoherence: (n, 1, R, R) incoherence probabilities at the root size R = sizes[0].
        sizes: the level sizes (28, 56, 112).
        thresholds: per level, a cell is a node when the (nearest-upsampled) map is >= threshold.
        dilation_kernel: when > 1, the last level's selection is max-dilated with this square kernel
            (cells outside the grid ignored): the reference's demo-only behaviour (§16).

    Returns:
        Per level, (n, s, s) bool.
    """
    incoherence = incoherence.detach()
    out = []
    for k, (s, t) in enumerate(zip(sizes, thresholds)):
        m = incoherence if s == incoherence.shape[-1] else F.interpolate(incoherence, (s, s), mode="nearest")
        sel = m[:, 0] >= t
        if k == len(sizes) - 1 and dilation_kernel > 1 and sel.numel():
            p = dilation_kernel // 2
            sel = F.max_pool2d(sel[:, None].float(), dilation_kernel, 1, p)[:, 0] > 0
        out.append(sel)
    return out


def gather_level_nodes(
    selection: Tensor, features: Tensor, cue: Tensor, pos: Tensor, labels: Optional[Tensor] = None
) -> LevelNodes:
    """Tokens of the selected cells of one level (§8).

    Args:
        selection: (n, s, s) bool node mask.
        features: (n, C, s, s) RoI features at this level.
        cue: (n, s, s) coarse foreground probability at this level (detached).
        pos: (D, s, s) positional encoding of the level's grid.
        labels: (n, s, s) GT masks at this level (training) or None.
    """
    roi, rows, cols = torch.nonzero(selection, as_tuple=True)
    feats = features.permute(0, 2, 3, 1)[roi, rows, cols]
    tokens = torch.cat([feats, cue[roi, rows, cols][:, None].to(feats.dtype)], dim=1)
    return LevelNodes(
        roi=roi,
        rows=rows,
        cols=cols,
        tokens=tokens,
        pos=pos.permute(1, 2, 0)[rows, cols],
        labels=None if labels is None else labels[roi, rows, cols],
    )


def context_tokens(features: Tensor, cue: Tensor, pos: Tensor) -> Tuple[Tensor, Tensor]:
    """The context tokens of every RoI: all cells of the coarse grid, row-major (§8).

    Args:
        features: (n, C, S, S) raw pooled RoI features (X14).
        cue: (n, S, S) coarse probability resized to S x S.
        pos: (D, S, S) positional encoding of the S x S grid.

    Returns:
        tokens (n, S*S, C + 1) and positions (n, S*S, D).
    """
    n = features.shape[0]
    tokens = torch.cat([features.flatten(2), cue.flatten(1)[:, None].to(features.dtype)], dim=1).transpose(1, 2)
    return tokens, pos.flatten(1).t()[None].expand(n, -1, -1)


def sample_training_nodes(
    levels: Sequence[LevelNodes], num_rois: int, num_samples: int = 150, tile: int = 15, min_nodes: int = 10
) -> Tuple[List[int], List[List[Tensor]]]:
    """Training-time node sampling (§11 step 3).

    A RoI with fewer than ``min_nodes`` nodes at any level is invalid. For a valid RoI, every level
    draws ``torch.randperm`` of its nodes (three calls per valid RoI, in RoI order, levels in order:
    the reference's random-number order); fewer than ``num_samples`` nodes are tiled ``tile`` times;
    the first ``num_samples`` entries are kept.

    Returns:
        The valid RoI indices and, per valid RoI, per level, the (num_samples,) int64 indices into that
        level's :class:`LevelNodes` rows.
    """
    counts = [lvl.counts(num_rois) for lvl in levels]
    starts = [[0] + torch.tensor(c).cumsum(0).tolist()[:-1] if c else [] for c in counts]
    valid, picks = [], []
    for i in range(num_rois):
        if any(c[i] < min_nodes for c in counts):
            continue
        per_level = []
        for c, s in zip(counts, starts):
            perm = torch.randperm(c[i])
            if len(perm) < num_samples:
                perm = perm.repeat(tile)
            perm = perm[:num_samples]
            per_level.append(perm.to(levels[0].roi.device) + s[i])
        valid.append(i)
        picks.append(per_level)
    return valid, picks


def write_back(
    coarse: Tensor, selections: Sequence[Tensor], refined: Sequence[Tensor], sizes: Sequence[int]
) -> Tensor:
    """Coarse-to-fine write-back of refined probabilities (§12 step 5).

    R starts as the root-size coarse probabilities; the selected root nodes are overwritten; if any
    RoI has nodes at a middle level, R is upsampled (bilinear, align_corners=True) and overwritten
    there; the last level is always reached by an align_corners=True upsampling, then overwritten.

    Args:
        coarse: (n, 1, R, R) coarse probabilities at the root size.
        selections: per level, (n, s, s) bool node masks.
        refined: per level, the refined probabilities of its nodes in row-major (RoI, row, col) order.
        sizes: the level sizes.

    Returns:
        (n, 1, S, S) probabilities at the last size S.
    """
    r = coarse.clone()
    for k, (sel, val, s) in enumerate(zip(selections, refined, sizes)):
        last = k == len(sizes) - 1
        if r.shape[-1] != s:
            if not last and val.numel() == 0:
                continue  # no RoI has nodes at this middle level: skip the stage entirely
            r = F.interpolate(r, (s, s), mode="bilinear", align_corners=True)
        if val.numel():
            r[:, 0][sel] = val.to(r.dtype)
    return r


def binomial_blur(x: Tensor, kernel_size: int = 7) -> Tensor:
    """Depthwise blur with the normalised binomial kernel (outer product of the binomial row), stride
    1, zero padding: the reference's demo-only smoothing (§16).

    Args:
        x: (n, C, H, W).
    """
    # Binomial coefficients C(kernel_size - 1, i), computed exactly in integers.
    coeffs = [1]
    for _ in range(kernel_size - 1):
        coeffs = [a + b for a, b in zip([0] + coeffs, coeffs + [0])]
    row = torch.tensor(coeffs, dtype=x.dtype, device=x.device)
    kernel = torch.outer(row, row)
    kernel = (kernel / kernel.sum())[None, None].expand(x.shape[1], 1, -1, -1)
    return F.conv2d(x, kernel, padding=(kernel_size - 1) // 2, groups=x.shape[1])
