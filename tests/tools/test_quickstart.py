"""The README's main job, ``tools/quickstart.sh``, end to end on the small session toy set."""
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_quickstart_trains_evaluates_and_draws(tmp_path, toy_root, toy_datasets_env):
    out = tmp_path / "quickstart"
    env = dict(
        os.environ,
        **toy_datasets_env,
        QUICKSTART_ITERS="2",
        QUICKSTART_OUT=str(out),
        VIRTUAL_ENV=sys.prefix,  # the script runs this interpreter's environment
        OMP_NUM_THREADS="2",
    )
    r = subprocess.run(["bash", "tools/quickstart.sh"], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=900)
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-5000:]
    assert "(2 iterations, CPU)" in log and "maskformer2_R18_toy_instance.yaml" in log
    # the evaluation printed the COCO mask metrics table
    assert "Evaluation results for segm" in log and "copypaste: AP,AP50,AP75,APs,APm,APl" in log
    assert (out / "train" / "model_final.pth").is_file()
    val_images = sorted(os.listdir(os.path.join(toy_root, "val", "images")))
    drawn = sorted(os.listdir(out / "demo"))
    assert len(drawn) == len(val_images) == 4
    assert all(os.path.getsize(out / "demo" / f) > 0 for f in drawn)
