"""A multi-threaded CPU RoIAlign (``csrc/roi_align_cpu.cpp``) behind torchvision's own operator.

Detectron2's :class:`~detectron2.layers.ROIAlign` (and so every R-CNN pooler: Mask R-CNN, Mask
Transfiner) calls ``torchvision.ops.roi_align``, whose CPU kernels run on one thread and, in the
backward pass, recompute each sampling point's bilinear weights for every channel.
:func:`register_fast_roi_align` registers the project's kernels as the CPU implementation of
``torchvision::roi_align`` and ``torchvision::_roi_align_backward``, so those layers use them
unchanged (torchvision's autograd formula calls the backward operator through the dispatcher). Results
are bitwise equal to torchvision's kernels; CUDA is untouched.

:func:`segcommon.engine.setup_cfg` registers them for CPU configs. Set
``SEGZOO_ROIALIGN_IMPL=torchvision`` to keep torchvision's kernels (for comparisons).
"""
import logging
import os
import threading

import torch
import torchvision  # noqa: F401  (defines the torchvision:: operators that are overridden)

from .compiled import CompiledExtension

__all__ = ["register_fast_roi_align", "unregister_fast_roi_align", "fast_roi_align_registered", "load_roi_align_extension"]

logger = logging.getLogger(__name__)

_EXTENSION = CompiledExtension(
    name="segzoo_roi_align_cpu",
    source=os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc", "roi_align_cpu.cpp"),
    what="RoIAlign on CPU (torchvision's kernels otherwise)",
    disable_env="SEGZOO_ROIALIGN_IMPL",
    disable_value="torchvision",
)
_lock = threading.Lock()
_library = None  # the torch.library registration; dropping it restores torchvision's kernels


def load_roi_align_extension(verbose: bool = False):
    """The compiled module (``forward``, ``backward`` with torchvision's operator signatures), or None."""
    return _EXTENSION.load(verbose)


def _forward(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
    return _EXTENSION.load().forward(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned)


def _backward(grad, rois, spatial_scale, pooled_height, pooled_width, batch_size, channels, height, width,
              sampling_ratio, aligned):
    return _EXTENSION.load().backward(
        grad, rois, spatial_scale, pooled_height, pooled_width, batch_size, channels, height, width,
        sampling_ratio, aligned,
    )


def register_fast_roi_align() -> bool:
    """Makes the compiled kernels torchvision's CPU RoIAlign (idempotent).

    Returns:
        True when they are registered; False (the reason logged once) when the kernel is disabled or
        cannot be built, and torchvision's kernels stay in use.
    """
    global _library
    with _lock:
        if _library is not None:
            return True
        if _EXTENSION.load() is None:
            return False
        library = torch.library.Library("torchvision", "IMPL")
        library.impl("roi_align", _forward, "CPU")
        library.impl("_roi_align_backward", _backward, "CPU")
        _library = library
    logger.info("RoIAlign on CPU: the project's multi-threaded kernels replace torchvision's.")
    return True


def unregister_fast_roi_align() -> None:
    """Restores torchvision's own CPU kernels."""
    global _library
    with _lock:
        if _library is not None:
            _library._destroy()
            _library = None


def fast_roi_align_registered() -> bool:
    """True while the project's kernels serve ``torchvision::roi_align`` on CPU."""
    return _library is not None
