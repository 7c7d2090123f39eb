"""Datasets CFT's configs name that neither Detectron2 nor ``segcommon`` registers."""
from .pascal_context import register_all_pascal_context  # noqa: F401

register_all_pascal_context()
