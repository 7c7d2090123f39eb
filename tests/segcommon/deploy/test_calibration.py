"""calibrate_batch_norms sets each norm's statistics to those of its input on the sample."""
import torch
from detectron2.layers import FrozenBatchNorm2d
from torch import nn

from segcommon.deploy import calibrate_batch_norms


def _net():
    torch.manual_seed(0)
    layers = []
    for i, norm in enumerate([FrozenBatchNorm2d, nn.BatchNorm2d, FrozenBatchNorm2d, nn.BatchNorm2d]):
        layers += [nn.Conv2d(3 if i == 0 else 8, 8, 3, padding=1), norm(8)]
    return nn.Sequential(*layers).eval()


def test_every_norm_outputs_zero_mean_unit_variance_on_the_sample():
    net, x = _net(), torch.randn(2, 3, 16, 16) * 5 + 3
    assert calibrate_batch_norms(net, x) == 4
    outputs = []
    hooks = [m.register_forward_hook(lambda m, i, o: outputs.append(o)) for m in net if not isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    assert len(outputs) == 4
    for out in outputs:
        per_channel = out.transpose(0, 1).flatten(1)
        assert torch.allclose(per_channel.mean(1), torch.zeros(8), atol=1e-4)
        assert torch.allclose(per_channel.var(1, unbiased=False), torch.ones(8), atol=1e-3)


def test_calibrates_each_norm_once_and_with_a_custom_forward():
    net, x = _net(), torch.randn(1, 3, 8, 8)
    calls = []

    def forward(sample):  # e.g. an adapter's forward: runs the network twice
        calls.append(1)
        net(sample)
        return net(sample * 10)

    calibrate_batch_norms(net, x, forward)
    first = net[1].running_var.clone()
    with torch.no_grad():
        pre = net[0](x).transpose(0, 1).flatten(1).var(1, unbiased=False)
    assert calls == [1] and torch.allclose(first, pre, rtol=1e-5)  # statistics of the first call
