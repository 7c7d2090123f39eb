"""``CFTSemanticSegmentor`` (``cft/modeling/meta_arch/cft_segmentor.py``) and the CFT configs end to end.

* Sliding windows as MMSeg's ``slide_inference`` (count, clipping, pulled-back starts, small images).
* Training pads every image to the crop size with 0 after normalisation and labels with 255; slide
  inference with one window covering the image equals whole inference; ``RESIZE_TO_MULTIPLE``
  stretches the input and returns logits at the requested size.
* The ResNetV1c-50 backbone (DeepLab deep stem, 64 channels) has 23,527,264 parameters.
* The toy config trains a step (every loss finite, every parameter gets a gradient).
* ``train_net.py --eval-only`` with the R50 ADE20K config runs SemSegEvaluator on the toy set (CPU,
  random weights, small test size).
"""

import torch
from detectron2.modeling import build_model

from cft.modeling.meta_arch.cft_segmentor import pad_to, slide_windows
from conftest import REPO, run_train_net
from segcommon.engine.defaults import setup_cfg

TOY = str(REPO / "configs" / "cft" / "toy" / "cft_R18_toy.yaml")


def test_slide_windows():
    # 1024 x 2048 Cityscapes image, 768 window, 512 stride: 2 rows x 4 columns.
    wins = slide_windows(1024, 2048, (768, 768), (512, 512))
    assert len(wins) == 8
    assert wins[0] == (0, 768, 0, 768)
    assert wins[-1] == (256, 1024, 1280, 2048)  # pulled back to stay full size
    assert all(y1 - y0 == 768 and x1 - x0 == 768 for y0, y1, x0, x1 in wins)
    # Smaller than the window: one clipped window, no padding.
    assert slide_windows(300, 400, (480, 480), (320, 320)) == [(0, 300, 0, 400)]
    # 520 x 700 with 480/320: rows ceil(40 / 320) + 1 = 2, columns ceil(220 / 320) + 1 = 2.
    assert slide_windows(520, 700, (480, 480), (320, 320)) == [
        (0, 480, 0, 480), (0, 480, 220, 700), (40, 520, 0, 480), (40, 520, 220, 700)
    ]


def test_pad_to():
    a, b = torch.ones(2, 3, 4), torch.ones(2, 5, 2)
    out = pad_to([a, b], (6, 6), -1.0)
    assert out.shape == (2, 2, 6, 6)
    assert (out[0, :, :3, :4] == 1).all() and (out[0, :, 3:] == -1).all() and (out[0, :, :, 4:] == -1).all()


def _toy_model(*opts):
    cfg = setup_cfg(TOY, ["MODEL.SEM_SEG_HEAD.CONVS_DIM", "32", *opts], check_datasets=False)
    torch.manual_seed(0)
    return build_model(cfg), cfg


def test_training_pads_to_crop_size_and_trains_a_step():
    model, _ = _toy_model()
    model.train()
    seen = {}

    def spy(features, targets):
        seen["targets"] = targets
        seen["image"] = features
        return original(features, targets)

    original = model.sem_seg_head.forward
    model.sem_seg_head.forward = spy
    backbone_forward = model.backbone.forward
    model.backbone.forward = lambda x: (seen.__setitem__("input", x), backbone_forward(x))[1]
    batch = [
        {"image": torch.randint(0, 255, (3, 96, 120), dtype=torch.uint8), "sem_seg": torch.randint(0, 6, (96, 120))},
        {"image": torch.randint(0, 255, (3, 128, 128), dtype=torch.uint8), "sem_seg": torch.randint(0, 6, (128, 128))},
    ]
    losses = model(batch)
    assert tuple(seen["input"].shape) == (2, 3, 128, 128)
    assert (seen["input"][0, :, 96:] == 0).all() and (seen["input"][0, :, :, 120:] == 0).all()
    assert (seen["targets"][0, 96:] == 255).all() and (seen["targets"][0, :96, :120] < 6).all()
    assert set(losses) == {"loss_sem_seg", "loss_mask_focal", "loss_mask_dice"}
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_inference_modes():
    image = torch.randint(0, 255, (3, 70, 90), dtype=torch.uint8)
    whole, _ = _toy_model()
    slide, _ = _toy_model("MODEL.CFT.TEST.MODE", "slide", "MODEL.CFT.TEST.CROP_SIZE", "(128, 128)")
    slide.load_state_dict(whole.state_dict())
    whole.eval(), slide.eval()
    with torch.no_grad():
        a = whole([{"image": image, "height": 140, "width": 180}])[0]["sem_seg"]
        b = slide([{"image": image, "height": 140, "width": 180}])[0]["sem_seg"]
    assert a.shape == (6, 140, 180)
    torch.testing.assert_close(a, b)
    multi, _ = _toy_model("MODEL.CFT.TEST.RESIZE_TO_MULTIPLE", "32")
    multi.load_state_dict(whole.state_dict())
    multi.eval()
    sizes = []
    forward = multi.backbone.forward
    multi.backbone.forward = lambda x: (sizes.append(tuple(x.shape[-2:])), forward(x))[1]
    with torch.no_grad():
        c = multi([{"image": image}])[0]["sem_seg"]
    assert sizes == [(96, 96)] and c.shape == (6, 70, 90)


def test_resnet_v1c_50_parameter_count():
    from detectron2.modeling import build_backbone

    cfg = setup_cfg(str(REPO / "configs" / "cft" / "cft_r50-d32_512x512_ade20k.yaml"), ["MODEL.DEVICE", "cpu"],
                    check_datasets=False)
    with torch.device("meta"):
        backbone = build_backbone(cfg)
    assert sum(p.numel() for p in backbone.parameters()) == 23_527_264
    assert [backbone.stem.conv1.out_channels, backbone.stem.conv2.out_channels, backbone.stem.conv3.out_channels] == [32, 32, 64]


def test_train_net_eval_only_r50_on_toy(tmp_path, toy_datasets_env):
    out = tmp_path / "out"
    r = run_train_net(
        "--eval-only", "--config-file", "configs/cft/cft_r50-d32_512x512_ade20k.yaml",
        "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "MODEL.RESNETS.NORM", "BN", "MODEL.SEM_SEG_HEAD.NORM", "BN",
        "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "6", "DATASETS.TEST", "('toy_sem_seg_val',)",
        "DATASETS.TRAIN", "('toy_sem_seg_train',)", "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "128",
        "DATALOADER.NUM_WORKERS", "0", "OUTPUT_DIR", out, env_extra=toy_datasets_env, threads=1, timeout=600,
    )
    assert "SemSegEvaluator" in r.stdout + r.stderr or (out / "inference" / "sem_seg_evaluation.pth").exists()
    assert "mIoU" in r.stdout + r.stderr
