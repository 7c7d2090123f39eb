"""Optimiser and learning-rate schedule builders shared by all models.

The parameter grouping follows the official Mask2Former ``Trainer.build_optimizer``: one group per
parameter, a learning-rate factor for the backbone, no weight decay on normalisation layers,
embeddings and Swin's position tables, and optional full-model gradient clipping. With the shared
defaults (SGD, ``BACKBONE_MULTIPLIER`` 1.0, ``WEIGHT_DECAY_NORM`` 0) it reproduces Detectron2's
stock optimiser for R-CNN configs.
"""
import itertools
from typing import Any, Dict, List, Set, Type

import torch
from detectron2.config import CfgNode
from detectron2.projects.deeplab import build_lr_scheduler as _build_deeplab_lr_scheduler
from detectron2.solver.build import maybe_add_gradient_clipping

__all__ = ["get_param_groups", "build_optimizer", "build_lr_scheduler"]

_NORM_TYPES = (
    torch.nn.BatchNorm1d,
    torch.nn.BatchNorm2d,
    torch.nn.BatchNorm3d,
    torch.nn.SyncBatchNorm,
    torch.nn.GroupNorm,
    torch.nn.InstanceNorm1d,
    torch.nn.InstanceNorm2d,
    torch.nn.InstanceNorm3d,
    torch.nn.LayerNorm,
    torch.nn.LocalResponseNorm,
)
# Parameters of Swin/ViT-style backbones that act as embeddings and get no weight decay.
_NO_DECAY_PARAM_NAMES = ("relative_position_bias_table", "absolute_pos_embed")


def _is_norm(module: torch.nn.Module) -> bool:
    # Detectron2's FrozenBatchNorm2d has no parameters; its own BatchNorm2d subclasses nn.BatchNorm2d.
    return isinstance(module, _NORM_TYPES)


def get_param_groups(cfg: CfgNode, model: torch.nn.Module) -> List[Dict[str, Any]]:
    """One optimiser group per trainable parameter, with its ``lr`` and ``weight_decay``.

    Rules, applied in this order (a later rule overrides an earlier one):
      * defaults ``SOLVER.BASE_LR`` and ``SOLVER.WEIGHT_DECAY``;
      * bias parameters: lr x ``SOLVER.BIAS_LR_FACTOR``, decay ``SOLVER.WEIGHT_DECAY_BIAS`` if set;
      * module name containing "backbone": lr x ``SOLVER.BACKBONE_MULTIPLIER``;
      * ``relative_position_bias_table`` / ``absolute_pos_embed``: decay 0;
      * normalisation layers: decay ``SOLVER.WEIGHT_DECAY_NORM``;
      * ``nn.Embedding``: decay ``SOLVER.WEIGHT_DECAY_EMBED``.
    Parameters shared between modules are counted once.
    """
    s = cfg.SOLVER
    groups: List[Dict[str, Any]] = []
    seen: Set[torch.nn.Parameter] = set()
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or param in seen:
                continue
            seen.add(param)
            lr, decay = s.BASE_LR, s.WEIGHT_DECAY
            if name == "bias":
                lr *= s.BIAS_LR_FACTOR
                if s.WEIGHT_DECAY_BIAS is not None:
                    decay = s.WEIGHT_DECAY_BIAS
            if "backbone" in module_name:
                lr *= s.BACKBONE_MULTIPLIER
            if any(k in name for k in _NO_DECAY_PARAM_NAMES):
                decay = 0.0
            if _is_norm(module):
                decay = s.WEIGHT_DECAY_NORM
            if isinstance(module, torch.nn.Embedding):
                decay = s.WEIGHT_DECAY_EMBED
            groups.append({"params": [param], "lr": lr, "weight_decay": decay})
    return groups


def _with_full_model_clipping(optim_cls: Type[torch.optim.Optimizer], max_norm: float):
    """Returns a subclass of ``optim_cls`` whose ``step`` first clips the global L2 norm of the
    gradients of all parameters of all groups to ``max_norm``."""

    class FullModelGradientClippingOptimizer(optim_cls):
        def step(self, closure=None):
            params = itertools.chain(*[g["params"] for g in self.param_groups])
            torch.nn.utils.clip_grad_norm_(params, max_norm)
            return super().step(closure=closure)

    FullModelGradientClippingOptimizer.__name__ = f"FullModelGradientClipping{optim_cls.__name__}"
    return FullModelGradientClippingOptimizer


def build_optimizer(cfg: CfgNode, model: torch.nn.Module) -> torch.optim.Optimizer:
    """Builds ``SOLVER.OPTIMIZER`` ("SGD" or "ADAMW") over :func:`get_param_groups`, with gradient
    clipping from ``SOLVER.CLIP_GRADIENTS`` ("full_model" clips the global norm; "value" and "norm"
    use Detectron2's per-parameter clipping)."""
    params = get_param_groups(cfg, model)
    name = cfg.SOLVER.OPTIMIZER.upper()
    if name == "SGD":
        optim_cls, kwargs = torch.optim.SGD, {"momentum": cfg.SOLVER.MOMENTUM, "nesterov": cfg.SOLVER.NESTEROV}
    elif name == "ADAMW":
        optim_cls, kwargs = torch.optim.AdamW, {}
    else:
        raise ValueError(f"SOLVER.OPTIMIZER={cfg.SOLVER.OPTIMIZER!r} is not supported; use 'SGD' or 'ADAMW'")

    clip = cfg.SOLVER.CLIP_GRADIENTS
    if clip.ENABLED and clip.CLIP_TYPE == "full_model" and clip.CLIP_VALUE > 0.0:
        return _with_full_model_clipping(optim_cls, clip.CLIP_VALUE)(params, cfg.SOLVER.BASE_LR, **kwargs)
    if clip.ENABLED and clip.CLIP_TYPE == "full_model":
        raise ValueError("SOLVER.CLIP_GRADIENTS.CLIP_VALUE must be > 0 with CLIP_TYPE 'full_model'")
    return maybe_add_gradient_clipping(cfg, optim_cls)(params, cfg.SOLVER.BASE_LR, **kwargs)


def build_lr_scheduler(cfg: CfgNode, optimizer: torch.optim.Optimizer):
    """``SOLVER.LR_SCHEDULER_NAME``: Detectron2's WarmupMultiStepLR / WarmupCosineLR, or DeepLab's
    WarmupPolyLR (``lr = base_lr * (1 - iter / max_iter) ** POLY_LR_POWER``)."""
    return _build_deeplab_lr_scheduler(cfg, optimizer)
