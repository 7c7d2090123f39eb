"""Exporting an :class:`ExportAdapter` to ONNX, ``torch.export`` (.pt2) or TorchScript.

ONNX and ``torch.export`` go through ``torch.export.export`` (non-strict) with a dynamic height and
width (multiples of the adapter's size divisibility); ONNX is then translated by PyTorch's ONNX
exporter (opset 18: ``GridSample`` with float32 grids, so no custom operator is needed at run time).
TorchScript is traced at the sample's size.

A failure raises :class:`ExportError`, whose message names the blocking operator (when the exporter
names one) and the part of the model that was running (the innermost submodule, by its qualified name
and class), followed by the exporter's own first lines.
"""
import logging
import os
import re
import traceback
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional

import torch
from torch import nn

from .adapter import ExportAdapter

__all__ = ["ExportError", "EXPORT_FORMATS", "export_adapter"]

logger = logging.getLogger(__name__)

EXPORT_FORMATS = ("onnx", "export", "torchscript")
ONNX_OPSET = 18
# Sides accepted by the dynamic-shape exports (in pixels; multiples of the size divisibility when > 1).
_MIN_SIDE, _MAX_SIDE = 64, 4096


class ExportError(RuntimeError):
    """The model could not be exported; the message names the operator and the model part."""


def _model_path(name: str) -> str:
    """A submodule's qualified name as in the wrapped model (an adapter holds it as ``model``)."""
    return (name[len("model."):] if name.startswith("model.") else name) or "<root>"


class _ModuleTracker:
    """Records the stack of submodules whose forward is running (hooks on every submodule)."""

    def __init__(self, root: nn.Module):
        self.names = {m: _model_path(n) for n, m in root.named_modules()}
        self.stack: List[nn.Module] = []
        self.handles = []
        for m in self.names:
            self.handles.append(m.register_forward_pre_hook(self._enter))
            self.handles.append(m.register_forward_hook(self._leave))

    def _enter(self, module, args):
        self.stack.append(module)

    def _leave(self, module, args, output):
        if self.stack and self.stack[-1] is module:
            self.stack.pop()

    def describe(self) -> Optional[str]:
        if not self.stack:
            return None
        m = self.stack[-1]
        return f"{self.names[m]} ({type(m).__name__})"

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


# "No ONNX function found for <OpOverload(op='aten.cummax', ...)>", "aten::foo", "torch.ops.aten.foo".
_OP_PATTERNS = (re.compile(r"op='([\w.:]+)'"), re.compile(r"\b((?:aten|prims|torchvision)(?:::|\.)\w+)"))


def _operators_in(message: str) -> List[str]:
    """Operator names (``aten.foo``, ``aten::foo``) found in an exporter's message, first seen first."""
    found: List[str] = []
    for pattern in _OP_PATTERNS:
        for m in pattern.finditer(message):
            if m.group(1) not in found:
                found.append(m.group(1))
    return found


def _source_line(exc: BaseException) -> Optional[str]:
    """The innermost frame of the failure outside torch itself: ``file:line in func``."""
    torch_dir = os.path.dirname(torch.__file__)
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith(torch_dir)]
    if not frames:
        return None
    f = frames[-1]
    return f"{f.filename}:{f.lineno} in {f.name}: {(f.line or '').strip()}"


def _first_lines(exc: BaseException, n: int = 6) -> str:
    text = str(exc).strip().splitlines()
    return "\n".join("    " + line for line in text[:n] if line.strip())


@contextmanager
def _tracked(module: nn.Module) -> Iterator[_ModuleTracker]:
    tracker = _ModuleTracker(module)
    try:
        yield tracker
    finally:
        tracker.remove()


def _dynamic_shapes(adapter: ExportAdapter, sample: torch.Tensor) -> Dict:
    d = adapter.size_divisibility
    if sample.shape[-2] % d or sample.shape[-1] % d:
        raise ValueError(f"sample size {tuple(sample.shape[-2:])} is not a multiple of the size divisibility {d}")
    if d > 1:
        h = d * torch.export.Dim("h_blocks", min=1, max=_MAX_SIDE // d)
        w = d * torch.export.Dim("w_blocks", min=1, max=_MAX_SIDE // d)
    else:
        # At least 64: smaller sides make strided feature maps coincide in size, which the models'
        # resizing shortcuts would have to branch on.
        h = torch.export.Dim("height", min=_MIN_SIDE, max=_MAX_SIDE)
        w = torch.export.Dim("width", min=_MIN_SIDE, max=_MAX_SIDE)
    shapes = {"image": {2: h, 3: w}}
    shapes.update({name: None for name in adapter.input_names[1:]})
    return shapes


def _sample_inputs(adapter: ExportAdapter, sample: torch.Tensor) -> tuple:
    """``forward``'s arguments for tracing at ``sample``, taken as an unpadded image."""
    return adapter.network_inputs(sample, tuple(sample.shape[-2:]))


def _tracing_failure(stage: str, tracker: _ModuleTracker, e: Exception) -> ExportError:
    """The error of a failure while ``stage`` ran the model: the submodule that was running, the
    operator if the message names one, and the innermost source line outside torch."""
    msg = f"{stage} failed in model part {tracker.describe() or '<outside any submodule>'}"
    ops = _operators_in(str(e))
    if ops:
        msg += f", operator {ops[0]}"
    msg += f": {type(e).__name__}"
    where = _source_line(e)
    if where:
        msg += f"\n  at {where}"
    return ExportError(msg + "\n" + _first_lines(e))


def export_program(adapter: ExportAdapter, sample: torch.Tensor, dynamic: bool = True):
    """``torch.export.export`` of ``adapter`` at ``sample`` (1, 3, H, W); raises :class:`ExportError`."""
    shapes = _dynamic_shapes(adapter, sample) if dynamic else None
    with torch.no_grad(), _tracked(adapter) as tracker:
        try:
            return torch.export.export(adapter, _sample_inputs(adapter, sample), dynamic_shapes=shapes, strict=False)
        except Exception as e:
            raise _tracing_failure("torch.export", tracker, e) from e


def _module_of_operator(program, ops: List[str]) -> Optional[str]:
    """The submodule (qualified name and class) of the first graph node calling one of ``ops``."""
    wanted = {re.split(r"::|\.", op, maxsplit=1)[1].split(".")[0] for op in ops}
    for node in program.graph.nodes:
        if node.op != "call_function":
            continue
        name = getattr(node.target, "__name__", str(node.target)).split(".")[0]
        if name in wanted:
            stack = node.meta.get("nn_module_stack") or {}
            if stack:
                path, cls = list(stack.values())[-1]
                cls_name = cls if isinstance(cls, str) else getattr(cls, "__name__", str(cls))
                return f"{_model_path(path)} ({cls_name.rsplit('.', 1)[-1]})"
            return "<root>"
    return None


def export_onnx(adapter: ExportAdapter, sample: torch.Tensor, path: str, dynamic: bool = True) -> str:
    """Writes ``path`` (.onnx); input "image", outputs ``adapter.output_names``."""
    program = export_program(adapter, sample, dynamic)
    try:
        onnx_program = torch.onnx.export(
            program,
            _sample_inputs(adapter, sample),
            dynamo=True,
            input_names=list(adapter.input_names),
            output_names=list(adapter.output_names),
            opset_version=ONNX_OPSET,
            verbose=False,
        )
        onnx_program.save(path)
    except Exception as e:
        ops = _operators_in(str(e))
        part = _module_of_operator(program, ops) if ops else None
        msg = "ONNX translation failed"
        if ops:
            msg += f" at operator {ops[0]}"
        if part:
            msg += f" in model part {part}"
        raise ExportError(msg + f": {type(e).__name__}\n" + _first_lines(e)) from e
    return path


def export_adapter(
    adapter: ExportAdapter, sample: torch.Tensor, fmt: str, output_dir: str, dynamic: bool = True
) -> str:
    """Exports ``adapter`` to ``output_dir/model.{onnx,pt2,ts}``; returns the file's path."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {EXPORT_FORMATS}")
    os.makedirs(output_dir, exist_ok=True)
    adapter = adapter.eval()
    if fmt == "onnx":
        return export_onnx(adapter, sample, os.path.join(output_dir, "model.onnx"), dynamic)
    if fmt == "export":
        path = os.path.join(output_dir, "model.pt2")
        torch.export.save(export_program(adapter, sample, dynamic), path)
        return path
    if not adapter.supports_torchscript:
        raise ExportError(
            f"{type(adapter).__name__} cannot be traced to TorchScript: its output sizes depend on the data"
            " (a trace would freeze them); use --format onnx or export"
        )
    path = os.path.join(output_dir, "model.ts")
    with torch.no_grad(), _tracked(adapter) as tracker:
        try:
            traced = torch.jit.trace(adapter, _sample_inputs(adapter, sample), check_trace=False)
        except Exception as e:
            raise _tracing_failure("TorchScript tracing", tracker, e) from e
    logger.warning(
        "TorchScript traces at the sample's size %s: use the ONNX or torch.export formats for other sizes",
        tuple(sample.shape[-2:]),
    )
    traced.save(path)
    return path
