"""Evaluators chosen from the test set's ``evaluator_type`` and the tasks the model predicts.

``EVALUATORS`` is a table ``(evaluator_type, task) -> builder``; a model's tasks come from
``MODEL_TASKS[cfg.MODEL.META_ARCHITECTURE](cfg)``. Model packages add their meta-architecture with
:func:`register_model_tasks`; Detectron2's own meta-architectures are listed here.
"""
import os
from typing import Callable, Dict, FrozenSet, Optional, Tuple

from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from detectron2.evaluation import (
    CityscapesInstanceEvaluator,
    CityscapesSemSegEvaluator,
    COCOEvaluator,
    DatasetEvaluator,
    DatasetEvaluators,
    LVISEvaluator,
    SemSegEvaluator,
)

__all__ = ["build_evaluator", "register_model_tasks", "model_tasks", "EVALUATORS"]

INSTANCE, SEMANTIC, PANOPTIC = "instance", "semantic", "panoptic"

# meta-architecture name -> function(cfg) -> the tasks its inference returns
MODEL_TASKS: Dict[str, Callable[[CfgNode], FrozenSet[str]]] = {
    "GeneralizedRCNN": lambda cfg: frozenset({INSTANCE}),
    "SemanticSegmentor": lambda cfg: frozenset({SEMANTIC}),
    "PanopticFPN": lambda cfg: frozenset({INSTANCE, SEMANTIC, PANOPTIC}),
}


def register_model_tasks(meta_arch: str, tasks_fn: Callable[[CfgNode], FrozenSet[str]]) -> None:
    """Declares which of "instance", "semantic", "panoptic" a meta-architecture predicts under a config."""
    MODEL_TASKS[meta_arch] = tasks_fn


def model_tasks(cfg: CfgNode) -> FrozenSet[str]:
    arch = cfg.MODEL.META_ARCHITECTURE
    if arch not in MODEL_TASKS:
        raise KeyError(
            f"MODEL.META_ARCHITECTURE={arch!r} has not declared its tasks "
            "(segcommon.evaluation.register_model_tasks)"
        )
    return MODEL_TASKS[arch](cfg)


def _coco(cfg, name, out):
    return COCOEvaluator(name, output_dir=out)


def _instance_seg(cfg, name, out):
    # Thing ids interleaved with stuff ids (ADE20K, Mapillary panoptic): COCOEvaluator cannot map them.
    from .instance_evaluation import InstanceSegEvaluator

    return InstanceSegEvaluator(name, output_dir=out)


def _sem_seg(cfg, name, out):
    return SemSegEvaluator(name, distributed=True, output_dir=out)


def _panoptic(cfg, name, out):
    from .panoptic_evaluation import COCOPanopticEvaluator

    return COCOPanopticEvaluator(name, output_dir=out)


def _lvis(cfg, name, out):
    return LVISEvaluator(name, output_dir=out)


def _cityscapes_instance(cfg, name, out):
    return CityscapesInstanceEvaluator(name)


def _cityscapes_sem_seg(cfg, name, out):
    return CityscapesSemSegEvaluator(name)


_PANOPTIC_TYPES = (
    "coco_panoptic_seg",
    "ade20k_panoptic_seg",
    "cityscapes_panoptic_seg",
    "mapillary_vistas_panoptic_seg",
)
EVALUATORS: Dict[Tuple[str, str], Callable[[CfgNode, str, Optional[str]], DatasetEvaluator]] = {
    ("coco", INSTANCE): _coco,
    ("lvis", INSTANCE): _lvis,
    ("sem_seg", SEMANTIC): _sem_seg,
    ("cityscapes_instance", INSTANCE): _cityscapes_instance,
    ("cityscapes_sem_seg", SEMANTIC): _cityscapes_sem_seg,
    **{(t, PANOPTIC): _panoptic for t in _PANOPTIC_TYPES},
    **{(t, SEMANTIC): _sem_seg for t in _PANOPTIC_TYPES if t != "cityscapes_panoptic_seg"},
    ("cityscapes_panoptic_seg", SEMANTIC): _cityscapes_sem_seg,
    ("cityscapes_panoptic_seg", INSTANCE): _cityscapes_instance,
    # The 80 COCO things are the first 80 of the 133 panoptic classes, so COCOEvaluator maps them.
    ("coco_panoptic_seg", INSTANCE): _coco,
    ("ade20k_panoptic_seg", INSTANCE): _instance_seg,
    ("mapillary_vistas_panoptic_seg", INSTANCE): _instance_seg,
}


def build_evaluator(cfg: CfgNode, dataset_name: str, output_folder: Optional[str] = None) -> DatasetEvaluator:
    """All evaluators that apply to ``dataset_name`` for the tasks the model predicts.

    Raises:
        ValueError: if the dataset has no ``evaluator_type`` or none of its evaluators fits the model.
    """
    if output_folder is None:
        output_folder = os.path.join(cfg.OUTPUT_DIR, "inference")
    meta = MetadataCatalog.get(dataset_name)
    evaluator_type = meta.get("evaluator_type", None)
    if evaluator_type is None:
        raise ValueError(f"dataset {dataset_name!r} has no evaluator_type in its metadata")
    tasks = model_tasks(cfg)
    evaluators = [
        build(cfg, dataset_name, output_folder)
        for (etype, task), build in EVALUATORS.items()
        if etype == evaluator_type and task in tasks
    ]
    if not evaluators:
        raise ValueError(
            f"no evaluator for dataset {dataset_name!r} (evaluator_type {evaluator_type!r}) "
            f"and model tasks {sorted(tasks)}"
        )
    return evaluators[0] if len(evaluators) == 1 else DatasetEvaluators(evaluators)
