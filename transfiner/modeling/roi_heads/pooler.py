"""The mask RoI pooler of Mask Transfiner: the RoI feature pyramid (``shared/specs/transfiner.md`` §4).

Besides the ordinary 14x14 RoI features of every box (from the unmodified FPN maps, exactly as stock
Detectron2), it pools the first boxes of the batch at the quadtree resolutions (28, 56, 112), each
from a level one step finer than the previous one, with p2 enhanced by a semantic conv stack.
"""
from typing import List, Sequence, Tuple

from detectron2.layers import ROIAlign
from detectron2.modeling.poolers import ROIPooler, assign_boxes_to_levels, convert_boxes_to_pooler_format
from detectron2.structures import Boxes
from torch import Tensor, nn

from segcommon.layers.roi_pooling import pool_by_level

__all__ = ["TransfinerMaskPooler"]


class TransfinerMaskPooler(ROIPooler):
    """:class:`ROIPooler` that also returns the fine RoI features and the p2 semantic features.

    ``forward`` returns ``(X14, X28, X56, X112, S)``: X14 (N, C, 14, 14) for all N boxes; the fine
    features (n, C, s, s) for the first ``n = min(N, cap)`` boxes of the concatenated box list (cap:
    ``max_rois_train`` in training mode, ``max_rois_test`` otherwise); ``S = conv_norm_relus_semantic
    (p2)`` of shape (B, C, H/4, W/4). The fine features read p2 + S instead of p2.
    """

    def __init__(
        self,
        output_size: int,
        scales: Sequence[float],
        sampling_ratio: int,
        pooler_type: str,
        *,
        in_channels: int = 256,
        refine_sizes: Sequence[int] = (28, 56, 112),
        max_rois_train: int = 30,
        max_rois_test: int = 10,
        semantic_num_conv: int = 4,
        semantic_conv_dim: int = 256,
        canonical_box_size: int = 224,
        canonical_level: int = 4,
    ):
        """
        Args:
            output_size, scales, sampling_ratio, pooler_type, canonical_box_size, canonical_level: as
                :class:`ROIPooler` (the 14x14 pooling); ``pooler_type`` must be ROIAlign or ROIAlignV2.
            in_channels: channels of the FPN maps (also the output channels of the semantic stack,
                which is added to p2).
            refine_sizes: output sizes of the fine poolers; the k-th one reads the level k + 1 steps
                finer than the box's level (clamped at p2).
            max_rois_train, max_rois_test: the cap on the boxes pooled at the fine sizes.
            semantic_num_conv, semantic_conv_dim: the semantic stack's conv3x3 layers (ReLU between
                them, none after the last) and their width.
        """
        super().__init__(output_size, scales, sampling_ratio, pooler_type, canonical_box_size, canonical_level)
        if pooler_type not in ("ROIAlign", "ROIAlignV2"):
            raise ValueError(f"Transfiner's mask pooler needs ROIAlign/ROIAlignV2, got {pooler_type!r}")
        self.refine_sizes = tuple(refine_sizes)
        self.max_rois_train = max_rois_train
        self.max_rois_test = max_rois_test
        layers: List[nn.Module] = []
        channels = in_channels
        for k in range(semantic_num_conv):
            out = in_channels if k == semantic_num_conv - 1 else semantic_conv_dim
            conv = nn.Conv2d(channels, out, 3, 1, 1)
            nn.init.xavier_uniform_(conv.weight)  # biases keep PyTorch's default init (§4.1)
            layers.append(conv)
            if k < semantic_num_conv - 1:
                layers.append(nn.ReLU())
            channels = out
        self.conv_norm_relus_semantic = nn.Sequential(*layers)
        aligned = pooler_type == "ROIAlignV2"
        # Parameter-free; kept out of the module tree as in the reference state dict.
        self._fine_poolers = [
            [ROIAlign((s, s), spatial_scale=scale, sampling_ratio=sampling_ratio, aligned=aligned) for scale in scales]
            for s in self.refine_sizes
        ]

    def forward(self, x: List[Tensor], box_lists: List[Boxes]) -> Tuple[Tensor, ...]:
        """
        Args:
            x: [p2, p3, p4, p5], each (B, C, H_l, W_l).
            box_lists: per image, the boxes (proposal boxes in training, predicted boxes otherwise).

        Returns:
            ``(X14, X28, X56, X112, S)`` (one fine tensor per ``refine_sizes``).
        """
        x14 = super().forward(x, box_lists)
        semantic = self.conv_norm_relus_semantic(x[0])
        # Only this local list sees p2 + S; the feature dict of the other heads is untouched.
        fine_inputs = [x[0] + semantic] + list(x[1:])
        cap = self.max_rois_train if self.training else self.max_rois_test
        boxes = convert_boxes_to_pooler_format(box_lists)[:cap] if box_lists else None
        n, c = (0 if boxes is None else len(boxes)), x[0].shape[1]
        if n == 0:
            fine = [x[0].new_zeros((0, c, s, s)) for s in self.refine_sizes]
            return (x14, *fine, semantic)
        levels = assign_boxes_to_levels(
            box_lists, self.min_level, self.max_level, self.canonical_box_size, self.canonical_level
        )[:cap]
        return (x14, *self.pool_fine(fine_inputs, boxes, levels), semantic)

    def pool_fine(self, fine_inputs: Sequence[Tensor], rois: Tensor, levels: Tensor) -> List[Tensor]:
        """The fine RoI features, one (n, C, s, s) tensor per ``refine_sizes``.

        Args:
            fine_inputs: [p2 + S, p3, p4, p5].
            rois: (n, 5) boxes in pooler format; levels: (n,) their level in the 14x14 pooling.
        """
        fine = []
        for poolers in self._fine_poolers:
            levels = (levels - 1).clamp(min=0)  # one level finer per quadtree level, down to p2
            fine.append(pool_by_level(poolers, fine_inputs, rois, levels))
        return fine
