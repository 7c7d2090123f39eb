"""``TransfinerMaskHead``: Mask R-CNN's coarse mask head plus Mask Transfiner's incoherence detector,
boundary and semantic training branches and the quadtree transformer refinement
(``shared/specs/transfiner.md`` §5, §8, §10-§13). Attribute names are the official checkpoint's.
"""
from typing import Dict, List, Sequence, Tuple

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d, ConvTranspose2d, ShapeSpec, cat, get_norm
from detectron2.modeling.roi_heads.mask_head import ROI_MASK_HEAD_REGISTRY, BaseMaskRCNNHead, mask_rcnn_loss
from detectron2.structures import Instances
from torch import Tensor, nn

from ..encoder import NodeEncoder, sine_position_encoding
from ..losses import boundary_loss, incoherence_loss, refinement_loss, semantic_loss
from ..quadtree import (
    binomial_blur,
    context_tokens,
    gather_level_nodes,
    sample_training_nodes,
    select_nodes,
    write_back,
)
from ..targets import build_targets

__all__ = ["TransfinerMaskHead"]


@ROI_MASK_HEAD_REGISTRY.register()
class TransfinerMaskHead(BaseMaskRCNNHead):
    """Mask Transfiner's mask head.

    Input: the :class:`TransfinerMaskPooler` tuple ``(X14, X28, X56, X112, S)`` (X14 (N, C, 14, 14)
    for every RoI, the fine features for the first n RoIs, S (B, C, H/4, W/4)).

    * Coarse branch (stock Mask R-CNN): ``mask_fcn1..4`` -> F (N, D, 14, 14) -> ``deconv`` + ReLU ->
      ``predictor`` -> coarse logits (N, K, 28, 28).
    * Incoherence detector on ``detach(X14) + F``: ``mask_fcn_uncertain1..4`` -> ``deconv_uncertain``
      (no ReLU) -> ``predictor_uncertain`` -> sigmoid (N, 1, 28, 28).
    * Training only: boundary logits ``predictor_bo(relu(deconv_bo(F)))`` (N, 1, 28, 28) and semantic
      logits ``predictor_semantic_s(S)`` (B, 1, H/4, W/4).
    * Refinement of the first n RoIs: quadtree nodes selected from the incoherence map, tokens
      ``[feature, coarse probability]`` + sine positions, ``encoder`` -> one probability per token.

    Output: in training the loss dict (``loss_mask``, ``loss_mask_uncertain``, ``loss_mask_refine``,
    ``loss_semantic``, ``loss_bound``); in inference ``pred_masks`` (N_i, 1, 112, 112) probabilities set
    on each image's instances (pasted into the image at threshold 0.5 by the stock post-processing).
    """

    @configurable
    def __init__(
        self,
        input_shape: ShapeSpec,
        *,
        num_classes: int,
        conv_dims: Sequence[int],
        conv_norm: str = "",
        incoherence_conv_dims: Sequence[int] = (256, 256, 256, 128),
        incoherence_deconv_dim: int = 128,
        encoder: Dict,
        pos_encoding: Dict,
        refine_sizes: Sequence[int] = (28, 56, 112),
        max_refine_rois_train: int = 30,
        max_refine_rois_test: int = 10,
        node_thresholds_train: Sequence[float] = (0.125, 0.5, 0.5),
        node_thresholds_test: Sequence[float] = (1e-6, 0.125, 0.8),
        nodes_per_level_train: int = 150,
        node_tile_factor: int = 15,
        min_nodes_per_level_train: int = 10,
        incoherence_gt: Dict,
        loss_weights: Dict[str, float],
        demo_smoothing: bool = False,
        demo_dilation_kernel: int = 3,
        demo_blur_kernel: int = 7,
        **kwargs,
    ):
        """
        Args:
            input_shape: the pooled RoI features (channels C, 14 x 14).
            num_classes: mask classes K (1 if class-agnostic).
            conv_dims: widths of the coarse convs, the last one being the deconv width; the convs must
                keep C channels because the incoherence branch reads ``detach(X14) + F``.
            conv_norm: norm of the coarse and incoherence convs (the reference: none).
            incoherence_conv_dims, incoherence_deconv_dim: incoherence detector widths.
            encoder: kwargs of :class:`NodeEncoder`.
            pos_encoding: ``num_feats``, ``temperature``, ``scale``, ``one_based`` of the positions.
            refine_sizes: quadtree level sizes; the first must be the coarse mask size 2 x 14.
            max_refine_rois_train/test: refinement caps (must equal the pooler's).
            node_thresholds_train/test: per-level node thresholds.
            nodes_per_level_train, node_tile_factor, min_nodes_per_level_train: training sampling.
            incoherence_gt: ``downscale``, ``residue_thresh``, ``roi_thresh``, ``abs_residue``.
            loss_weights: ``mask``, ``incoherence``, ``refine``, ``semantic``, ``boundary``.
            demo_smoothing: the reference demo's 112-level dilation and binomial blur (§16).
            demo_dilation_kernel, demo_blur_kernel: their kernel sizes.
            kwargs: ``vis_period`` (and ``loss_weight``) of :class:`BaseMaskRCNNHead`.
        """
        super().__init__(**kwargs)
        channels = input_shape.channels
        self.context_size = input_shape.height
        self.refine_sizes = tuple(refine_sizes)
        if self.refine_sizes[0] != 2 * self.context_size:
            raise ValueError(f"REFINE_RESOLUTIONS[0] must be 2 x {self.context_size}, got {refine_sizes}")
        if any(b != 2 * a for a, b in zip(self.refine_sizes, self.refine_sizes[1:])):
            raise ValueError(f"each REFINE_RESOLUTIONS entry must double the previous one: {refine_sizes}")
        if conv_dims[-2] != channels:
            raise ValueError("the incoherence branch adds F to X14: ROI_MASK_HEAD.CONV_DIM must equal "
                             f"the FPN channels ({conv_dims[-2]} vs {channels})")

        # Registration order = the official state-dict order (§5.6).
        self.conv_norm_relus: List[nn.Module] = []
        cur = channels
        for k, dim in enumerate(conv_dims[:-1]):
            conv = Conv2d(cur, dim, 3, 1, 1, bias=not conv_norm, norm=get_norm(conv_norm, dim), activation=nn.ReLU())
            self.add_module(f"mask_fcn{k + 1}", conv)
            self.conv_norm_relus.append(conv)
            cur = dim
        self.deconv = ConvTranspose2d(cur, conv_dims[-1], kernel_size=2, stride=2, padding=0)
        self.deconv_bo = ConvTranspose2d(cur, conv_dims[-1], kernel_size=2, stride=2, padding=0)
        self.add_module("deconv_relu", nn.ReLU())
        self.predictor = Conv2d(conv_dims[-1], num_classes, kernel_size=1)
        self.predictor_bo = Conv2d(conv_dims[-1], 1, kernel_size=1)
        self.encoder = NodeEncoder(in_channels=channels, **encoder)
        self.conv_norm_relus_uncertain: List[nn.Module] = []
        cur = channels
        for k, dim in enumerate(incoherence_conv_dims):
            conv = Conv2d(cur, dim, 3, 1, 1, bias=not conv_norm, norm=get_norm(conv_norm, dim), activation=nn.ReLU())
            self.add_module(f"mask_fcn_uncertain{k + 1}", conv)
            self.conv_norm_relus_uncertain.append(conv)
            cur = dim
        self.deconv_uncertain = ConvTranspose2d(cur, incoherence_deconv_dim, kernel_size=2, stride=2, padding=0)
        self.predictor_uncertain = Conv2d(incoherence_deconv_dim, 1, kernel_size=1)
        self.predictor_semantic_s = Conv2d(channels, 1, kernel_size=1)  # PyTorch default init (§13)

        for layer in self.conv_norm_relus + [self.deconv, self.deconv_bo] + self.conv_norm_relus_uncertain + [
            self.deconv_uncertain
        ]:
            weight_init.c2_msra_fill(layer)
        for layer in (self.predictor, self.predictor_uncertain, self.predictor_bo):
            nn.init.normal_(layer.weight, std=0.001)
            nn.init.constant_(layer.bias, 0)

        self.pos_encoding = dict(pos_encoding)
        self.max_refine_rois_train = max_refine_rois_train
        self.max_refine_rois_test = max_refine_rois_test
        self.node_thresholds_train = tuple(node_thresholds_train)
        self.node_thresholds_test = tuple(node_thresholds_test)
        self.nodes_per_level_train = nodes_per_level_train
        self.node_tile_factor = node_tile_factor
        self.min_nodes_per_level_train = min_nodes_per_level_train
        self.incoherence_gt = dict(incoherence_gt)
        self.loss_weights = dict(loss_weights)
        self.demo_smoothing = demo_smoothing
        self.demo_dilation_kernel = demo_dilation_kernel
        self.demo_blur_kernel = demo_blur_kernel

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        t = cfg.MODEL.TRANSFINER
        ret.update(
            input_shape=input_shape,
            num_classes=1 if cfg.MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK else cfg.MODEL.ROI_HEADS.NUM_CLASSES,
            conv_dims=[cfg.MODEL.ROI_MASK_HEAD.CONV_DIM] * (cfg.MODEL.ROI_MASK_HEAD.NUM_CONV + 1),
            conv_norm=cfg.MODEL.ROI_MASK_HEAD.NORM,
            incoherence_conv_dims=list(t.INCOHERENCE_CONV_DIMS),
            incoherence_deconv_dim=t.INCOHERENCE_DECONV_DIM,
            encoder=dict(
                d_model=t.HIDDEN_DIM,
                nhead=t.NHEADS,
                num_layers=t.ENC_LAYERS,
                dim_feedforward=t.DIM_FEEDFORWARD,
                dropout=t.DROPOUT,
                activation=t.ACTIVATION,
                normalize_before=t.PRE_NORM,
                decoder_hidden_dim=t.DECODER_HIDDEN_DIM,
            ),
            pos_encoding=dict(
                num_feats=t.POS_NUM_FEATS, temperature=t.POS_TEMPERATURE, scale=t.POS_SCALE, one_based=t.POS_ONE_BASED
            ),
            refine_sizes=list(t.REFINE_RESOLUTIONS),
            max_refine_rois_train=t.MAX_REFINE_ROIS_TRAIN,
            max_refine_rois_test=t.MAX_REFINE_ROIS_TEST,
            node_thresholds_train=list(t.NODE_THRESHOLDS_TRAIN),
            node_thresholds_test=list(t.NODE_THRESHOLDS_TEST),
            nodes_per_level_train=t.NODES_PER_LEVEL_TRAIN,
            node_tile_factor=t.NODE_TILE_FACTOR,
            min_nodes_per_level_train=t.MIN_NODES_PER_LEVEL_TRAIN,
            incoherence_gt=dict(
                downscale=t.INCOHERENCE_DOWNSCALE,
                residue_thresh=t.INCOHERENCE_RESIDUE_THRESH,
                roi_thresh=t.INCOHERENCE_ROI_THRESH,
                abs_residue=t.INCOHERENCE_ABS_RESIDUE,
            ),
            loss_weights=dict(
                mask=t.LOSS_MASK_WEIGHT,
                incoherence=t.LOSS_INCOHERENCE_WEIGHT,
                refine=t.LOSS_REFINE_WEIGHT,
                semantic=t.LOSS_SEMANTIC_WEIGHT,
                boundary=t.LOSS_BOUNDARY_WEIGHT,
            ),
            demo_smoothing=t.DEMO_SMOOTHING,
            demo_dilation_kernel=t.DEMO_DILATION_KERNEL,
            demo_blur_kernel=t.DEMO_BLUR_KERNEL,
        )
        if 2 * t.POS_NUM_FEATS != t.HIDDEN_DIM:
            raise ValueError("MODEL.TRANSFINER.POS_NUM_FEATS must be HIDDEN_DIM / 2")
        return ret

    # ------------------------------------------------------------------------------------------------
    # Network

    def coarse_layers(self, x14: Tensor) -> Tuple[Tensor, Tensor]:
        """Stock Mask R-CNN trunk: X14 (N, C, 14, 14) -> (F (N, D, 14, 14), coarse logits (N, K, 28, 28))."""
        f = x14
        for layer in self.conv_norm_relus:
            f = layer(f)
        return f, self.predictor(F.relu(self.deconv(f)))

    def incoherence_layers(self, x14: Tensor, f: Tensor) -> Tensor:
        """Incoherence logits (N, 1, 28, 28) from ``detach(X14) + F`` (its loss trains mask_fcn*)."""
        y = x14.detach() + f
        for layer in self.conv_norm_relus_uncertain:
            y = layer(y)
        return self.predictor_uncertain(self.deconv_uncertain(y))

    def _positions(self, size: int, device: torch.device) -> Tensor:
        return sine_position_encoding(size, size, device=device, **self.pos_encoding)

    def _level_inputs(self, coarse_probs: Tensor, fine: Sequence[Tensor]):
        """Per quadtree level: the coarse cue at that size (bilinear, align_corners=False, from the
        root probabilities) and the level's positions."""
        cues, positions = [], []
        for s, x in zip(self.refine_sizes, fine):
            cue = coarse_probs if s == coarse_probs.shape[-1] else F.interpolate(
                coarse_probs, (s, s), mode="bilinear", align_corners=False)
            cues.append(cue[:, 0])
            positions.append(self._positions(s, x.device))
        return cues, positions

    def _context(self, x14: Tensor, coarse_probs: Tensor) -> Tuple[Tensor, Tensor]:
        """Context tokens (n, 196, C + 1) and positions (n, 196, D) of the first n RoIs."""
        s = self.context_size
        cue = F.interpolate(coarse_probs, (s, s), mode="bilinear", align_corners=False)[:, 0]
        return context_tokens(x14, cue, self._positions(s, x14.device))

    # ------------------------------------------------------------------------------------------------
    # Forward

    def forward(self, x: Tuple[Tensor, ...], instances: List[Instances]):
        """
        Args:
            x: ``(X14, X28, X56, X112, S)`` from :class:`TransfinerMaskPooler`.
            instances: per image, the foreground proposals (training) or the detections (inference).
        """
        x14, *fine, semantic_feats = x
        f, coarse = self.coarse_layers(x14)
        incoherence_logits = self.incoherence_layers(x14, f)
        if self.training:
            boundary = self.predictor_bo(F.relu(self.deconv_bo(f)))
            semantic = self.predictor_semantic_s(semantic_feats)
            return self.losses(coarse, incoherence_logits, boundary, semantic, x14, fine, instances)
        self.inference(coarse, incoherence_logits.sigmoid(), x14, fine, instances)
        return instances

    def losses(
        self,
        coarse: Tensor,
        incoherence_logits: Tensor,
        boundary: Tensor,
        semantic: Tensor,
        x14: Tensor,
        fine: Sequence[Tensor],
        instances: List[Instances],
    ) -> Dict[str, Tensor]:
        """The five mask-branch losses (§10, §11)."""
        w = self.loss_weights
        n_total = coarse.shape[0]
        if n_total == 0:
            # Reference crash §18.8: zero losses that still touch every trained output.
            zero = sum(t.sum() for t in (coarse, incoherence_logits, boundary, semantic)) * 0.0
            zero = zero + sum(p.sum() for p in self.encoder.parameters()) * 0.0
            return {k: zero for k in ("loss_mask", "loss_mask_uncertain", "loss_mask_refine",
                                      "loss_semantic", "loss_bound")}

        sizes = (self.context_size, *self.refine_sizes)
        targets = build_targets(
            instances, sizes, self.refine_sizes[0], semantic.shape[-2:], **self.incoherence_gt
        )
        # Stock Mask R-CNN loss (GT-class logits, BCE mean) plus its mask_rcnn/* training events.
        loss_mask = mask_rcnn_loss(coarse, instances, self.vis_period) * self.loss_weight
        incoherence_probs = incoherence_logits.sigmoid()
        loss_incoherence = incoherence_loss(incoherence_logits[:, 0], incoherence_probs[:, 0], targets.incoherence)
        loss_semantic = semantic_loss(semantic, targets.semantic)
        loss_bound = boundary_loss(boundary[:, 0], targets.boundary)

        # Refinement of the first n RoIs.
        n = fine[0].shape[0]
        if coarse.shape[1] == 1:
            logits = coarse[:n, 0]
        else:
            logits = coarse[torch.arange(n, device=coarse.device), targets.gt_classes[:n]]
        coarse_probs = logits.detach().sigmoid()[:, None]
        selections = select_nodes(incoherence_probs[:n], self.refine_sizes, self.node_thresholds_train)
        cues, positions = self._level_inputs(coarse_probs, fine)
        levels = [
            gather_level_nodes(sel, feats, cue, pos, labels[:n])
            for sel, feats, cue, pos, labels in zip(selections, fine, cues, positions, targets.masks[1:])
        ]
        ctx_tokens, ctx_pos = self._context(x14[:n], coarse_probs)
        ctx_labels = targets.masks[0][:n].flatten(1)
        valid, picks = sample_training_nodes(
            levels, n, self.nodes_per_level_train, self.node_tile_factor, self.min_nodes_per_level_train
        )
        if valid:
            tokens, pos, labels = [], [], []
            for i, per_level in zip(valid, picks):
                tokens.append(torch.cat([ctx_tokens[i]] + [lvl.tokens[p] for lvl, p in zip(levels, per_level)]))
                pos.append(torch.cat([ctx_pos[i]] + [lvl.pos[p] for lvl, p in zip(levels, per_level)]))
                labels.append(torch.cat([ctx_labels[i]] + [lvl.labels[p] for lvl, p in zip(levels, per_level)]))
            refined = self.encoder(torch.stack(tokens), torch.stack(pos))
            loss_refine = refinement_loss(refined, torch.stack(labels))
        else:
            # No valid RoI: the context tokens of all n RoIs against the 14x14 GT (§11 step 6).
            loss_refine = refinement_loss(self.encoder(ctx_tokens, ctx_pos), ctx_labels)

        return {
            "loss_mask": loss_mask * w["mask"],
            "loss_mask_uncertain": loss_incoherence * self.loss_weight * w["incoherence"],
            "loss_mask_refine": loss_refine * w["refine"],
            "loss_semantic": loss_semantic * w["semantic"],
            "loss_bound": loss_bound * w["boundary"],
        }

    @torch.no_grad()
    def refine(self, coarse_probs: Tensor, incoherence: Tensor, x14: Tensor, fine: Sequence[Tensor]) -> Tensor:
        """Inference refinement of n RoIs (§12 steps 3-5).

        Args:
            coarse_probs: (n, 1, 28, 28) predicted-class coarse probabilities.
            incoherence: (n, 1, 28, 28) incoherence probabilities.
            x14: (n, C, 14, 14) raw pooled features; fine: the n RoIs' features at 28/56/112.

        Returns:
            (n, 1, 112, 112) probabilities.
        """
        n = coarse_probs.shape[0]
        dilation = self.demo_dilation_kernel if self.demo_smoothing else 0
        selections = select_nodes(incoherence, self.refine_sizes, self.node_thresholds_test, dilation)
        cues, positions = self._level_inputs(coarse_probs, fine)
        levels = [gather_level_nodes(*args) for args in zip(selections, fine, cues, positions)]
        ctx_tokens, ctx_pos = self._context(x14, coarse_probs)
        counts = [lvl.counts(n) for lvl in levels]
        chunks = [list(torch.split(lvl.tokens, c)) for lvl, c in zip(levels, counts)]
        pos_chunks = [list(torch.split(lvl.pos, c)) for lvl, c in zip(levels, counts)]
        outputs: List[List[Tensor]] = [[] for _ in levels]
        num_ctx = ctx_tokens.shape[1]
        # One variable-length sequence per RoI (batch 1), as the reference.
        for i in range(n):
            tokens = torch.cat([ctx_tokens[i]] + [c[i] for c in chunks])[None]
            pos = torch.cat([ctx_pos[i]] + [c[i] for c in pos_chunks])[None]
            out = self.encoder(tokens, pos)[0, num_ctx:]
            for k, part in enumerate(torch.split(out, [c[i] for c in counts])):
                outputs[k].append(part)
        refined = [torch.cat(o) if o else coarse_probs.new_zeros((0,)) for o in outputs]
        r = write_back(coarse_probs, selections, refined, self.refine_sizes)
        if self.demo_smoothing and n > 0:
            r = binomial_blur(r, self.demo_blur_kernel)
        return r

    def inference(
        self, coarse: Tensor, incoherence: Tensor, x14: Tensor, fine: Sequence[Tensor], instances: List[Instances]
    ) -> None:
        """Sets ``pred_masks`` (N_i, 1, 112, 112) probabilities on each image's detections (§12)."""
        size = self.refine_sizes[-1]
        num = coarse.shape[0]
        if num == 0:
            for inst in instances:
                inst.pred_masks = coarse.new_zeros((len(inst), 1, size, size))
            return
        if coarse.shape[1] == 1:
            probs = coarse[:, :1].sigmoid()
        else:
            classes = cat([i.pred_classes for i in instances])
            probs = coarse[torch.arange(num, device=coarse.device), classes][:, None].sigmoid()
        out = F.interpolate(probs, (size, size), mode="bilinear", align_corners=False)
        n = fine[0].shape[0]
        if n > 0:
            out[:n] = self.refine(probs[:n], incoherence[:n], x14[:n], [x[:n] for x in fine])
        for prob, inst in zip(out.split([len(i) for i in instances]), instances):
            inst.pred_masks = prob
