"""Training-time dataset mappers, chosen by name with ``INPUT.DATASET_MAPPER_NAME``."""
from typing import Callable

from detectron2.config import CfgNode
from detectron2.data import DatasetMapper
from detectron2.utils.registry import Registry

MAPPER_REGISTRY = Registry("DATASET_MAPPER")
MAPPER_REGISTRY.__doc__ = """
Registry of training dataset mappers, keyed by the name used in ``INPUT.DATASET_MAPPER_NAME``.
A registered object is called as ``obj(cfg, is_train)`` and returns a callable that maps one
dataset dict to the model's input dict (Detectron2's ``DatasetMapper`` contract).
"""


def register_mapper(name: str) -> Callable:
    """Class decorator: registers a mapper under ``name`` (the value of ``INPUT.DATASET_MAPPER_NAME``)."""

    def deco(cls):
        MAPPER_REGISTRY._do_register(name, cls)
        return cls

    return deco


register_mapper("default")(DatasetMapper)


def build_dataset_mapper(cfg: CfgNode, is_train: bool = True):
    """Builds the mapper named by ``cfg.INPUT.DATASET_MAPPER_NAME``.

    Raises:
        KeyError: naming the unknown mapper and the registered ones.
    """
    name = cfg.INPUT.DATASET_MAPPER_NAME
    if name not in MAPPER_REGISTRY:
        raise KeyError(
            f"INPUT.DATASET_MAPPER_NAME={name!r} is not a registered dataset mapper; "
            f"known: {sorted(k for k, _ in MAPPER_REGISTRY)}"
        )
    return MAPPER_REGISTRY.get(name)(cfg, is_train)


# Importing the mapper modules registers them. They import ``register_mapper`` from this package,
# so these imports stay below its definition.
from . import (  # noqa: E402,F401
    coco_instance_lsj,
    coco_panoptic_lsj,
    mask_former_instance,
    mask_former_panoptic,
    mask_former_semantic,
)
