"""Input preparation of exported models, in NumPy: what ``DefaultPredictor`` plus the model's own
``preprocess_image`` do before the network, so an exported network sees the same tensor."""
from typing import Sequence, Tuple

import numpy as np
from detectron2.data import transforms as T

__all__ = ["Preprocessor"]


class Preprocessor:
    """BGR uint8 image (H0, W0, 3) -> normalised, padded network input (1, 3, H, W) float32.

    Steps: the test-time ``ResizeShortestEdge`` (short side ``min_size``, long side at most
    ``max_size``), BGR -> the model's input format, ``(x - pixel_mean) / pixel_std``, then zeros at
    the bottom and right up to multiples of ``size_divisibility`` (padding after normalisation, as
    ``ImageList.from_tensors`` does).
    """

    def __init__(
        self,
        min_size: int,
        max_size: int,
        input_format: str,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        size_divisibility: int = 1,
    ):
        if input_format not in ("RGB", "BGR"):
            raise ValueError(f"input format must be RGB or BGR, got {input_format!r}")
        self.resize = T.ResizeShortestEdge([min_size, min_size], max_size) if min_size > 0 else None
        self.input_format = input_format
        self.mean = np.asarray(pixel_mean, dtype=np.float32).reshape(3, 1, 1)
        self.std = np.asarray(pixel_std, dtype=np.float32).reshape(3, 1, 1)
        self.size_divisibility = max(int(size_divisibility), 1)

    @classmethod
    def from_config(cls, cfg, size_divisibility: int) -> "Preprocessor":
        return cls(
            cfg.INPUT.MIN_SIZE_TEST,
            cfg.INPUT.MAX_SIZE_TEST,
            cfg.INPUT.FORMAT,
            cfg.MODEL.PIXEL_MEAN,
            cfg.MODEL.PIXEL_STD,
            size_divisibility,
        )

    def __call__(self, image_bgr: np.ndarray) -> Tuple[np.ndarray, Tuple[int, int]]:
        """
        Returns:
            (1, 3, H, W) float32 network input, and (h, w) of the resized image inside it.
        """
        if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.shape[0] == 0 or image_bgr.shape[1] == 0:
            raise ValueError(f"expected a non-empty (H, W, 3) image, got shape {image_bgr.shape}")
        image = image_bgr[:, :, ::-1] if self.input_format == "RGB" else image_bgr
        if self.resize is not None:
            image = self.resize.get_transform(image).apply_image(image)
        x = (image.astype(np.float32).transpose(2, 0, 1) - self.mean) / self.std
        h, w = x.shape[1:]
        d = self.size_divisibility
        H, W = -(-h // d) * d, -(-w // d) * d
        padded = np.zeros((1, 3, H, W), dtype=np.float32)
        padded[0, :, :h, :w] = x
        return padded, (h, w)
