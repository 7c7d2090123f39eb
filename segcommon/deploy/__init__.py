"""Deployment: export adapters of the models, ONNX / torch.export / TorchScript export with errors
that name the blocking operator and model part, NumPy pre-processing, and an onnxruntime predictor."""
from .adapter import ExportAdapter, ImageSizes, build_export_adapter, register_export_adapter  # noqa: F401
from .export import EXPORT_FORMATS, ExportError, export_adapter, export_program  # noqa: F401
from .preprocess import Preprocessor  # noqa: F401
from .calibration import calibrate_batch_norms  # noqa: F401
from .compare import final_masks, mask_agreement, match_detections  # noqa: F401
from .runtime import OnnxPredictor, run_adapter  # noqa: F401
