"""Drawing one image's predictions (instances, panoptic or semantic) with Detectron2's ``Visualizer``;
shared by ``demo/demo.py`` and ``tools/deploy/run_onnx.py``."""
import numpy as np
from detectron2.utils.visualizer import ColorMode, Visualizer

__all__ = ["draw_predictions"]


def draw_predictions(predictions: dict, image_rgb: np.ndarray, metadata, threshold: float) -> np.ndarray:
    """Returns the visualisation (H, W, 3) RGB uint8 of one image's predictions: the panoptic
    segmentation if present, else the instances scoring at least ``threshold``, else the semantic
    argmax."""
    vis = Visualizer(image_rgb, metadata, instance_mode=ColorMode.IMAGE)
    if "panoptic_seg" in predictions:
        panoptic_seg, segments_info = predictions["panoptic_seg"]
        out = vis.draw_panoptic_seg_predictions(panoptic_seg.to("cpu"), segments_info)
    elif "instances" in predictions:
        instances = predictions["instances"].to("cpu")
        out = vis.draw_instance_predictions(instances[instances.scores >= threshold])
    elif "sem_seg" in predictions:
        out = vis.draw_sem_seg(predictions["sem_seg"].argmax(dim=0).to("cpu"))
    else:
        raise KeyError(f"the model returned none of panoptic_seg/instances/sem_seg: {sorted(predictions)}")
    return out.get_image()
