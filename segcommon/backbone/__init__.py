"""Backbones used by more than one model, and their config keys."""
from .config import add_swin_config  # noqa: F401
