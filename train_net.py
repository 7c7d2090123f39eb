#!/usr/bin/env python
"""Training and evaluation entry point for every model of the project (Detectron2 style).

    python train_net.py --config-file configs/<model>/... [--eval-only] [--resume] \
        [--num-gpus N] [--num-machines M --machine-rank R --dist-url URL] [KEY VALUE ...]

The model, its training mapper (``INPUT.DATASET_MAPPER_NAME``) and its evaluators (the test sets'
``evaluator_type``) all come from the config.
"""
import logging
import sys

import detectron2.utils.comm as comm
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.evaluation import verify_results
from detectron2.utils.logger import setup_logger

from segcommon.engine import ConfigError, Trainer, setup_cfg


def setup(args):
    cfg = setup_cfg(args.config_file, args.opts)
    default_setup(cfg, args)
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="segcommon")
    for package in ("mask2former", "sotr", "transfiner", "cft"):
        setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name=package)
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        res = Trainer.test(cfg, model)
        if cfg.TEST.AUG.ENABLED:
            res.update(Trainer.test_with_TTA(cfg, model))
        if comm.is_main_process():
            verify_results(cfg, res)
        return res

    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def _check_config(args) -> None:
    """Fails fast, in the launching process, with one line naming what is wrong with the config."""
    try:
        setup_cfg(args.config_file, args.opts)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    if not args.config_file:
        print("error: --config-file is required", file=sys.stderr)
        sys.exit(2)
    _check_config(args)
    logging.getLogger(__name__).info("Command Line Args: %s", args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
