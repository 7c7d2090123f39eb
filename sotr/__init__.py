"""SOTR (Guo et al., ICCV 2021): segmenting objects with transformers (twin attention)."""

from .config import add_sotr_config  # noqa: F401
from . import modeling  # noqa: F401  (registers the SOTR meta-architecture and its evaluator tasks)
from .modeling import SOTR  # noqa: F401
from . import deploy  # noqa: F401  (registers the export adapter)
