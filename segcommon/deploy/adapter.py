"""Export adapters: the part of a model that is exported, and the post-processing of its outputs.

An adapter wraps a built model (any of the project's meta-architectures) as an ``nn.Module`` whose
``forward`` maps one normalised, padded image to a tuple of raw output tensors, the graph that
ONNX / ``torch.export`` / TorchScript receive. ``postprocess`` turns those outputs, computed by any
runtime (PyTorch, onnxruntime), into the model's usual results (``"instances"``, ``"sem_seg"``,
``"panoptic_seg"``) with the model's own inference code, so that an exported model and the PyTorch
model share one post-processing.

Each model package registers its adapter under the name of its meta-architecture class.
"""
from typing import Callable, Dict, List, NamedTuple, Sequence, Tuple, Type, Union

import numpy as np
import torch
from torch import nn

__all__ = ["ExportAdapter", "ImageSizes", "build_export_adapter", "register_export_adapter"]

# Adapter class by meta-architecture class name.
_ADAPTERS: Dict[str, Type["ExportAdapter"]] = {}

ArrayLike = Union[np.ndarray, torch.Tensor]


class ImageSizes(NamedTuple):
    """Sizes (height, width) of one image through the pipeline."""

    input: Tuple[int, int]  # the padded network input
    image: Tuple[int, int]  # the resized image inside it
    output: Tuple[int, int]  # the requested output (the original image)


class ExportAdapter(nn.Module):
    """Base class: ``forward(image) -> tuple of tensors``, named by :attr:`output_names`.

    Attributes:
        input_names: names of ``forward``'s inputs, in order (the ONNX input names): ``("image",)``,
            or ``("image", "image_size")`` for models that also need the size of the image inside the
            padded input (a (2,) int64 tensor ``(h, w)``; the R-CNN detectors clip boxes to it).
        output_names: names of ``forward``'s outputs, in order (the ONNX output names).
        supports_torchscript: whether the TorchScript format (a trace) is offered.
        size_divisibility: the exported network takes images whose height and width are multiples of
            this (the caller pads, see :class:`segcommon.deploy.preprocess.Preprocessor`); 1 when
            any size is accepted.
    """

    input_names: Tuple[str, ...] = ("image",)
    output_names: Tuple[str, ...] = ()
    # False where a trace would freeze data-dependent sizes (detection counts) into constants.
    supports_torchscript: bool = True

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    @property
    def size_divisibility(self) -> int:
        return 1

    @property
    def pixel_mean(self) -> torch.Tensor:
        """(3, 1, 1) mean subtracted from the image, in the model's input format (cfg.INPUT.FORMAT)."""
        return self.model.pixel_mean

    @property
    def pixel_std(self) -> torch.Tensor:
        return self.model.pixel_std

    def network_inputs(self, image: ArrayLike, image_size: Tuple[int, int]) -> Tuple[ArrayLike, ...]:
        """``forward``'s arguments for a (1, 3, H, W) network input whose resized image is
        ``image_size`` (h, w): NumPy arrays for NumPy ``image``, tensors (on its device) otherwise."""
        if self.input_names == ("image",):
            return (image,)
        if self.input_names != ("image", "image_size"):
            raise NotImplementedError(f"{type(self).__name__}: unknown inputs {self.input_names}")
        size = [int(image_size[0]), int(image_size[1])]
        if isinstance(image, np.ndarray):
            return image, np.asarray(size, dtype=np.int64)
        return image, torch.tensor(size, dtype=torch.int64, device=image.device)

    def run(
        self, network: Callable[..., List[np.ndarray]], image: np.ndarray, image_size: Tuple[int, int]
    ) -> List[np.ndarray]:
        """The raw outputs for one (1, 3, H, W) NumPy network input.

        ``network(*inputs)`` runs the exported graph once (in any runtime) on NumPy inputs and returns
        its NumPy outputs. Most models call it once; a model whose inference runs the graph several
        times (CFT's sliding windows) overrides this, so every runtime shares the same loop.
        """
        return list(network(*self.network_inputs(image, image_size)))

    def forward(self, image: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """
        Args:
            image: (1, 3, H, W) float32, normalised ((x - pixel_mean) / pixel_std) and zero-padded at the
                bottom and right to multiples of :attr:`size_divisibility`.
        """
        raise NotImplementedError

    def align_outputs(self, outputs: Sequence[np.ndarray], reference: Sequence[np.ndarray]) -> List[np.ndarray]:
        """``outputs`` (of another runtime) put in ``reference``'s order, for an element-wise comparison.
        Unchanged here; detectors reorder their detections (whose order ties may change)."""
        return list(outputs)

    def postprocess(
        self,
        outputs: Sequence[ArrayLike],
        input_size: Tuple[int, int],
        image_size: Tuple[int, int],
        output_size: Tuple[int, int],
    ) -> Dict:
        """
        Args:
            outputs: ``forward``'s outputs for one image (NumPy arrays or tensors, same order).
            input_size: (H, W) of the padded network input.
            image_size: (h, w) of the resized image inside it.
            output_size: (height, width) to predict at (the original image size).

        Returns:
            the model's result dict for that image (as its ``forward`` returns in inference).
        """
        if len(outputs) != len(self.output_names):
            raise ValueError(f"expected {len(self.output_names)} outputs {self.output_names}, got {len(outputs)}")
        device = self.pixel_mean.device
        # Copies: post-processing may work in place (detector_postprocess scales boxes in place), and
        # the caller's arrays must stay as the network returned them.
        tensors = [torch.as_tensor(o).to(device, copy=True) for o in outputs]
        sizes = ImageSizes(tuple(input_size), tuple(image_size), tuple(output_size))
        with torch.no_grad():
            return self._postprocess(tensors, sizes)

    def _postprocess(self, outputs: List[torch.Tensor], sizes: "ImageSizes") -> Dict:
        """:meth:`postprocess` on tensors (on the model's device), without gradients."""
        raise NotImplementedError


def register_export_adapter(meta_architecture: str) -> Callable[[Type[ExportAdapter]], Type[ExportAdapter]]:
    """Class decorator: the adapter of models whose class is named ``meta_architecture``."""

    def register(cls: Type[ExportAdapter]) -> Type[ExportAdapter]:
        if meta_architecture in _ADAPTERS:
            raise KeyError(f"an export adapter for {meta_architecture!r} is already registered")
        _ADAPTERS[meta_architecture] = cls
        return cls

    return register


def build_export_adapter(model: nn.Module) -> ExportAdapter:
    """The registered adapter of ``model``'s meta-architecture (the model is put in eval mode)."""
    name = type(model).__name__
    if name not in _ADAPTERS:
        raise KeyError(f"no export adapter for meta-architecture {name!r}; supported: {sorted(_ADAPTERS)}")
    return _ADAPTERS[name](model.eval()).eval()
