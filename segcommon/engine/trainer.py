"""Detectron2's ``DefaultTrainer`` with the project's mapper, evaluator and solver builders."""
import logging
import os
from collections import OrderedDict

from detectron2.data import build_detection_train_loader
from detectron2.engine import DefaultTrainer

from ..data import build_dataset_mapper
from ..evaluation.build import build_evaluator
from ..modeling import SemanticSegmentorWithTTA
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

    @classmethod
    def test_with_TTA(cls, cfg, model):
        """Semantic segmentation with ``TEST.AUG`` multi-scale and flip averaging; metrics are
        returned with a "_TTA" suffix."""
        logger = logging.getLogger("segcommon.engine")
        logger.info("Running inference with test-time augmentation ...")
        evaluators = [
            cls.build_evaluator(cfg, name, output_folder=os.path.join(cfg.OUTPUT_DIR, "inference_TTA"))
            for name in cfg.DATASETS.TEST
        ]
        res = cls.test(cfg, SemanticSegmentorWithTTA(cfg, model), evaluators)
        return OrderedDict((k + "_TTA", v) for k, v in res.items())
