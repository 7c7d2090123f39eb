"""Models built from the SOTR configs have exactly the official state-dict keys (in order), shapes and
parameter counts (``shared/reference/sotr/{R50,R101,R_101_DCN}.json``), so official checkpoints load
unchanged."""
import gc
import json

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from conftest import REPO, shared_path
from segcommon.engine import setup_cfg
from segcommon.manifest import compare_manifests, model_manifest

NAMES = ["R50", "R101", "R_101_DCN"]
NUM_PARAMS = {"R50": 63_164_224, "R101": 82_104_128, "R_101_DCN": 84_033_386}


def build(name: str):
    cfg = setup_cfg(str(REPO / "configs" / "sotr" / f"{name}.yaml"), ["MODEL.DEVICE", "cpu"], check_datasets=False)
    return build_model(cfg)


def reference(name: str):
    return json.loads(shared_path("reference", "sotr", f"{name}.json").read_text())


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_matches_official(name):
    ref = reference(name)
    model = build(name)
    ours = model_manifest(model)
    del model
    gc.collect()
    diffs = compare_manifests(ours, ref)
    assert not diffs, "\n".join(diffs[:30])
    assert list(ours["state_dict"]) == list(ref["state_dict"]), "same keys, different order"
    assert ours["num_params"] == ref["num_params"] == NUM_PARAMS[name]


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_with_official_keys_loads_strictly(name, tmp_path):
    ref = reference(name)["state_dict"]
    torch.manual_seed(0)
    checkpoint = {k: torch.randn(shape) for k, shape in ref.items()}
    model = build(name)
    model.load_state_dict(checkpoint, strict=True)
    state = model.state_dict()
    for k in ("cate_head.transformer.layers.blocks.0.0.fn.g", "cate_head.kernel_pred.weight",
              "mask_head.conv_pred.1.bias"):
        assert torch.equal(state[k], checkpoint[k]), k
    assert state["cate_head.transformer.layers.blocks.0.0.fn.g"].dim() == 0

    # The same through Detectron2's checkpointer, from a bare {"model": state_dict} file.
    path = tmp_path / "official.pth"
    torch.save({"model": checkpoint}, path)
    incompatible = DetectionCheckpointer(build(name))._load_model(torch.load(path, weights_only=True))
    assert not incompatible.missing_keys and not incompatible.unexpected_keys
    assert not incompatible.incorrect_shapes
