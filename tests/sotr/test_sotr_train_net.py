"""train_net.py with SOTR on the small toy set: the toy config trains and evaluates, and the official
R50 config builds and evaluates with random weights (``--eval-only``)."""
import json

import pytest

from conftest import run_train_net


def segm_ap(out_dir):
    """The last ``segm`` AP of a run: detectron2 stores the evaluation results in metrics.json
    (training) or only in the log (eval-only), so the log's csv lines are parsed."""
    lines = (out_dir / "log.txt").read_text().splitlines()
    i = max(k for k, line in enumerate(lines) if "copypaste: Task: segm" in line)
    return float(lines[i + 2].split("copypaste: ")[1].split(",")[0])


@pytest.mark.slow
def test_toy_config_trains_and_evaluates(tmp_path, toy_datasets_env):
    out = tmp_path / "out"
    run_train_net(
        "--config-file", "configs/sotr/toy/SOTR_R18_toy.yaml", "SOLVER.MAX_ITER", 3, "SOLVER.IMS_PER_BATCH", 2,
        "DATALOADER.NUM_WORKERS", 0, "OUTPUT_DIR", out, env_extra=toy_datasets_env, threads=1, timeout=1200,
    )
    metrics = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    train = [m for m in metrics if "total_loss" in m]
    assert train and all(0 < m["total_loss"] < float("inf") for m in train)
    assert {"loss_ins", "loss_cate"} <= set(train[-1])
    assert (out / "model_final.pth").exists()
    assert segm_ap(out) >= 0  # evaluated (not nan)
    assert (out / "inference" / "coco_instances_results.json").exists()


@pytest.mark.slow
def test_official_r50_config_evaluates_with_random_weights(tmp_path, toy_datasets_env):
    out = tmp_path / "out"
    run_train_net(
        "--config-file", "configs/sotr/R50.yaml", "--eval-only", "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "",
        "MODEL.SOTR.NUM_CLASSES", 3, "DATASETS.TEST", "('toy_instance_val',)", "INPUT.MIN_SIZE_TEST", 96,
        "INPUT.MAX_SIZE_TEST", 128,
        "DATALOADER.NUM_WORKERS", 0, "OUTPUT_DIR", out, env_extra=toy_datasets_env, threads=1, timeout=1200,
    )
    assert (out / "inference" / "coco_instances_results.json").exists()
    assert "Task: segm" in (out / "log.txt").read_text()
