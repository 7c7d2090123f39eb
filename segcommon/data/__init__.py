from . import datasets  # noqa: F401  (registers the project's datasets)
from .dataset_mappers import MAPPER_REGISTRY, build_dataset_mapper

__all__ = ["MAPPER_REGISTRY", "build_dataset_mapper"]
