"""The add-config functions and the config trees under ``configs/``.

* Every ``.yaml`` under ``configs/`` merges into the project's config (Detectron2's defaults, the
  shared keys, then all four models' keys) without an unknown key, and survives a YAML round trip.
* Each add-config function is idempotent, adds the shared keys, changes no existing default, and owns
  keys no other package defines.
* Every reference manifest (``shared/reference/<model>/*.json``) has its config file, and the official
  Mask2Former configs give the settings recorded in the manifests.
* Where the official code set a default for a key that this project defines elsewhere (shared keys,
  Detectron2's), the official YAMLs that rely on it are exactly the known ones listed here.
"""
import fnmatch
import json
from typing import Any, Dict, List, Set

import pytest
from detectron2.config import CfgNode, get_cfg

from cft import add_cft_config
from conftest import REPO, shared_path
from mask2former import add_mask2former_config, add_maskformer2_config
from segcommon.backbone.config import add_swin_config
from segcommon.config import add_common_config
from sotr import add_sotr_config
from transfiner import add_transfiner_config

CONFIGS = REPO / "configs"
CONFIG_FILES = sorted(str(p.relative_to(CONFIGS)) for p in CONFIGS.rglob("*.yaml"))

ADD_FUNCTIONS = {
    "mask2former": add_maskformer2_config,
    "sotr": add_sotr_config,
    "transfiner": add_transfiner_config,
    "cft": add_cft_config,
}


def project_cfg() -> CfgNode:
    cfg = get_cfg()
    add_common_config(cfg)
    for add in ADD_FUNCTIONS.values():
        add(cfg)
    return cfg


_PROJECT_CFG = project_cfg()


def load(rel_path: str, overrides: Dict[str, Any] = None) -> CfgNode:
    """The project's config, with ``overrides`` applied as defaults, merged with configs/<rel_path>."""
    cfg = _PROJECT_CFG.clone()
    for key, value in (overrides or {}).items():
        *parents, leaf = key.split(".")
        node = cfg
        for p in parents:
            node = node[p]
        node[leaf] = value
    cfg.merge_from_file(str(CONFIGS / rel_path))
    return cfg


def flatten(node: CfgNode, prefix: str = "") -> Dict[str, Any]:
    """Every key path of ``node``, nodes included (a node maps to the string "<node>")."""
    out = {}
    for k, v in node.items():
        path = prefix + k
        if isinstance(v, CfgNode):
            out[path] = "<node>"
            out.update(flatten(v, path + "."))
        else:
            out[path] = v
    return out


def _as_lists(value: Any) -> Any:
    return [_as_lists(v) for v in value] if isinstance(value, (list, tuple)) else value


def yaml_view(cfg: CfgNode) -> Dict[str, Any]:
    """``flatten(cfg)`` with sequences nested in a sequence read as lists: YAML has no tuples, and
    the merge restores only the outer type (Detectron2's own defaults have such a value:
    ``MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS``, a tuple of tuples)."""
    return {
        k: type(v)(_as_lists(x) for x in v) if isinstance(v, (list, tuple)) else v
        for k, v in flatten(cfg).items()
    }


# ----------------------------------------------------------------------------------------------------
# Every config file


# The project's own small CPU configs, outside the official trees.
PROJECT_CONFIG_DIRS = (
    "mask2former/toy/",
    "mask2former/tiny_coco/",
    "sotr/toy/",
    "sotr/tiny_coco/",
    "cft/toy/",
    "cft/tiny_coco/",
    "transfiner/toy/",
    "transfiner/tiny_coco/",
)


def test_config_trees_complete():
    counts = {}
    for p in CONFIG_FILES:
        if not p.startswith(PROJECT_CONFIG_DIRS):
            counts[p.split("/")[0]] = counts.get(p.split("/")[0], 0) + 1
    # Mask2Former: the 47 image configs + 10 Base files. SOTR: 4 official + SOTR-RT. Transfiner: Base,
    # 7 official, the LVIS one under its official path and under its manifest's name. CFT: 3 Base
    # files + the 11 reference configs.
    assert {k: counts.get(k) for k in ("mask2former", "sotr", "transfiner", "cft")} == {
        "mask2former": 57,
        "sotr": 5,
        "transfiner": 10,
        "cft": 14,
    }


@pytest.mark.parametrize("rel_path", CONFIG_FILES, ids=[p[: -len(".yaml")] for p in CONFIG_FILES])
def test_config_merges_and_round_trips(rel_path):
    cfg = load(rel_path)  # raises KeyError on a key the project does not define
    text = cfg.dump()
    again = project_cfg()
    again.merge_from_other_cfg(CfgNode.load_cfg(text))
    assert yaml_view(again) == yaml_view(cfg)


# ----------------------------------------------------------------------------------------------------
# The add-config functions


@pytest.mark.parametrize("name", sorted(ADD_FUNCTIONS))
def test_add_function_adds_shared_keys_and_is_idempotent(name):
    add = ADD_FUNCTIONS[name]
    cfg = get_cfg()
    add(cfg)
    assert "DATASET_MAPPER_NAME" in cfg.INPUT  # add_common_config was applied
    once = flatten(cfg)
    add(cfg)
    assert flatten(cfg) == once
    full = project_cfg()
    before = flatten(full)
    add(full)
    assert flatten(full) == before


def test_mask2former_alias():
    assert add_mask2former_config is add_maskformer2_config


def _added_keys(add) -> Dict[str, Any]:
    """Keys ``add`` adds to Detectron2's defaults plus the shared keys (common and Swin), after
    checking that it changes none of their values."""
    base = get_cfg()
    add_common_config(base)
    add_swin_config(base)
    cfg = base.clone()
    add(cfg)
    before, after = flatten(base), flatten(cfg)
    changed = {k for k in before if after.get(k, "<missing>") != before[k]}
    assert not changed, f"{add.__name__} changes existing defaults: {sorted(changed)}"
    return {k: v for k, v in after.items() if k not in before}


def test_no_two_packages_define_the_same_key():
    added = {name: set(_added_keys(add)) for name, add in ADD_FUNCTIONS.items()}
    names = sorted(added)
    for i, a in enumerate(names):
        assert added[a], f"{a} adds no key"
        for b in names[i + 1 :]:
            assert not added[a] & added[b], f"{a} and {b} both define {sorted(added[a] & added[b])}"
    # Applied together (in any order), nothing one package adds is lost or changed by another.
    full = flatten(project_cfg())
    for name, add in ADD_FUNCTIONS.items():
        for key, value in _added_keys(add).items():
            assert full[key] == value, (name, key)


def test_shared_helpers_are_idempotent():
    cfg = get_cfg()
    add_common_config(cfg)
    add_swin_config(cfg)
    once = flatten(cfg)
    add_common_config(cfg)
    add_swin_config(cfg)
    assert flatten(cfg) == once


# ----------------------------------------------------------------------------------------------------
# Reference manifests have their configs

# shared/reference/mask2former/<name with "/" written "__">.json -> configs/mask2former/<name>.yaml
MASK2FORMER_MANIFESTS = [
    f"{task}/{name}"
    for task, names in {
        "ade20k/instance-segmentation": [
            "maskformer2_R50_bs16_160k",
            "swin/maskformer2_swin_large_IN21k_384_bs16_160k",
        ],
        "ade20k/panoptic-segmentation": [
            "maskformer2_R50_bs16_160k",
            "swin/maskformer2_swin_large_IN21k_384_bs16_160k",
        ],
        "ade20k/semantic-segmentation": [
            "maskformer2_R101_bs16_90k",
            "maskformer2_R50_bs16_160k",
            "swin/maskformer2_swin_base_384_bs16_160k_res640",
            "swin/maskformer2_swin_base_IN21k_384_bs16_160k_res640",
            "swin/maskformer2_swin_large_IN21k_384_bs16_160k_res640",
            "swin/maskformer2_swin_small_bs16_160k",
            "swin/maskformer2_swin_tiny_bs16_160k",
        ],
        **{
            f"cityscapes/{t}-segmentation": [
                "maskformer2_R101_bs16_90k",
                "maskformer2_R50_bs16_90k",
                "swin/maskformer2_swin_base_IN21k_384_bs16_90k",
                "swin/maskformer2_swin_large_IN21k_384_bs16_90k",
                "swin/maskformer2_swin_small_bs16_90k",
                "swin/maskformer2_swin_tiny_bs16_90k",
            ]
            for t in ("instance", "panoptic", "semantic")
        },
        **{
            f"coco/{t}-segmentation": [
                "maskformer2_R101_bs16_50ep",
                "maskformer2_R50_bs16_50ep",
                "swin/maskformer2_swin_base_384_bs16_50ep",
                "swin/maskformer2_swin_base_IN21k_384_bs16_50ep",
                "swin/maskformer2_swin_large_IN21k_384_bs16_100ep",
                "swin/maskformer2_swin_small_bs16_50ep",
                "swin/maskformer2_swin_tiny_bs16_50ep",
            ]
            for t in ("instance", "panoptic")
        },
        "mapillary-vistas/panoptic-segmentation": [
            "maskformer_R50_bs16_300k",
            "swin/maskformer2_swin_large_IN21k_384_bs16_300k",
        ],
        "mapillary-vistas/semantic-segmentation": [
            "maskformer2_R50_bs16_300k",
            "swin/maskformer2_swin_large_IN21k_384_bs16_300k",
        ],
    }.items()
    for name in names
]

# manifest name -> path of the official file in SysCV/transfiner (relative to its configs/, which is
# configs/transfiner/ here)
TRANSFINER_MANIFESTS = {
    "mask_rcnn_R_50_FPN_3x": "transfiner/mask_rcnn_R_50_FPN_3x.yaml",
    "mask_rcnn_R_101_FPN_3x": "transfiner/mask_rcnn_R_101_FPN_3x.yaml",
    "mask_rcnn_R_50_FPN_3x_deform": "transfiner/mask_rcnn_R_50_FPN_3x_deform.yaml",
    "mask_rcnn_R_101_FPN_3x_deform": "transfiner/mask_rcnn_R_101_FPN_3x_deform.yaml",
    "mask_rcnn_swint_FPN_3x": "transfiner/mask_rcnn_swint_FPN_3x.yaml",
    "mask_rcnn_swinb_FPN_3x": "transfiner/mask_rcnn_swinb_FPN_3x.yaml",
    "lvis_mask_rcnn_X_101_32x8d_FPN_1x": "LVISv0.5-InstanceSegmentation/mask_rcnn_X_101_32x8d_FPN_1x.yaml",
}

SOTR_MANIFESTS = ["R50", "R101", "R_101_DCN"]  # configs/SOTR/<name>.yaml -> configs/sotr/<name>.yaml

CFT_MANIFESTS = ["cft_r50-d32_512x512_ade20k", "cft_mit-b2_512x512_ade20k"]


def test_manifest_configs_exist():
    assert len(MASK2FORMER_MANIFESTS) == 47
    for name in MASK2FORMER_MANIFESTS:
        assert (CONFIGS / "mask2former" / f"{name}.yaml").is_file(), name
    transfiner_names = {p.stem for p in (CONFIGS / "transfiner").rglob("*.yaml")}
    for name, official in TRANSFINER_MANIFESTS.items():
        assert (CONFIGS / "transfiner" / official).is_file(), official
        assert name in transfiner_names, name
    assert (CONFIGS / "transfiner" / "lvis_mask_rcnn_X_101_32x8d_FPN_1x.yaml").is_file()
    for name in SOTR_MANIFESTS:
        assert (CONFIGS / "sotr" / f"{name}.yaml").is_file(), name
    cft_texts = "".join(p.read_text() for p in (CONFIGS / "cft").rglob("*.yaml"))
    for name in CFT_MANIFESTS:
        assert f"{name}.py" in cft_texts, f"no config under configs/cft names the reference {name}.py"


def test_manifest_lists_match_shared_reference():
    ref = shared_path("reference")
    assert {p.stem.replace("__", "/") for p in (ref / "mask2former").glob("*__*.json")} == set(
        MASK2FORMER_MANIFESTS
    )
    transfiner = {p.stem: p for p in (ref / "transfiner").glob("*.json") if p.stem != "test_vectors"}
    assert set(transfiner) == set(TRANSFINER_MANIFESTS)
    for name, path in transfiner.items():
        assert json.loads(path.read_text())["config"] == "configs/" + TRANSFINER_MANIFESTS[name]
    sotr = {p.stem for p in (ref / "sotr").glob("*.json") if p.stem != "test_vectors"}
    assert sotr == set(SOTR_MANIFESTS)
    assert {p.stem for p in (ref / "cft").glob("*.json")} == set(CFT_MANIFESTS)


@pytest.mark.parametrize("name", MASK2FORMER_MANIFESTS)
def test_mask2former_config_matches_manifest(name):
    manifest = shared_path("reference", "mask2former", name.replace("/", "__") + ".json")
    settings = json.loads(manifest.read_text())["key_settings"]
    cfg = load(f"mask2former/{name}.yaml")
    m = cfg.MODEL
    assert m.BACKBONE.NAME == settings["backbone"]
    if settings["resnet_depth"] is not None:
        assert m.RESNETS.DEPTH == settings["resnet_depth"]
        assert m.RESNETS.NORM == settings["resnet_norm"]
    if settings["swin"] is not None:
        assert {k: m.SWIN[k] for k in settings["swin"]} == settings["swin"]
    assert m.SEM_SEG_HEAD.NUM_CLASSES == settings["num_classes"]
    assert m.MASK_FORMER.NUM_OBJECT_QUERIES == settings["num_queries"]
    assert m.MASK_FORMER.DEC_LAYERS == settings["dec_layers_cfg"]
    assert {k: m.MASK_FORMER.TEST[k] for k in settings["test"]} == settings["test"]
    assert list(cfg.DATASETS.TRAIN) == settings["datasets_train"]
    assert list(cfg.DATASETS.TEST) == settings["datasets_test"]
    assert cfg.INPUT.DATASET_MAPPER_NAME == settings["dataset_mapper"]
    assert m.WEIGHTS == settings["weights"]


# ----------------------------------------------------------------------------------------------------
# Official defaults of keys defined elsewhere in this project

MASK2FORMER_OFFICIAL = {  # the official add_maskformer2_config's values of keys owned by segcommon
    "INPUT.DATASET_MAPPER_NAME": "mask_former_semantic",
    "INPUT.COLOR_AUG_SSD": False,
    "INPUT.CROP.SINGLE_CATEGORY_MAX_AREA": 1.0,
    "INPUT.SIZE_DIVISIBILITY": -1,
    "INPUT.IMAGE_SIZE": 1024,
    "INPUT.MIN_SCALE": 0.1,
    "INPUT.MAX_SCALE": 2.0,
    "SOLVER.WEIGHT_DECAY_EMBED": 0.0,
    "SOLVER.OPTIMIZER": "ADAMW",
    "SOLVER.BACKBONE_MULTIPLIER": 0.1,
}
TRANSFINER_VENDORED_D2 = {  # defaults changed in Transfiner's vendored detectron2/config/defaults.py
    "SOLVER.CHECKPOINT_PERIOD": 10000,
    "SOLVER.WEIGHT_DECAY_BIAS": 0.0001,
}
TRANSFINER_SWIN_HELPERS = {  # set by swint/config.py and swinb/config.py
    "SOLVER.OPTIMIZER": "AdamW",
    "MODEL.BACKBONE.FREEZE_AT": -1,
}
TRANSFINER_SWINB = {  # swinb/config.py's MODEL.SWINT defaults where they differ from swint's
    "MODEL.SWINT.EMBED_DIM": 128,
    "MODEL.SWINT.DEPTHS": [2, 2, 18, 2],
    "MODEL.SWINT.NUM_HEADS": [4, 8, 16, 32],
}
OFFICIAL_DEFAULTS = [  # (config files, official defaults that apply to them)
    ("mask2former/*", MASK2FORMER_OFFICIAL),
    ("transfiner/*", TRANSFINER_VENDORED_D2),
    ("transfiner/transfiner/mask_rcnn_swin[tb]_FPN_3x.yaml", TRANSFINER_SWIN_HELPERS),
    ("transfiner/transfiner/mask_rcnn_swinb_FPN_3x.yaml", TRANSFINER_SWINB),
]
# Official configs that rely on one of those defaults (do not set the key), so that they load here with
# a different value than the official code gave them. Anything else must set the key itself.
KNOWN_RELIANCE = [
    ("transfiner/*", set(TRANSFINER_VENDORED_D2)),
    ("transfiner/transfiner/mask_rcnn_swin[tb]_FPN_3x.yaml", set(TRANSFINER_SWIN_HELPERS)),
    ("transfiner/transfiner/mask_rcnn_swinb_FPN_3x.yaml", set(TRANSFINER_SWINB)),
]


def _matching(table: List, rel_path: str) -> List:
    return [entry for pattern, entry in table if fnmatch.fnmatch(rel_path, pattern)]


@pytest.mark.parametrize(
    "rel_path",
    [p for p in CONFIG_FILES if _matching(OFFICIAL_DEFAULTS, p) and not p.startswith(PROJECT_CONFIG_DIRS)],
)
def test_official_configs_relying_on_official_defaults(rel_path):
    official: Dict[str, Any] = {}
    for defaults in _matching(OFFICIAL_DEFAULTS, rel_path):
        official.update(defaults)
    ours, theirs = flatten(load(rel_path)), flatten(load(rel_path, official))
    differs = {k for k in official if ours[k] != theirs[k]}
    expected: Set[str] = set().union(*_matching(KNOWN_RELIANCE, rel_path))
    assert differs == expected
