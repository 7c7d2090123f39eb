"""What every ``tools/convert_*.py`` shares: reading a foreign checkpoint, reporting the entries
that could not be converted, and writing a Detectron2 ``.pkl`` that ``MODEL.WEIGHTS`` loads.

The converters follow one contract: exit status 2 when the input cannot be read, 1 (and nothing
written) when any entry is unmatched or missing, 0 otherwise.
"""
import argparse
import pickle
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import torch

__all__ = [
    "ConversionError",
    "converter_parser",
    "load_and_convert",
    "load_state_dict",
    "report_problems",
    "save_d2_checkpoint",
]


class ConversionError(ValueError):
    """The input is not a checkpoint the converter can read or convert."""


def load_state_dict(path: str, allow_pickle: bool = False) -> Dict[str, torch.Tensor]:
    """
    Loads a ``torch.save`` file and returns its state dict: the ``state_dict`` or ``model`` entry
    when the file wraps one, with a ``module.`` prefix (DistributedDataParallel) removed.

    Args:
        allow_pickle: unpickle arbitrary objects (only for trusted files holding more than tensors);
            by default only tensors and plain containers are accepted (``weights_only``).

    Raises:
        ConversionError: missing or unreadable file, or not a non-empty dict of tensors.
    """
    if not Path(path).is_file():
        raise ConversionError(f"{path}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except pickle.UnpicklingError as e:
        hint = "" if allow_pickle else "; if it holds more than tensors and you trust it, re-run with --allow-pickle"
        raise ConversionError(f"{path}: cannot load ({str(e).splitlines()[0]}){hint}") from None
    except RuntimeError as e:  # not a torch.save file
        raise ConversionError(f"{path}: cannot load ({str(e).splitlines()[0]})") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not obj:
        raise ConversionError(f"{path}: expected a (non-empty) state dict, got {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ConversionError(f"{path}: entries that are not tensors: {bad[:5]}")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def converter_parser(doc: str, input_help: str) -> argparse.ArgumentParser:
    """The command line of a converter whose docstring is ``doc``: ``input``, ``output`` (the ``.pkl``
    to write) and ``--allow-pickle``; a converter adds its own options."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", help=input_help)
    parser.add_argument("output", help="Detectron2 weights to write (.pkl)")
    parser.add_argument(
        "--allow-pickle",
        action="store_true",
        help="load with full unpickling (only for trusted files holding more than tensors)",
    )
    return parser


def load_and_convert(
    args: argparse.Namespace, convert: Callable[[Dict[str, torch.Tensor]], Tuple[Dict[str, torch.Tensor], Any]]
) -> Optional[Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor], Any]]:
    """Loads ``args.input`` (see :func:`load_state_dict`) and applies ``convert`` to it; returns
    (input state dict, converted state dict, report), or None after printing the error when the input
    cannot be read or converted (the converter then exits with status 2)."""
    try:
        sd = load_state_dict(args.input, args.allow_pickle)
        out, report = convert(sd)
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return None
    return sd, out, report


def report_problems(problems: Mapping[str, List[str]]) -> bool:
    """Prints each non-empty list of ``problems`` (kind -> entry descriptions) to stderr, followed
    by "nothing written" if there was any. Returns True when there was a problem."""
    failed = False
    for kind, lines in problems.items():
        if lines:
            failed = True
            print(f"error: {len(lines)} {kind} entries:", file=sys.stderr)
            for line in lines:
                print(f"  {line}", file=sys.stderr)
    if failed:
        print("error: nothing written", file=sys.stderr)
    return failed


def save_d2_checkpoint(
    state_dict: Mapping[str, torch.Tensor], path: str, author: str, matching_heuristics: bool
) -> None:
    """
    Writes ``{"model": {name: ndarray}, "__author__": author, "matching_heuristics": ...}``, the
    ``.pkl`` layout Detectron2's checkpointer reads. ``matching_heuristics`` True lets it match names
    by suffix (for backbone-only files whose names lack the ``backbone.`` prefix); False requires the
    exact names of the model.
    """
    res = {
        "model": {k: v.detach().cpu().numpy() for k, v in state_dict.items()},
        "__author__": author,
        "matching_heuristics": matching_heuristics,
    }
    with open(path, "wb") as f:
        pickle.dump(res, f)
    print(f"wrote {len(state_dict)} entries to {path}")
