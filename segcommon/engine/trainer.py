"""Detectron2's ``DefaultTrainer`` with the project's mapper, evaluator and solver builders."""
from detectron2.data import build_detection_train_loader
from detectron2.engine import DefaultTrainer

from ..data import build_dataset_mapper
from ..evaluation.build import build_evaluator
from ..solver import build_lr_scheduler, build_optimizer

__all__ = ["Trainer"]


class Trainer(DefaultTrainer):
    """Picks the training mapper by ``INPUT.DATASET_MAPPER_NAME`` and the evaluators by the test
    set's ``evaluator_type``; builds the optimiser and schedule of :mod:`segcommon.solver`."""

    @classmethod
    def build_train_loader(cls, cfg):
        return build_detection_train_loader(cfg, mapper=build_dataset_mapper(cfg, is_train=True))

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return build_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        return build_lr_scheduler(cfg, optimizer)
