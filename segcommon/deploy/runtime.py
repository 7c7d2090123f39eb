"""Running an exported ONNX model with onnxruntime (CPU), from a BGR image to the model's results."""
import os
from typing import Dict, List, Optional

import numpy as np
import torch

from .adapter import ExportAdapter
from .preprocess import Preprocessor

__all__ = ["OnnxPredictor", "run_adapter"]


def run_adapter(adapter: ExportAdapter, image: np.ndarray) -> List[np.ndarray]:
    """The PyTorch counterpart of :meth:`OnnxPredictor.run_network`: ``adapter`` on a (1, 3, H, W) input."""
    with torch.no_grad():
        outputs = adapter(torch.from_numpy(image).to(adapter.pixel_mean.device))
    return [o.cpu().numpy() for o in outputs]


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
        names = tuple(o.name for o in self.session.get_outputs())
        if names != tuple(adapter.output_names):
            raise ValueError(
                f"{onnx_path} has outputs {names}, but this config's model expects {tuple(adapter.output_names)}:"
                " was it exported from another config?"
            )
        self.input_name = self.session.get_inputs()[0].name
        self.adapter = adapter
        self.preprocess = Preprocessor.from_config(cfg, adapter.size_divisibility)

    def run_network(self, image: np.ndarray) -> List[np.ndarray]:
        """(1, 3, H, W) float32 network input -> the raw outputs, in ``adapter.output_names`` order."""
        return self.session.run(None, {self.input_name: image})

    def __call__(self, image_bgr: np.ndarray) -> Dict:
        x, image_size = self.preprocess(image_bgr)
        outputs = self.run_network(x)
        return self.adapter.postprocess(outputs, tuple(x.shape[-2:]), image_size, tuple(image_bgr.shape[:2]))
