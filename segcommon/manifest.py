"""State-dict manifests: ``{"num_params": N, "state_dict": {key: shape}}``, the format of the reference
manifests taken from the official implementations (``shared/reference/<model>/*.json``). A model whose
manifest matches an official one loads that model's official checkpoints unchanged."""
from typing import Dict, List

import torch

__all__ = ["model_manifest", "compare_manifests"]


def model_manifest(model: torch.nn.Module) -> Dict:
    """``num_params`` (all parameters, frozen included) and the shape of every state-dict entry."""
    return {
        "num_params": sum(p.numel() for p in model.parameters()),
        "state_dict": {k: list(v.shape) for k, v in model.state_dict().items()},
    }


def compare_manifests(ours: Dict, reference: Dict) -> List[str]:
    """Differences between two manifests, one human-readable line each (empty when they match)."""
    a, b = ours["state_dict"], reference["state_dict"]
    lines = [f"missing key (in reference, not in model): {k} {b[k]}" for k in b if k not in a]
    lines += [f"unexpected key (in model, not in reference): {k} {a[k]}" for k in a if k not in b]
    lines += [
        f"shape mismatch: {k} model {a[k]} vs reference {b[k]}"
        for k in a
        if k in b and list(a[k]) != list(b[k])
    ]
    if ours["num_params"] != reference["num_params"]:
        lines.append(f"num_params: model {ours['num_params']:,} vs reference {reference['num_params']:,}")
    return lines
