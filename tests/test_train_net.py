"""train_net.py end to end on the toy data: training, --eval-only, --resume and its error lines."""
import json

import pytest

from conftest import run_train_net

TOY_CONFIG = "configs/baselines/mask_rcnn_R18_FPN_toy.yaml"


def test_help_prints_usage():
    r = run_train_net("--help")
    assert "--config-file" in r.stdout and "--eval-only" in r.stdout and "--num-gpus" in r.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--config-file", "configs/nope.yaml"], "config file not found: configs/nope.yaml"),
        (["--config-file", TOY_CONFIG, "SOLVER.NO_SUCH_KEY", "1"], "SOLVER.NO_SUCH_KEY"),
        (["--config-file", TOY_CONFIG, "DATASETS.TEST", "('no_such_set',)"], "'no_such_set' is not registered"),
    ],
)
def test_config_errors_are_one_line(args, message):
    r = run_train_net(*args, check=False)
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1]
    assert "Traceback" not in r.stderr


@pytest.mark.slow
def test_model_zoo_mask_rcnn_trains_two_iterations_on_toy(tmp_path, toy_datasets_env):
    from detectron2 import model_zoo

    config = model_zoo.get_config_file("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml")
    out = tmp_path / "out"
    run_train_net(
        "--config-file", config, "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "MODEL.ROI_HEADS.NUM_CLASSES", 3,
        "DATASETS.TRAIN", "('toy_instance_train',)", "DATASETS.TEST", "()", "SOLVER.IMS_PER_BATCH", 2,
        "SOLVER.MAX_ITER", 2, "SOLVER.BASE_LR", 0.001, "INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MAX_SIZE_TRAIN", 256,
        "DATALOADER.NUM_WORKERS", 0, "OUTPUT_DIR", out,
        env_extra=toy_datasets_env,
    )
    metrics = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    assert metrics[-1]["iteration"] == 1  # Detectron2 writes metrics every 20 iterations and at the end
    assert 0 < metrics[-1]["total_loss"] < float("inf")
    assert (out / "model_final.pth").exists()


@pytest.mark.slow
def test_train_resume_and_eval_only_on_toy(tmp_path, toy_datasets_env):
    env = toy_datasets_env
    out = tmp_path / "out"
    config = ["--config-file", TOY_CONFIG]
    opts = ["SOLVER.IMS_PER_BATCH", 2, "DATALOADER.NUM_WORKERS", 0, "OUTPUT_DIR", out]
    run_train_net(*config, *opts, "SOLVER.MAX_ITER", 3, env_extra=env)
    r = run_train_net(*config, "--resume", *opts, "SOLVER.MAX_ITER", 5, env_extra=env)
    assert "Starting training from iteration 3" in r.stdout + r.stderr, "resume continues from the checkpoint"
    metrics = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    # the resumed run trained iterations 3 and 4 (its final evaluation is logged one step later)
    assert {m["iteration"] for m in metrics} >= {2, 4}
    r = run_train_net(*config, "--eval-only", *opts, "MODEL.WEIGHTS", out / "model_final.pth", env_extra=env)
    log = r.stdout + r.stderr
    assert "Evaluation results for segm" in log and "copypaste: AP,AP50,AP75,APs,APm,APl" in log


@pytest.mark.slow
def test_eval_only_with_semantic_tta(tmp_path, toy_datasets_env):
    r = run_train_net(
        "--config-file", "configs/mask2former/toy/maskformer2_R18_toy_semantic.yaml", "--eval-only",
        "MODEL.WEIGHTS", "", "TEST.AUG.ENABLED", "True", "TEST.AUG.MIN_SIZES", "(64,)",
        "TEST.AUG.MAX_SIZE", 256, "INPUT.MIN_SIZE_TEST", 64, "DATALOADER.NUM_WORKERS", 0, "OUTPUT_DIR", tmp_path,
        env_extra=toy_datasets_env,
    )
    log = r.stdout + r.stderr
    assert log.count("Running inference with test-time augmentation") == 1
    assert log.count("copypaste: Task: sem_seg") == 2  # plain, then with TTA
