from .defaults import ConfigError, get_project_cfg, setup_cfg, setup_tool_cfg
from .trainer import Trainer

__all__ = ["ConfigError", "get_project_cfg", "setup_cfg", "setup_tool_cfg", "Trainer"]
