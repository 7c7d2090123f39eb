"""Shared fixtures. Tests run on CPU with random weights; nothing is downloaded."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or a skip naming it when a user's clone has no ../shared."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"{p} is absent (it exists only beside the project's own checkout)")
    return p


def run_train_net(*args, env_extra=None, check=True, threads=2, timeout=900) -> subprocess.CompletedProcess:
    """Runs ``train_net.py ARGS`` from the repository root with ``threads`` OpenMP/MKL threads; with
    ``check``, a non-zero exit fails the test with the tail of its output."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), **(env_extra or {}))
    r = subprocess.run([sys.executable, "train_net.py", *map(str, args)], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"train_net.py failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}")
    return r


@pytest.fixture(scope="session")
def toy_root(tmp_path_factory) -> str:
    """
    A small toy dataset (8 train + 4 val images) generated once per session at
    ``<tmp>/datasets/toy`` and registered under the toy_* names. Subprocesses see it too when
    given ``DETECTRON2_DATASETS=<tmp>/datasets`` (see :func:`toy_datasets_env`).
    """
    from segcommon.data.datasets.toy import generate_toy_dataset, register_toy_datasets

    root = str(tmp_path_factory.mktemp("datasets") / "toy")
    generate_toy_dataset(root, num_train=8, num_val=4, image_size=128, seed=0)
    register_toy_datasets(root)
    return root


@pytest.fixture
def toy_datasets_env(toy_root) -> dict:
    """Environment for a subprocess (train_net.py, demo.py) that should load the small toy set."""
    return {"DETECTRON2_DATASETS": os.path.dirname(toy_root)}


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))
