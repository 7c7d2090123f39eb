"""``tools/convert_torchvision_resnet.py``:

* round trip: randomly initialised torchvision R18 (BasicBlock), R50 (Bottleneck) and ResNeXt-50
  32x4d convert onto
  exactly the state dict keys of Detectron2's ``build_resnet_backbone`` (FrozenBN: no
  ``num_batches_tracked``; BN: only those), and the Detectron2 ``res5`` output equals torchvision's
  ``layer4`` output in eval mode (which also checks the stride on the 3x3 conv,
  ``STRIDE_IN_1X1 False``);
* an unknown entry or a wrong shape makes ``main`` name the entry, write nothing and exit 1; the
  classifier ``fc.*`` is dropped without failure; a file that is no ResNet exits 2;
* the ``.pkl`` loads through ``DetectionCheckpointer`` (its suffix heuristics) into ``backbone.*`` of a
  ``build_resnet_backbone`` model and ``backbone.bottom_up.*`` of a ``build_resnet_fpn_backbone`` one,
  leaving no backbone entry unset.
"""
import importlib.util
import pickle

import pytest
import torch
import torchvision
from torch import nn

from conftest import REPO

_spec = importlib.util.spec_from_file_location(
    "convert_torchvision_resnet", REPO / "tools" / "convert_torchvision_resnet.py"
)
conv = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(conv)

_TORCHVISION = {}


def torchvision_resnet(name: str = "resnet18") -> nn.Module:
    """A randomly initialised torchvision ResNet in eval mode, with non-trivial batch-norm statistics."""
    if name not in _TORCHVISION:
        torch.manual_seed(0)
        model = getattr(torchvision.models, name)(weights=None).eval()
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):  # defaults (1, 0, 0, 1) would hide a swapped entry
                for t in (m.weight, m.bias, m.running_mean):
                    t.data.uniform_(-0.5, 0.5)
                m.running_var.data.uniform_(0.5, 1.5)
                m.weight.data.add_(1)
        _TORCHVISION[name] = model
    return _TORCHVISION[name]


def d2_cfg(depth: int, norm: str = "FrozenBN", backbone: str = "build_resnet_backbone", groups=(1, 64)):
    from detectron2.config import get_cfg

    cfg = get_cfg()
    cfg.MODEL.BACKBONE.NAME = backbone
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    cfg.MODEL.RESNETS.DEPTH = depth
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64 if depth < 50 else 256
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False
    cfg.MODEL.RESNETS.NUM_GROUPS, cfg.MODEL.RESNETS.WIDTH_PER_GROUP = groups
    cfg.MODEL.RESNETS.NORM = norm
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    return cfg


def convert_file(tmp_path, sd):
    src, dst = tmp_path / "resnet.pth", tmp_path / "resnet.pkl"
    torch.save(sd, src)
    rc = conv.main([str(src), str(dst)])
    return rc, dst


@pytest.mark.parametrize("name,depth,groups,norm", [
    ("resnet18", 18, (1, 64), "FrozenBN"),
    ("resnet50", 50, (1, 64), "BN"),
    ("resnext50_32x4d", 50, (32, 4), "FrozenBN"),
])
def test_round_trip_matches_torchvision_layer4(tmp_path, capsys, name, depth, groups, norm):
    from detectron2.layers import ShapeSpec
    from detectron2.modeling.backbone.resnet import build_resnet_backbone

    tv = torchvision_resnet(name)
    rc, dst = convert_file(tmp_path, tv.state_dict())
    assert rc == 0
    stdout = capsys.readouterr().out
    assert "dropped the classifier: fc.weight, fc.bias" in stdout
    for line in (
        f"MODEL.RESNETS.DEPTH {depth}",
        "MODEL.RESNETS.STRIDE_IN_1X1 False",
        "MODEL.PIXEL_STD [58.395, 57.120, 57.375]",
        "INPUT.FORMAT RGB",
    ):
        assert line in stdout
    data = pickle.loads(dst.read_bytes())
    assert data["__author__"] == "torchvision" and data["matching_heuristics"] is True

    if groups != (1, 64):
        assert f"MODEL.RESNETS.NUM_GROUPS {groups[0]}" in stdout and f"WIDTH_PER_GROUP {groups[1]}" in stdout
    d2 = build_resnet_backbone(d2_cfg(depth, norm, groups=groups), ShapeSpec(channels=3)).eval()
    own = [k for k in d2.state_dict() if not k.endswith("num_batches_tracked")]
    assert list(data["model"]) == own  # the backbone's keys, in its order
    d2.load_state_dict({k: torch.as_tensor(v) for k, v in data["model"].items()}, strict=False)

    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        y = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
        y = tv.layer4(tv.layer3(tv.layer2(tv.layer1(y))))
        torch.testing.assert_close(d2(x)["res5"], y, atol=1e-4, rtol=1e-4)


def test_unknown_entry_and_wrong_shape_are_refused(tmp_path, capsys):
    sd = dict(torchvision_resnet().state_dict())
    sd["layer2.1.se.fc.weight"] = torch.zeros(8, 128)
    sd["layer3.0.bn2.bias"] = torch.zeros(7)
    rc, dst = convert_file(tmp_path, sd)
    assert rc == 1 and not dst.exists()
    err = capsys.readouterr().err
    assert "1 unmatched entries" in err and "layer2.1.se.fc.weight" in err
    assert "1 mismatched entries" in err and "layer3.0.bn2.bias [7] (backbone res4.0.conv2.norm.bias: [256])" in err
    assert "missing" not in err and "nothing written" in err

    # A Bottleneck entry in a BasicBlock ResNet has a rule but no backbone entry; a dropped stem
    # entry is missing.
    sd = dict(torchvision_resnet().state_dict())
    sd["layer1.0.conv3.weight"] = torch.zeros(64, 64, 1, 1)
    del sd["bn1.running_var"]
    _, report = conv.convert(sd)
    assert report["unmatched"] == ["layer1.0.conv3.weight [64, 64, 1, 1] (-> res2.0.conv3.weight: not in the backbone)"]
    assert report["missing"] == ["stem.conv1.norm.running_var [64]"] and report["mismatched"] == []
    assert sorted(k for k in report["dropped"] if not k.endswith("num_batches_tracked")) == ["fc.bias", "fc.weight"]

    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, tmp_path / "stem.pth")
    assert conv.main([str(tmp_path / "stem.pth"), str(dst)]) == 2
    assert "blocks of layer1" in capsys.readouterr().err


@pytest.mark.parametrize("backbone,prefix", [
    ("build_resnet_backbone", "backbone."),
    ("build_resnet_fpn_backbone", "backbone.bottom_up."),
])
def test_detection_checkpointer_loads_all_backbone_entries(tmp_path, backbone, prefix):
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_backbone

    rc, dst = convert_file(tmp_path, torchvision_resnet().state_dict())
    assert rc == 0
    weights = pickle.loads(dst.read_bytes())["model"]
    model = nn.Module()
    model.backbone = build_backbone(d2_cfg(18, backbone=backbone))
    checkpointer = DetectionCheckpointer(model)
    incompatible = checkpointer._load_model(checkpointer._load_file(str(dst)))
    missing = [k for k in incompatible.missing_keys if k.startswith(prefix)]
    assert missing == [] and incompatible.unexpected_keys == []
    state = model.state_dict()
    for k, v in weights.items():
        assert torch.equal(state[prefix + k], torch.as_tensor(v)), k
