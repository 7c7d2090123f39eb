"""The project's config: Detectron2's defaults, the shared keys and every model package's keys.

One config carries all four models' keys, so any config file of any model goes through the same
entry points (``train_net.py``, ``demo/demo.py``, ``tools/*.py``).
"""
import difflib
import importlib
import logging
import sys
from typing import List, Optional, Sequence

import torch
from detectron2.config import CfgNode, get_cfg
from detectron2.data import DatasetCatalog
from detectron2.utils.file_io import PathManager

from ..config import add_common_config
from ..layers.roi_align_fast import register_fast_roi_align

__all__ = ["ConfigError", "MODEL_PACKAGES", "get_project_cfg", "setup_cfg", "setup_tool_cfg"]

logger = logging.getLogger(__name__)

# package -> its add-config function. Importing a package also registers its models.
MODEL_PACKAGES = {
    "mask2former": "add_maskformer2_config",
    "sotr": "add_sotr_config",
    "transfiner": "add_transfiner_config",
    "cft": "add_cft_config",
}


class ConfigError(ValueError):
    """A config that cannot be used: missing file, unknown key, bad value, unknown dataset."""


def get_project_cfg() -> CfgNode:
    """Detectron2's default config with the shared keys and the keys of all model packages."""
    cfg = get_cfg()
    add_common_config(cfg)
    for package, fn in MODEL_PACKAGES.items():
        getattr(importlib.import_module(package), fn)(cfg)
    return cfg


def _check_datasets(cfg: CfgNode) -> None:
    import segcommon.data  # noqa: F401  (registers the project's datasets)

    known = DatasetCatalog.list()
    for key in ("TRAIN", "TEST"):
        for name in cfg.DATASETS[key]:
            if name not in known:
                close = difflib.get_close_matches(name, known, n=3)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise ConfigError(f"DATASETS.{key}: dataset {name!r} is not registered{hint}")


def _check_device(cfg: CfgNode) -> None:
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"MODEL.DEVICE is {cfg.MODEL.DEVICE!r} but no CUDA device is available; "
            "add 'MODEL.DEVICE cpu' to run on the CPU"
        )


def setup_cfg(
    config_file: str, opts: Sequence[str] = (), check_datasets: bool = True, freeze: bool = True
) -> CfgNode:
    """Loads ``config_file`` and ``KEY VALUE`` overrides into the project's config.

    Raises:
        ConfigError: with a one-line message naming the file, key or dataset at fault.
    """
    if not PathManager.isfile(config_file):
        raise ConfigError(f"config file not found: {config_file}")
    cfg = get_project_cfg()
    try:
        cfg.merge_from_file(config_file)
    except (KeyError, ValueError, AssertionError) as e:
        raise ConfigError(f"{config_file}: {e.args[0] if e.args else e}") from None
    if len(opts) % 2:
        raise ConfigError(f"overrides must be KEY VALUE pairs, got an odd number: {list(opts)}")
    try:
        cfg.merge_from_list(list(opts))
    except (KeyError, ValueError, AssertionError) as e:
        raise ConfigError(f"command-line override: {e.args[0] if e.args else e}") from None
    _check_device(cfg)
    if cfg.SOLVER.AMP.ENABLED and not cfg.MODEL.DEVICE.startswith("cuda"):
        logger.warning("SOLVER.AMP.ENABLED applies to CUDA training only: training in float32 on %s", cfg.MODEL.DEVICE)
        cfg.SOLVER.AMP.ENABLED = False
    if check_datasets:
        _check_datasets(cfg)
    if cfg.MODEL.DEVICE == "cpu":
        # Detectron2's ROIAlign (every R-CNN pooler) then runs on the project's multi-threaded kernels.
        register_fast_roi_align()
    if freeze:
        cfg.freeze()
    return cfg


def setup_tool_cfg(config_file: str, opts: Sequence[str] = ()) -> CfgNode:
    """The config of a command-line tool that builds a model without reading data (analysis,
    export): on the CPU unless ``opts`` say otherwise, datasets not checked. A :class:`ConfigError`
    ends the process with its one-line ``error:`` message and exit status 2."""
    try:
        return setup_cfg(config_file, ["MODEL.DEVICE", "cpu", *opts], check_datasets=False)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
