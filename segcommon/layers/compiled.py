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
        use_avx2: where PyTorch reports an AVX2 (or AVX-512) CPU, build with AVX2 and FMA code
            generation, under a name of its own so that a cache shared with older CPUs keeps a
            portable build too. FMA contraction changes rounding, so kernels that promise bitwise
            equality with another implementation leave it off.
    """

    def __init__(
        self, name: str, source: str, what: str, disable_env: str, disable_value: str, use_avx2: bool = False
    ):
        self.name = name
        self.source = source
        self.what = what
        self.disable_env = disable_env
        self.disable_value = disable_value
        self.use_avx2 = use_avx2
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

                name, cflags = self.name, ["-O3"]
                if self.use_avx2 and _cpu_has_avx2():
                    name, cflags = f"{name}_avx2", cflags + ["-mavx2", "-mfma"]
                self._module = load(name=name, sources=[self.source], extra_cflags=cflags, verbose=verbose)
            except Exception as e:  # no compiler, no ninja, unsupported platform ...
                message = str(e).strip()
                self.failure = f"{type(e).__name__}: {message.splitlines()[-1] if message else ''}"
                logger.warning(f"{self.what}: the compiled CPU kernel could not be built ({self.failure}).")
        return self._module


def _cpu_has_avx2() -> bool:
    import torch

    try:
        return torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")
    except AttributeError:  # PyTorch < 2.1
        return False
