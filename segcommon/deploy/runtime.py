"""Running an exported ONNX model with onnxruntime (CPU), from a BGR image to the model's results."""
import os
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from .adapter import ExportAdapter
from .preprocess import Preprocessor

__all__ = ["OnnxPredictor", "run_adapter"]


def run_adapter(adapter: ExportAdapter, image: np.ndarray, image_size: Tuple[int, int]) -> List[np.ndarray]:
    """The PyTorch counterpart of :meth:`OnnxPredictor.run_network`: ``adapter`` on a (1, 3, H, W)
    input whose resized image is ``image_size`` (h, w)."""
    device = adapter.pixel_mean.device

    def network(*inputs: np.ndarray) -> List[np.ndarray]:
        with torch.no_grad():
            outputs = adapter(*(torch.from_numpy(np.ascontiguousarray(x)).to(device) for x in inputs))
        return [o.cpu().numpy() for o in outputs]

    return adapter.run(network, image, image_size)


class OnnxPredictor:
    """``predictor(image_bgr) -> result dict``, like Detectron2's ``DefaultPredictor`` but with the
    network run by onnxruntime. Pre-processing is NumPy (:class:`Preprocessor`); post-processing is
    the model's own inference code, through ``adapter.postprocess`` (the adapter's model needs no
    trained weights: post-processing reads only its configuration)."""

    def __init__(self, cfg, onnx_path: str, adapter: ExportAdapter, num_threads: Optional[int] = None):
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ImportError("onnxruntime is not installed: pip install -e '.[deploy]'") from e
        if not os.path.isfile(onnx_path):
            raise FileNotFoundError(f"ONNX model not found: {onnx_path}")
        options = ort.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = num_threads
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
        for kind, found, expected in (
            ("inputs", self.session.get_inputs(), adapter.input_names),
            ("outputs", self.session.get_outputs(), adapter.output_names),
        ):
            names = tuple(n.name for n in found)
            if names != tuple(expected):
                raise ValueError(
                    f"{onnx_path} has {kind} {names}, but this config's model expects {tuple(expected)}:"
                    " was it exported from another config?"
                )
        self.adapter = adapter
        self.preprocess = Preprocessor.from_config(cfg, adapter.size_divisibility)

    def run_network(self, image: np.ndarray, image_size: Tuple[int, int]) -> List[np.ndarray]:
        """(1, 3, H, W) float32 network input, with the (h, w) of the resized image inside it -> the raw
        outputs, in ``adapter.output_names`` order."""
        def network(*inputs: np.ndarray) -> List[np.ndarray]:
            feed = {name: np.ascontiguousarray(x) for name, x in zip(self.adapter.input_names, inputs)}
            return self.session.run(None, feed)

        return self.adapter.run(network, image, image_size)

    def __call__(self, image_bgr: np.ndarray) -> Dict:
        x, image_size = self.preprocess(image_bgr)
        outputs = self.run_network(x, image_size)
        return self.adapter.postprocess(outputs, tuple(x.shape[-2:]), image_size, tuple(image_bgr.shape[:2]))
