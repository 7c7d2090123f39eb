"""What the Detectron2 wrappers of the shared transformer backbones (Swin, MiT) have in common:
a model whose ``forward`` returns one map per stage, exposed under the names ``res2``..``res5``."""
from typing import Dict, Sequence

from detectron2.layers import ShapeSpec
from torch import Tensor

__all__ = ["NamedStageOutputs"]


class NamedStageOutputs:
    """Mixin placed before the wrapped model in the bases, e.g.
    ``class D2SwinTransformer(NamedStageOutputs, SwinTransformer, Backbone)``: the wrapped model's
    ``forward`` returns the stage maps in order, and this one returns the selected ones by name."""

    _STAGE_NAMES = ("res2", "res3", "res4", "res5")

    def _set_stage_outputs(
        self, config_key: str, out_features: Sequence[str], strides: Sequence[int], channels: Sequence[int]
    ) -> None:
        """Selects ``out_features`` among the first ``len(strides)`` stage names; ``config_key`` names
        the config entry in the error for an unknown name."""
        names = self._STAGE_NAMES[: len(strides)]
        unknown = [n for n in out_features if n not in names]
        if unknown:
            raise ValueError(f"{config_key}: unknown {unknown}; expected a subset of {list(names)}")
        self._out_features = [n for n in names if n in out_features]
        self._out_feature_strides = dict(zip(names, strides))
        self._out_feature_channels = dict(zip(names, channels))

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        """x: (N, C, H, W) -> {"res2".."res5": (N, C_i, ceil(H/s_i), ceil(W/s_i))} (selected ones)."""
        if x.dim() != 4:
            mro = type(self).__mro__
            wrapped = mro[mro.index(NamedStageOutputs) + 1].__name__
            raise ValueError(f"{wrapped} takes an input of shape (N, C, H, W), got {tuple(x.shape)}")
        outs = super().forward(x)
        return {name: out for name, out in zip(self._STAGE_NAMES, outs) if name in self._out_features}

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {
            n: ShapeSpec(channels=self._out_feature_channels[n], stride=self._out_feature_strides[n])
            for n in self._out_features
        }
