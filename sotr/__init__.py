"""SOTR (Guo et al., ICCV 2021): segmenting objects with transformers (twin attention)."""

from .config import add_sotr_config  # noqa: F401
