"""Optional C++ kernels compiled on first use with ``torch.utils.cpp_extension.load``.

A C++ compiler and ninja are needed; ``tools/install.sh`` triggers the builds so that they are cached
(by PyTorch, under ``$TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``) before the
first model runs. When a kernel cannot be built, :meth:`CompiledExtension.load` returns None, the
log says why once, and its callers use their pure-PyTorch (or torchvision) path.
"""
import logging
import os
import shutil
import sys
import threading
from typing import Optional

__all__ = ["CompiledExtension"]

logger = logging.getLogger(__name__)


class CompiledExtension:
    """One optional compiled kernel: built (or loaded from PyTorch's cache) once per process.

    Args:
        name: the extension's module name (also its cache folder).
        source: path of the C++ source.
        what: what the kernel computes, for the log ("RoIAlign on CPU").
        disable_env: environment variable that, set to ``disable_value``, turns the kernel off.
        disable_value: the value of ``disable_env`` that selects the fallback path.
    """

    def __init__(self, name: str, source: str, what: str, disable_env: str, disable_value: str):
        self.name = name
        self.source = source
        self.what = what
        self.disable_env = disable_env
        self.disable_value = disable_value
        self._lock = threading.Lock()
        self._module = None
        self.failure: Optional[str] = None  # why the kernel is not used, once resolved

    def load(self, verbose: bool = False):
        """The compiled module, or None (the reason logged once) when disabled or not buildable."""
        if self._module is not None or self.failure is not None:  # resolved: no lock on every call
            return self._module
        with self._lock:
            if self._module is not None or self.failure is not None:
                return self._module
            if os.environ.get(self.disable_env, "").lower() == self.disable_value:
                self.failure = f"disabled by {self.disable_env}={self.disable_value}"
                logger.info(f"{self.what}: compiled kernel not used ({self.failure}).")
                return None
            if shutil.which("ninja") is None:
                # The ninja wheel installs its binary beside the interpreter, which is on PATH only
                # in an activated environment.
                os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
            try:
                from torch.utils.cpp_extension import load

                self._module = load(name=self.name, sources=[self.source], extra_cflags=["-O3"], verbose=verbose)
            except Exception as e:  # no compiler, no ninja, unsupported platform ...
                message = str(e).strip()
                self.failure = f"{type(e).__name__}: {message.splitlines()[-1] if message else ''}"
                logger.warning(f"{self.what}: the compiled CPU kernel could not be built ({self.failure}).")
        return self._module
