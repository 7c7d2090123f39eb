"""Every official Mask2Former config builds and evaluates with ``--eval-only MODEL.WEIGHTS <ckpt>``
when pointed at a dataset laid out as ``datasets/README.md`` says: shown on the toy data, with the
toy set of the config's task in ``DATASETS.TRAIN``/``DATASETS.TEST`` and random weights saved to and
reloaded from a checkpoint. The evaluated metrics must be finite, except the ones COCO-style
evaluation defines as NaN for what the ground truth lacks (an area range or a class with no object).
"""
import gc
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO

CONFIG_ROOT = REPO / "configs" / "mask2former"
OFFICIAL_CONFIGS = sorted(
    p.relative_to(REPO).as_posix()
    for folder in ("coco", "ade20k", "cityscapes", "mapillary-vistas")
    for p in (CONFIG_ROOT / folder).rglob("*.yaml")
    if not p.name.startswith("Base-")
)

# config task folder -> (toy train set, toy test set, number of classes)
TOY_SETS = {
    "semantic-segmentation": ("toy_sem_seg_train", "toy_sem_seg_val", 6),
    "instance-segmentation": ("toy_instance_train", "toy_instance_val", 3),
    "panoptic-segmentation": ("toy_panoptic_train", "toy_panoptic_val", 6),
}
TOY_NAMES = [f"toy_{kind}_{split}" for kind in ("instance", "panoptic", "sem_seg") for split in ("train", "val")]
# COCO area ranges (pycocotools COCOeval.Params.areaRng, bounds inclusive)
AREA_RANGES = {"APs": (0, 32**2), "APm": (32**2, 96**2), "APl": (96**2, 1e10)}


def task_of(config: str) -> str:
    task = Path(config).relative_to("configs/mask2former").parts[1]
    assert task in TOY_SETS, config
    return task


def toy_overrides(config: str, output_dir) -> list:
    train, test, num_classes = TOY_SETS[task_of(config)]
    return [
        "MODEL.DEVICE", "cpu",
        "DATASETS.TRAIN", f"('{train}',)",  # panoptic/instance inference read the thing ids from it
        "DATASETS.TEST", f"('{test}',)",
        "MODEL.SEM_SEG_HEAD.NUM_CLASSES", str(num_classes),
        "INPUT.MIN_SIZE_TEST", "64",
        "INPUT.MAX_SIZE_TEST", "96",
        "TEST.AUG.ENABLED", "False",
        "DATALOADER.NUM_WORKERS", "0",  # 4 loader processes for 2 images cost ~4 s a run on 2 cores
        "OUTPUT_DIR", str(output_dir),
    ]


def expected_tasks(cfg) -> tuple:
    """(required result keys, optional result keys) of ``Trainer.test`` for a toy test set."""
    test = cfg.MODEL.MASK_FORMER.TEST
    name = cfg.DATASETS.TEST[0]
    if name.startswith("toy_instance"):  # evaluator "coco": instance predictions only
        assert test.INSTANCE_ON
        return {"segm"}, {"bbox"}  # boxes come from the masks, so COCOEvaluator scores them too
    if name.startswith("toy_sem_seg"):  # evaluator "sem_seg"
        assert test.SEMANTIC_ON
        return {"sem_seg"}, set()
    assert test.PANOPTIC_ON
    required = {"panoptic_seg"}
    if test.INSTANCE_ON:
        required.add("segm")
    if test.SEMANTIC_ON:
        required.add("sem_seg")
    return required, ({"bbox"} if test.INSTANCE_ON else set())


def favour_things(model, cfg) -> None:
    """Raise the random class head's logits of the thing classes on a panoptic config.

    A panoptic model's instance inference keeps only thing classes among its top-k (query, class)
    pairs. With random weights every query gives nearly the same class logits, so the top-k pairs
    are often all of one or two stuff classes: no instance is left, ``COCOEvaluator`` logs "No
    predictions from the model!" and reports neither ``segm`` nor a finite ``bbox``. Done before
    saving, so the checkpoint holds it and the instance path is evaluated for every such config.
    """
    if not cfg.DATASETS.TEST[0].startswith("toy_panoptic"):
        return
    from detectron2.data import MetadataCatalog

    thing_ids = list(MetadataCatalog.get(cfg.DATASETS.TRAIN[0]).thing_dataset_id_to_contiguous_id.values())
    assert list(model.thing_ids) == thing_ids
    class_embed = model.sem_seg_head.predictor.class_embed
    assert class_embed.out_features == cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES + 1
    with torch.no_grad():
        class_embed.bias[thing_ids] += 10.0


def ground_truth_facts(root: str) -> dict:
    """What the toy val split's ground truth contains, to tell which metrics COCO leaves NaN."""
    from segcommon.data.datasets.toy import TOY_CATEGORIES

    val = Path(root) / "val"
    instances = json.loads((val / "instances.json").read_text())
    panoptic = json.loads((val / "panoptic.json").read_text())
    names = {c["id"]: c["name"] for c in TOY_CATEGORIES}
    isthing = {c["id"]: bool(c["isthing"]) for c in TOY_CATEGORIES}
    areas = [a["area"] for a in instances["annotations"] if not a.get("iscrowd", 0)]
    labels = set()
    for img in instances["images"]:
        labels |= set(np.unique(np.asarray(Image.open(val / "semantic" / img["file_name"]))).tolist())
    pan_cats = {s["category_id"] for a in panoptic["annotations"] for s in a["segments_info"]}
    return {
        "thing_classes_present": {names[a["category_id"]] for a in instances["annotations"]},
        "area_ranges_present": {k for k, (lo, hi) in AREA_RANGES.items() if any(lo <= x <= hi for x in areas)},
        "sem_classes_present": {TOY_CATEGORIES[i]["name"] for i in labels if i != 255},
        "pan_things_present": any(isthing[c] for c in pan_cats),
        "pan_stuff_present": any(not isthing[c] for c in pan_cats),
    }


def nan_allowed(task: str, key: str, facts: dict) -> bool:
    """Whether ``results[task][key]`` may be NaN: only where the evaluator defines it so because
    the ground truth has nothing to score (COCOeval's -1 -> NaN, SemSegEvaluator's classes without
    ground-truth pixels, a PQ split without categories)."""
    if task in ("segm", "bbox"):
        if key in AREA_RANGES:
            return key not in facts["area_ranges_present"]
        if key.startswith("AP-"):
            return key[3:] not in facts["thing_classes_present"]
        return False
    if task == "sem_seg":
        for prefix in ("IoU-", "ACC-"):
            if key.startswith(prefix):
                return key[len(prefix):] not in facts["sem_classes_present"]
        return False
    if task == "panoptic_seg":
        if key.endswith("_th"):
            return not facts["pan_things_present"]
        if key.endswith("_st"):
            return not facts["pan_stuff_present"]
        return False
    raise AssertionError(f"unexpected task {task}")


def check_results(results, required: set, optional: set, facts: dict) -> None:
    assert required <= set(results) <= required | optional, f"result tasks {sorted(results)}"
    needed = {"segm": "AP", "bbox": "AP", "sem_seg": "mIoU", "panoptic_seg": "PQ"}
    for task, metrics in results.items():
        assert needed[task] in metrics, f"{task}: {sorted(metrics)}"
        for key, value in metrics.items():
            assert isinstance(value, (int, float)) and not isinstance(value, bool), (task, key, value)
            if math.isnan(value):
                assert nan_allowed(task, key, facts), f"{task}/{key} is NaN"
            else:
                assert math.isfinite(value), (task, key, value)


@pytest.fixture(scope="module")
def eval_toy_root(tmp_path_factory):
    """A 2-image, 64 px toy val split (and a 1-image train split, for its metadata), registered
    under the toy_* names for this module; the earlier registration is restored afterwards."""
    import segcommon.data  # noqa: F401  (registers the default toy root first)
    from segcommon.data.datasets import _common, toy

    # the toy registrations' keys are ("toy", root)
    previous = {_common._REGISTERED.get(name) for name in TOY_NAMES}
    root = str(tmp_path_factory.mktemp("toy_eval"))
    toy.generate_toy_dataset(root, num_train=1, num_val=2, image_size=64, seed=0)
    toy.register_toy_datasets(root)
    yield root
    previous.discard(None)
    if len(previous) == 1:
        toy.register_toy_datasets(previous.pop()[1])


@pytest.fixture(scope="module")
def gt_facts(eval_toy_root):
    return ground_truth_facts(eval_toy_root)


_TIMES = {}


@pytest.fixture(scope="module", autouse=True)
def _report_times():
    yield
    if _TIMES:
        lines = [f"{w:7.1f}s wall {c:7.1f}s cpu  {name}" for name, (w, c) in sorted(_TIMES.items(), key=lambda kv: -kv[1][1])]
        wall, cpu = (sum(t[i] for t in _TIMES.values()) for i in (0, 1))
        print(f"\n{len(_TIMES)} official configs evaluated in {wall:.1f}s wall, {cpu:.1f}s cpu:\n" + "\n".join(lines))


def test_47_official_configs_found():
    assert len(OFFICIAL_CONFIGS) == 47
    assert {task_of(c) for c in OFFICIAL_CONFIGS} == set(TOY_SETS)


@pytest.mark.slow
@pytest.mark.parametrize("config", OFFICIAL_CONFIGS, ids=lambda c: c[len("configs/mask2former/"):-len(".yaml")])
def test_official_config_eval_only_on_toy(config, eval_toy_root, gt_facts, tmp_path):
    from detectron2.checkpoint import DetectionCheckpointer

    from segcommon.engine import Trainer, setup_cfg

    start, start_cpu = time.perf_counter(), time.process_time()
    cfg = setup_cfg(str(REPO / config), toy_overrides(config, tmp_path))
    required, optional = expected_tasks(cfg)
    model = Trainer.build_model(cfg)
    favour_things(model, cfg)
    path = DetectionCheckpointer(model, save_dir=str(tmp_path)).save("model") or str(tmp_path / "model.pth")
    fingerprint = {k: v.sum().item() for k, v in model.state_dict().items()}
    del model
    gc.collect()
    try:
        assert os.path.isfile(path)
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=str(tmp_path)).resume_or_load(path, resume=False)
        assert {k: v.sum().item() for k, v in model.state_dict().items()} == fingerprint, (
            "the reloaded model does not hold the saved weights"
        )
        with torch.no_grad():
            results = Trainer.test(cfg, model)
        check_results(results, required, optional, gt_facts)
    finally:
        model = None
        os.remove(path)
        gc.collect()
    _TIMES[config] = (time.perf_counter() - start, time.process_time() - start_cpu)


CLI_CONFIGS = [
    "configs/mask2former/coco/instance-segmentation/maskformer2_R50_bs16_50ep.yaml",
    "configs/mask2former/ade20k/semantic-segmentation/maskformer2_R50_bs16_160k.yaml",
    "configs/mask2former/coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml",
]
COPYPASTE_HEADERS = {
    "segm": "copypaste: AP,AP50,AP75,APs,APm,APl",
    "sem_seg": "copypaste: mIoU,fwIoU,mACC,pACC",
    "panoptic_seg": "copypaste: PQ,SQ,RQ,PQ_th,SQ_th,RQ_th,PQ_st,SQ_st,RQ_st",
}


@pytest.fixture(scope="module")
def cli_datasets_root(tmp_path_factory):
    """$DETECTRON2_DATASETS for the CLI runs: empty, so the first run generates the default toy
    dataset under ``toy/`` (about 1.5 s) as datasets/README.md describes."""
    return tmp_path_factory.mktemp("d2_datasets")


@pytest.mark.parametrize("config", CLI_CONFIGS, ids=lambda c: c[len("configs/mask2former/"):-len(".yaml")])
def test_train_net_eval_only_cli(config, eval_toy_root, cli_datasets_root, tmp_path):
    from detectron2.checkpoint import DetectionCheckpointer

    from segcommon.engine import Trainer, setup_cfg

    overrides = toy_overrides(config, tmp_path / "out")
    cfg = setup_cfg(str(REPO / config), overrides)
    required, _ = expected_tasks(cfg)
    model = Trainer.build_model(cfg)
    favour_things(model, cfg)
    ckpt = DetectionCheckpointer(model, save_dir=str(tmp_path)).save("random") or str(tmp_path / "random.pth")
    del model
    gc.collect()

    env = dict(os.environ, OMP_NUM_THREADS="2", DETECTRON2_DATASETS=str(cli_datasets_root))
    cmd = [sys.executable, "train_net.py", "--config-file", config, "--eval-only",
           "MODEL.WEIGHTS", str(ckpt), *overrides]
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    os.remove(ckpt)
    log = r.stdout + r.stderr
    assert r.returncode == 0, f"train_net.py failed ({r.returncode}):\n{log[-6000:]}"
    assert (cli_datasets_root / "toy" / "val" / "panoptic.json").is_file(), "toy data generated on first use"
    for task in required:
        header = COPYPASTE_HEADERS[task]
        assert header in log, f"{header!r} missing:\n{log[-4000:]}"
        values = log.split(header, 1)[1].split("copypaste: ", 1)[1].splitlines()[0]
        assert len(values.split(",")) == len(header.split(":")[1].split(",")), values
        [float(v) for v in values.split(",")]  # numbers ("nan" where COCO has no ground truth)
