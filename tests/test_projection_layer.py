"""The projected conv computes conv(x, W * gamma) for every conv flavour, merges exactly, never touches W."""

import pytest
import torch
from peft import get_peft_model
from torch import nn

import hf_know

CONVS = {
    "conv1d": lambda: nn.Conv1d(4, 6, 3, padding=1),
    "conv2d_strided_dilated": lambda: nn.Conv2d(4, 6, 3, stride=2, padding=2, dilation=2),
    "conv2d_reflect": lambda: nn.Conv2d(4, 6, 3, padding=1, padding_mode="reflect", bias=False),
    "conv2d_grouped": lambda: nn.Conv2d(4, 6, 3, padding=1, groups=2),
    "conv2d_depthwise": lambda: nn.Conv2d(4, 4, 3, padding=1, groups=4),
    "conv2d_pointwise": lambda: nn.Conv2d(4, 6, 1),
    "conv2d_circular": lambda: nn.Conv2d(4, 6, 3, padding=1, padding_mode="circular"),
    "conv3d": lambda: nn.Conv3d(4, 6, (1, 3, 3), padding=(0, 1, 1)),
}
INPUTS = {1: (2, 4, 9), 2: (2, 4, 9, 9), 3: (2, 4, 3, 9, 9)}


class Wrapper(nn.Module):
    def __init__(self, conv):
        super().__init__()
        self.conv = conv

    def forward(self, x):
        return self.conv(x)


def projected(name: str, init_weights: bool):
    conv = CONVS[name]()
    x = torch.randn(INPUTS[conv.weight.dim() - 2])
    model = get_peft_model(Wrapper(conv), hf_know.ProjectionConfig(init_weights=init_weights))
    return model, conv, x


@pytest.mark.parametrize("name", CONVS)
def test_identity_at_init_and_gamma_shape(name):
    model, _, x = projected(name, init_weights=True)
    layer = model.base_model.model.conv
    base = layer.get_base_layer()
    assert isinstance(layer, hf_know.ProjectionLayer)
    gamma = layer.projection_gamma["default"]
    assert gamma.shape == (base.out_channels, base.in_channels // base.groups)
    assert torch.equal(model(x), base(x))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == base.out_channels * base.in_channels // base.groups


@pytest.mark.parametrize("name", CONVS)
def test_forward_is_conv_with_scaled_filters_and_merge_is_exact(name):
    model, _, x = projected(name, init_weights=False)
    layer = model.base_model.model.conv
    base = layer.get_base_layer()
    gamma = layer.projection_gamma["default"].detach()
    scaled = base.weight.detach() * gamma.reshape(*gamma.shape, *([1] * (base.weight.dim() - 2)))
    expected = base._conv_forward(x, scaled, base.bias)
    output = model(x)
    assert not torch.allclose(output, base(x))  # the adapter does something
    torch.testing.assert_close(output, expected, rtol=0, atol=0)
    original = base.weight.detach().clone()
    merged = model.merge_and_unload()
    assert type(merged.conv) is type(base)
    torch.testing.assert_close(merged(x), output, rtol=1e-6, atol=1e-6)
    assert not torch.equal(merged.conv.weight, original)


@pytest.mark.parametrize("name", ["conv2d_grouped", "conv3d"])
def test_unmerge_restores_the_frozen_weight(name):
    model, _, x = projected(name, init_weights=False)
    base = model.base_model.model.conv.get_base_layer()
    original = base.weight.detach().clone()
    unmerged_output = model(x)
    model.merge_adapter()
    torch.testing.assert_close(model(x), unmerged_output, rtol=1e-6, atol=1e-6)
    model.unmerge_adapter()
    torch.testing.assert_close(base.weight, original, rtol=1e-6, atol=1e-7)


def test_unmerge_warns_where_gamma_is_zero():
    model, _, _ = projected("conv2d_grouped", init_weights=False)
    layer = model.base_model.model.conv
    with torch.no_grad():
        layer.projection_gamma["default"][0, 0] = 0.0
    model.merge_adapter()
    with pytest.warns(UserWarning, match="cannot be recovered"):
        model.unmerge_adapter()


def test_training_changes_gamma_never_the_frozen_weight():
    model, _, x = projected("conv2d_grouped", init_weights=True)
    layer = model.base_model.model.conv
    weight = layer.get_base_layer().weight.detach().clone()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(3):
        model(x).pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    assert torch.equal(layer.get_base_layer().weight, weight)
    assert not layer.get_base_layer().weight.requires_grad
    assert not torch.equal(layer.projection_gamma["default"], torch.ones_like(layer.projection_gamma["default"]))
