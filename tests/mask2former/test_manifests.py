"""Models built from our Mask2Former configs have exactly the official state-dict keys, shapes and
parameter counts (``shared/reference/mask2former/*.json``), so official checkpoints load unchanged."""
import gc
import json
from pathlib import Path

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from conftest import REPO, SHARED
from segcommon.engine import setup_cfg
from segcommon.manifest import compare_manifests, model_manifest

MANIFEST_DIR = SHARED / "reference" / "mask2former"
MANIFESTS = sorted(p for p in MANIFEST_DIR.glob("*__*.json")) if MANIFEST_DIR.exists() else []


def config_of(manifest: Path) -> Path:
    return REPO / "configs" / "mask2former" / (manifest.stem.replace("__", "/") + ".yaml")


def build(config: Path):
    cfg = setup_cfg(str(config), ["MODEL.DEVICE", "cpu"], check_datasets=False)
    return build_model(cfg)


def test_all_47_manifests_present():
    if not MANIFEST_DIR.exists():
        pytest.skip(f"{MANIFEST_DIR} is absent (it exists only beside the project's own checkout)")
    assert len(MANIFESTS) == 47


@pytest.mark.slow
@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda p: p.stem)
def test_state_dict_matches_official(manifest):
    reference = json.loads(manifest.read_text())
    model = build(config_of(manifest))
    diffs = compare_manifests(model_manifest(model), reference)
    del model
    gc.collect()
    assert not diffs, "\n".join(diffs[:30])


@pytest.mark.parametrize("name", ["coco__instance-segmentation__maskformer2_R50_bs16_50ep",
                                  "ade20k__semantic-segmentation__swin__maskformer2_swin_tiny_bs16_160k"])
def test_checkpoint_with_official_keys_loads(name, tmp_path):
    manifest = MANIFEST_DIR / f"{name}.json"
    if not manifest.exists():
        pytest.skip(f"{manifest} is absent (it exists only beside the project's own checkout)")
    reference = json.loads(manifest.read_text())["state_dict"]
    torch.manual_seed(0)
    checkpoint = {k: torch.randn(shape) if shape else torch.randn(()) for k, shape in reference.items()}
    for k, v in checkpoint.items():
        if k.endswith("relative_position_index") or k.endswith("num_batches_tracked"):
            checkpoint[k] = torch.zeros(v.shape, dtype=torch.long)
    path = tmp_path / "official.pth"
    torch.save({"model": checkpoint}, path)

    model = build(config_of(manifest))
    incompatible = DetectionCheckpointer(model)._load_model(torch.load(path, weights_only=True))
    assert not incompatible.missing_keys and not incompatible.unexpected_keys
    assert not incompatible.incorrect_shapes
    state = model.state_dict()
    for k in ("sem_seg_head.predictor.query_feat.weight", "criterion.empty_weight"):
        assert torch.equal(state[k], checkpoint[k]), k
