"""Models built from the official Transfiner configs have exactly the reference state-dict keys (in
order), shapes and parameter counts (``shared/reference/transfiner/*.json``), so official checkpoints
load unchanged; the four training-only boundary-branch keys may be absent from a checkpoint."""
import gc
import json

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from conftest import REPO, shared_path
from segcommon.engine import setup_cfg
from segcommon.manifest import compare_manifests, model_manifest

# manifest name -> config under configs/transfiner/
CONFIGS = {
    "mask_rcnn_R_50_FPN_3x": "transfiner/mask_rcnn_R_50_FPN_3x.yaml",
    "mask_rcnn_R_101_FPN_3x": "transfiner/mask_rcnn_R_101_FPN_3x.yaml",
    "mask_rcnn_R_50_FPN_3x_deform": "transfiner/mask_rcnn_R_50_FPN_3x_deform.yaml",
    "mask_rcnn_R_101_FPN_3x_deform": "transfiner/mask_rcnn_R_101_FPN_3x_deform.yaml",
    "mask_rcnn_swint_FPN_3x": "transfiner/mask_rcnn_swint_FPN_3x.yaml",
    "mask_rcnn_swinb_FPN_3x": "transfiner/mask_rcnn_swinb_FPN_3x.yaml",
    "lvis_mask_rcnn_X_101_32x8d_FPN_1x": "lvis_mask_rcnn_X_101_32x8d_FPN_1x.yaml",
}
NUM_PARAMS = {"mask_rcnn_R_50_FPN_3x": 53_174_836, "mask_rcnn_R_101_FPN_3x": 72_114_740}
BOUNDARY_KEYS = [
    "roi_heads.mask_head.deconv_bo.weight",
    "roi_heads.mask_head.deconv_bo.bias",
    "roi_heads.mask_head.predictor_bo.weight",
    "roi_heads.mask_head.predictor_bo.bias",
]


def build(name: str, opts=()):
    cfg = setup_cfg(str(REPO / "configs" / "transfiner" / CONFIGS[name]), ["MODEL.DEVICE", "cpu", *opts],
                    check_datasets=False)
    return build_model(cfg)


def reference(name: str):
    return json.loads(shared_path("reference", "transfiner", f"{name}.json").read_text())


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_transfiner_state_dict_matches_official(name):
    ref = reference(name)
    model = build(name)
    ours = model_manifest(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    del model
    gc.collect()
    diffs = compare_manifests(ours, ref)
    assert not diffs, "\n".join(diffs[:30])
    assert list(ours["state_dict"]) == list(ref["state_dict"]), "same keys, different order"
    assert trainable == ref["num_params_trainable"]
    if name in NUM_PARAMS:
        assert ours["num_params"] == NUM_PARAMS[name]


def test_transfiner_boundary_keys_are_the_optional_ones():
    assert reference("mask_rcnn_R_50_FPN_3x")["optional_in_released_checkpoints"] == BOUNDARY_KEYS


@pytest.mark.parametrize("drop_boundary", [False, True], ids=["full", "without_boundary_branch"])
def test_transfiner_checkpoint_with_official_keys_loads(drop_boundary, tmp_path):
    ref = reference("mask_rcnn_R_50_FPN_3x")["state_dict"]
    torch.manual_seed(0)
    checkpoint = {k: torch.randn(shape) for k, shape in ref.items() if not (drop_boundary and k in BOUNDARY_KEYS)}
    path = tmp_path / "official.pth"
    torch.save({"model": checkpoint}, path)
    model = build("mask_rcnn_R_50_FPN_3x")
    incompatible = DetectionCheckpointer(model)._load_model(torch.load(path, weights_only=True))
    assert sorted(incompatible.missing_keys) == (sorted(BOUNDARY_KEYS) if drop_boundary else [])
    assert not incompatible.unexpected_keys and not incompatible.incorrect_shapes
    state = model.state_dict()
    for k in ("roi_heads.mask_pooler.conv_norm_relus_semantic.6.weight",
              "roi_heads.mask_head.encoder.layers.2.self_attn.in_proj_weight",
              "roi_heads.mask_head.encoder.conv_fuse.weight", "roi_heads.mask_head.predictor_uncertain.weight"):
        assert torch.equal(state[k], checkpoint[k]), k


def test_transfiner_swin_configs_read_bgr_with_rgb_statistics():
    """The official Swin YAMLs contain the top-level INPUT mapping twice; the YAML loader keeps the
    later one, so their ``FORMAT: "RGB"`` is lost and the models see BGR pixels normalised with
    RGB-ordered mean/std (spec §14.3, §18.12). Reproduced as is: the official weights expect it."""
    for name in ("mask_rcnn_swint_FPN_3x", "mask_rcnn_swinb_FPN_3x"):
        cfg = setup_cfg(str(REPO / "configs" / "transfiner" / CONFIGS[name]), ["MODEL.DEVICE", "cpu"],
                        check_datasets=False)
        assert cfg.INPUT.FORMAT == "BGR"
        assert list(cfg.MODEL.PIXEL_MEAN) == [123.675, 116.28, 103.53]
        assert cfg.INPUT.MIN_SIZE_TRAIN[0] == 480


def test_transfiner_r50_1x_builds_the_r50_3x_model():
    """The 1x config differs from the 3x one only in its schedule (the official R50 1x checkpoint
    has the R50 3x state dict)."""
    cfg = setup_cfg(str(REPO / "configs/transfiner/transfiner/mask_rcnn_R_50_FPN_1x.yaml"), ["MODEL.DEVICE", "cpu"],
                    check_datasets=False)
    ours = model_manifest(build_model(cfg))
    assert not compare_manifests(ours, reference("mask_rcnn_R_50_FPN_3x"))
    assert cfg.SOLVER.MAX_ITER < setup_cfg(
        str(REPO / "configs/transfiner/transfiner/mask_rcnn_R_50_FPN_3x.yaml"), ["MODEL.DEVICE", "cpu"], check_datasets=False
    ).SOLVER.MAX_ITER
