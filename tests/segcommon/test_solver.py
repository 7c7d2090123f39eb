"""Parameter groups, optimisers, clipping and schedules of segcommon.solver."""
import pytest
import torch
from torch import nn

from segcommon.engine import get_project_cfg
from segcommon.solver import build_lr_scheduler, build_optimizer, get_param_groups


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.backbone.absolute_pos_embed = nn.Parameter(torch.zeros(1, 4))
        self.query_embed = nn.Embedding(5, 4)
        self.norm = nn.LayerNorm(4)
        self.head = nn.Linear(4, 2)
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)
        self.tied = self.head  # shared module: its parameters must be counted once


def _cfg(**solver):
    cfg = get_project_cfg()
    cfg.SOLVER.BASE_LR = 1.0
    cfg.SOLVER.WEIGHT_DECAY = 0.05
    for k, v in solver.items():
        setattr(cfg.SOLVER, k, v)
    return cfg


def _groups_by_param(cfg, model):
    return {id(g["params"][0]): g for g in get_param_groups(cfg, model)}


def test_param_group_rules():
    model = _Net()
    cfg = _cfg(BACKBONE_MULTIPLIER=0.1, WEIGHT_DECAY_NORM=0.0, WEIGHT_DECAY_EMBED=0.0)
    g = _groups_by_param(cfg, model)
    assert g[id(model.backbone[0].weight)]["lr"] == pytest.approx(0.1)
    assert g[id(model.backbone[0].weight)]["weight_decay"] == 0.05
    assert g[id(model.backbone[1].weight)]["weight_decay"] == 0.0  # norm inside the backbone
    assert g[id(model.backbone[1].weight)]["lr"] == pytest.approx(0.1)
    assert g[id(model.backbone.absolute_pos_embed)]["weight_decay"] == 0.0
    assert g[id(model.query_embed.weight)]["weight_decay"] == 0.0
    assert g[id(model.norm.bias)]["weight_decay"] == 0.0
    assert g[id(model.head.weight)] == {"params": [model.head.weight], "lr": 1.0, "weight_decay": 0.05}
    assert g[id(model.head.bias)]["weight_decay"] == 0.05  # biases of Linear keep weight decay
    assert id(model.frozen.weight) not in g
    n_trainable = sum(1 for p in set(model.parameters()) if p.requires_grad)
    assert len(g) == n_trainable


def test_bias_options_follow_detectron2():
    model = _Net()
    g = _groups_by_param(_cfg(BIAS_LR_FACTOR=2.0, WEIGHT_DECAY_BIAS=0.0), model)
    assert g[id(model.head.bias)]["lr"] == 2.0 and g[id(model.head.bias)]["weight_decay"] == 0.0


@pytest.mark.parametrize("name, cls", [("SGD", torch.optim.SGD), ("ADAMW", torch.optim.AdamW)])
def test_optimizer_choice(name, cls):
    opt = build_optimizer(_cfg(OPTIMIZER=name), _Net())
    assert isinstance(opt, cls)


def test_unknown_optimizer_names_the_key():
    with pytest.raises(ValueError, match="SOLVER.OPTIMIZER"):
        build_optimizer(_cfg(OPTIMIZER="LAMB"), _Net())


def test_full_model_clipping_clips_global_norm():
    model = nn.Linear(3, 3, bias=False)
    cfg = _cfg(OPTIMIZER="SGD", MOMENTUM=0.0, WEIGHT_DECAY=0.0)
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "full_model"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 0.01
    opt = build_optimizer(cfg, model)
    before = model.weight.detach().clone()
    model.weight.grad = torch.full((3, 3), 10.0)
    opt.step()
    step = (before - model.weight.detach()).norm()  # lr 1: the step is the clipped gradient
    assert step == pytest.approx(0.01, rel=1e-4)


def test_detectron2_value_clipping_is_used_for_other_types():
    model = nn.Linear(2, 1, bias=False)
    cfg = _cfg(OPTIMIZER="SGD", MOMENTUM=0.0, WEIGHT_DECAY=0.0)
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "value"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 0.5
    opt = build_optimizer(cfg, model)
    before = model.weight.detach().clone()
    model.weight.grad = torch.tensor([[3.0, -0.2]])
    opt.step()
    assert torch.allclose(before - model.weight.detach(), torch.tensor([[0.5, -0.2]]))


def test_poly_schedule():
    model = nn.Linear(2, 1)
    cfg = _cfg(OPTIMIZER="SGD", LR_SCHEDULER_NAME="WarmupPolyLR", MAX_ITER=10, WARMUP_ITERS=0,
               POLY_LR_POWER=0.9, POLY_LR_CONSTANT_ENDING=0.0)
    opt = build_optimizer(cfg, model)
    sched = build_lr_scheduler(cfg, opt)
    lrs = []
    for _ in range(5):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([(1 - i / 10) ** 0.9 for i in range(5)])


def test_multistep_schedule():
    model = nn.Linear(2, 1)
    cfg = _cfg(OPTIMIZER="SGD", MAX_ITER=10, STEPS=(2, 4), WARMUP_ITERS=0, GAMMA=0.1)
    opt = build_optimizer(cfg, model)
    sched = build_lr_scheduler(cfg, opt)
    lrs = []
    for _ in range(5):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([1.0, 1.0, 0.1, 0.1, 0.01])
