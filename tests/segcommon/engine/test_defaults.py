"""The project config and its one-line errors."""
import pytest

from segcommon.engine import ConfigError, get_project_cfg, setup_cfg

TOY_CONFIG = "configs/baselines/mask_rcnn_R18_FPN_toy.yaml"


def test_project_cfg_has_every_model_namespace():
    cfg = get_project_cfg()
    for key in ("MASK_FORMER", "SOTR", "SWIN"):
        assert key in cfg.MODEL, key
    assert cfg.INPUT.DATASET_MAPPER_NAME == "default"
    assert cfg.SOLVER.OPTIMIZER == "SGD"


def test_setup_cfg_merges_file_and_overrides(toy_root):
    cfg = setup_cfg(TOY_CONFIG, ["SOLVER.MAX_ITER", "7"])
    assert cfg.SOLVER.MAX_ITER == 7 and cfg.MODEL.RESNETS.DEPTH == 18
    assert cfg.is_frozen()


def test_missing_config_file():
    with pytest.raises(ConfigError, match="does-not-exist.yaml"):
        setup_cfg("configs/does-not-exist.yaml")


def test_unknown_key_in_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("MODEL:\n  NOT_A_KEY: 1\n")
    with pytest.raises(ConfigError, match="NOT_A_KEY"):
        setup_cfg(str(bad))


def test_unknown_key_in_overrides():
    with pytest.raises(ConfigError, match="SOLVER.NOT_A_KEY"):
        setup_cfg(TOY_CONFIG, ["SOLVER.NOT_A_KEY", "1"], check_datasets=False)


def test_odd_overrides():
    with pytest.raises(ConfigError, match="KEY VALUE"):
        setup_cfg(TOY_CONFIG, ["SOLVER.MAX_ITER"], check_datasets=False)


def test_unregistered_dataset_suggests_close_names(toy_root):
    with pytest.raises(ConfigError, match="toy_instance_trian.*did you mean toy_instance_train"):
        setup_cfg(TOY_CONFIG, ["DATASETS.TRAIN", "('toy_instance_trian',)"])


def test_cuda_device_without_gpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: MODEL.DEVICE cuda is valid")
    with pytest.raises(ConfigError, match="MODEL.DEVICE cpu"):
        setup_cfg(TOY_CONFIG, ["MODEL.DEVICE", "cuda"], check_datasets=False)


def test_amp_is_cuda_only():
    cfg = setup_cfg(TOY_CONFIG, ["SOLVER.AMP.ENABLED", "True"], check_datasets=False)
    assert cfg.SOLVER.AMP.ENABLED is False
