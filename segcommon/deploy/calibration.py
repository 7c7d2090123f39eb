"""Data-dependent statistics for randomly initialised batch norms, for export checks without weights.

A randomly initialised ResNet with frozen (or eval-mode) batch norms at their defaults (mean 0,
variance 1) multiplies the activation scale block after block. The R50 configs then give class
logits in the thousands, whose sigmoids saturate to exact ties, and comparisons between runtimes
measure tie-breaking rather than the export. Setting every norm's statistics to those of its input
on a sample image keeps the activations at unit scale, as trained statistics would.
"""
import torch
from detectron2.layers import FrozenBatchNorm2d
from torch import nn

__all__ = ["calibrate_batch_norms"]


@torch.no_grad()
def calibrate_batch_norms(model: nn.Module, sample: torch.Tensor, forward=None) -> int:
    """Sets ``running_mean`` / ``running_var`` of every ``FrozenBatchNorm2d`` and eval-mode
    ``BatchNorm`` in ``model`` to the per-channel mean and variance of its input when ``forward(sample)``
    runs (``model(sample)`` by default). Norms run in forward order, so each one sees inputs already
    normalised upstream. Returns the number of norms calibrated."""
    norms = [m for m in model.modules() if isinstance(m, (FrozenBatchNorm2d, nn.modules.batchnorm._BatchNorm))]
    done = set()

    def calibrate(module, args):
        if module in done:
            return
        x = args[0].transpose(0, 1).flatten(1)  # (C, N*H*W)
        module.running_mean.copy_(x.mean(1))
        module.running_var.copy_(x.var(1, unbiased=False))
        done.add(module)

    handles = [m.register_forward_pre_hook(calibrate) for m in norms]
    try:
        (forward or model)(sample)
    finally:
        for h in handles:
            h.remove()
    return len(done)
