"""``CFTSemanticSegmentor``: Detectron2's ``SemanticSegmentor`` with the reference's padding and
inference (MMSeg ``EncoderDecoder`` with ``SegDataPreProcessor``).

Why not the stock class: it pads a training batch only to its largest image (the reference pads
every sample to the crop size, and padded positions take part in CFT's spatial softmax), it crops the
head output after a fixed upsampling instead of resizing the logits to the exact image size, and it
has no sliding-window inference.
"""
import math
from typing import Dict, List, Optional, Sequence, Tuple

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, SemanticSegmentor
from detectron2.modeling.postprocessing import sem_seg_postprocess
from torch import Tensor

from segcommon.evaluation.build import SEMANTIC, register_model_tasks
from segcommon.layers import resize_bilinear

__all__ = ["CFTSemanticSegmentor", "pad_to", "slide_windows"]


def pad_to(tensors: Sequence[Tensor], size: Tuple[int, int], value: float) -> Tensor:
    """Stacks (..., h, w) tensors into one batch padded bottom/right with ``value`` to ``size``."""
    out = tensors[0].new_full((len(tensors),) + tuple(tensors[0].shape[:-2]) + tuple(size), value)
    for i, t in enumerate(tensors):
        out[i, ..., : t.shape[-2], : t.shape[-1]].copy_(t)
    return out


def slide_windows(
    height: int, width: int, crop: Tuple[int, int], stride: Tuple[int, int]
) -> List[Tuple[int, int, int, int]]:
    """Windows (y0, y1, x0, x1) of MMSeg's ``slide_inference``: ceil((H - h_c) / h_s) + 1 rows (at
    least one), start row * stride, end clipped to the image, start pulled back so the window is
    full size where the image allows; the same for columns."""
    (ch, cw), (sh, sw) = crop, stride
    rows = max(height - ch + sh - 1, 0) // sh + 1
    cols = max(width - cw + sw - 1, 0) // sw + 1
    windows = []
    for r in range(rows):
        for c in range(cols):
            y1, x1 = min(r * sh + ch, height), min(c * sw + cw, width)
            windows.append((max(y1 - ch, 0), y1, max(x1 - cw, 0), x1))
    return windows


@META_ARCH_REGISTRY.register()
class CFTSemanticSegmentor(SemanticSegmentor):
    """
    Training: normalise, pad every image to at least the crop size (0 after normalisation = the mean
    colour; labels with the head's ignore value), call the head with the padded labels.

    Inference, one image at a time, no padding: optionally stretch the image so both sides are
    multiples of ``resize_to_multiple`` (MiT-B5), then ``whole``: one pass, logits resized to the
    input size; or ``slide``: overlapping windows whose logits (each resized to its window) are
    averaged. The logits are then resized to the requested "height"/"width" (bilinear).
    Output per image: ``{"sem_seg": (K, height, width)}`` logits.
    """

    @configurable
    def __init__(
        self,
        *,
        train_size: Optional[Tuple[int, int]] = None,
        test_mode: str = "whole",
        test_crop_size: Tuple[int, int] = (512, 512),
        test_stride: Tuple[int, int] = (341, 341),
        resize_to_multiple: int = 0,
        align_corners: bool = False,
        **kwargs,
    ):
        """
        Args:
            train_size: (h, w) every training image is padded to (the crop size); None pads to
                the largest image of the batch only.
            test_mode: "whole" or "slide".
            test_crop_size, test_stride: slide window and stride, (h, w).
            resize_to_multiple: stretch test images to multiples of this before the model; 0: off.
            align_corners: of the bilinear resizes of images and logits.
            kwargs: ``SemanticSegmentor``'s (backbone, sem_seg_head, pixel_mean, pixel_std).
        """
        super().__init__(**kwargs)
        if test_mode not in ("whole", "slide"):
            raise ValueError(f"MODEL.CFT.TEST.MODE must be 'whole' or 'slide', got {test_mode!r}")
        self.train_size = tuple(train_size) if train_size else None
        self.test_mode = test_mode
        self.test_crop_size = tuple(test_crop_size)
        self.test_stride = tuple(test_stride)
        self.resize_to_multiple = resize_to_multiple
        self.align_corners = align_corners

    @classmethod
    def from_config(cls, cfg) -> Dict:
        ret = super().from_config(cfg)
        crop = cfg.INPUT.CROP
        ret.update(
            train_size=tuple(crop.SIZE) if crop.ENABLED and crop.TYPE == "absolute" else None,
            test_mode=cfg.MODEL.CFT.TEST.MODE,
            test_crop_size=tuple(cfg.MODEL.CFT.TEST.CROP_SIZE),
            test_stride=tuple(cfg.MODEL.CFT.TEST.STRIDE),
            resize_to_multiple=cfg.MODEL.CFT.TEST.RESIZE_TO_MULTIPLE,
            align_corners=cfg.MODEL.CFT.ALIGN_CORNERS,
        )
        return ret

    def _train_batch_size(self, images: Sequence[Tensor]) -> Tuple[int, int]:
        h = max(x.shape[-2] for x in images)
        w = max(x.shape[-1] for x in images)
        d = self.backbone.size_divisibility
        if d > 1:
            h, w = math.ceil(h / d) * d, math.ceil(w / d) * d
        if self.train_size is not None:
            h, w = max(h, self.train_size[0]), max(w, self.train_size[1])
        return h, w

    def forward(self, batched_inputs: List[Dict]):
        """batched_inputs: mapper outputs with "image" (3, H, W), in training "sem_seg" (H, W), at
        test optionally "height"/"width". Training returns the loss dict, inference a list of
        ``{"sem_seg": (K, height, width)}``."""
        images = [(x["image"].to(self.device) - self.pixel_mean) / self.pixel_std for x in batched_inputs]
        if self.training:
            size = self._train_batch_size(images)
            targets = pad_to(
                [x["sem_seg"].to(self.device) for x in batched_inputs], size, self.sem_seg_head.ignore_value
            )
            _, losses = self.sem_seg_head(self.backbone(pad_to(images, size, 0.0)), targets)
            return losses

        results = []
        for image, inputs in zip(images, batched_inputs):
            h, w = image.shape[-2:]
            logits = self.inference(image[None])[0]
            results.append(
                {"sem_seg": sem_seg_postprocess(logits, (h, w), inputs.get("height", h), inputs.get("width", w))}
            )
        return results

    def _resize(self, x: Tensor, size: Tuple[int, int]) -> Tensor:
        return resize_bilinear(x, size, self.align_corners)

    def encode_decode(self, image: Tensor) -> Tensor:
        """(1, 3, H, W) normalised image -> (1, K, H, W) logits (head output resized to the input)."""
        logits, _ = self.sem_seg_head(self.backbone(image))
        return self._resize(logits, image.shape[-2:])

    def inference(self, image: Tensor) -> Tensor:
        """(1, 3, H, W) normalised image -> (1, K, H, W) logits in the configured test mode."""
        size = tuple(image.shape[-2:])
        m = self.resize_to_multiple
        if m > 0:
            image = self._resize(image, (math.ceil(size[0] / m) * m, math.ceil(size[1] / m) * m))
        if self.test_mode == "whole":
            logits = self.encode_decode(image)
        else:
            logits = self.slide_inference(image)
        return self._resize(logits, size)

    def slide_inference(self, image: Tensor) -> Tensor:
        """Averages the logits of the windows of :func:`slide_windows` (not probabilities)."""
        _, _, h, w = image.shape
        total, count = None, image.new_zeros((1, 1, h, w))
        for y0, y1, x0, x1 in slide_windows(h, w, self.test_crop_size, self.test_stride):
            logits = self.encode_decode(image[:, :, y0:y1, x0:x1])
            if total is None:
                total = image.new_zeros((1, logits.shape[1], h, w))
            total[:, :, y0:y1, x0:x1] += logits
            count[:, :, y0:y1, x0:x1] += 1
        return total / count


register_model_tasks("CFTSemanticSegmentor", lambda cfg: frozenset({SEMANTIC}))
