"""ProjectionConfig on whole models, and everything a PEFT user relies on."""

import copy

import pytest
import torch
from datasets import Dataset
from peft import PeftModel, get_peft_model
from torch import nn
from transformers import (
    AutoModelForImageClassification,
    ConvNextConfig,
    ConvNextForImageClassification,
    MobileNetV2Config,
    MobileNetV2ForImageClassification,
    Trainer,
    TrainingArguments,
)

import hf_know
from hf_know.testing import tiny_cnn, tiny_resnet

X = torch.randn(3, 2, 12, 12)
IMG = torch.randn(3, 1, 16, 16)


def gammas(model):
    return {n: p for n, p in model.named_parameters() if "projection_gamma" in n}


def convs(model):
    return {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d))}


def test_default_targets_every_conv_of_a_plain_cnn():
    base = tiny_cnn()
    expected = sum(m.out_channels * m.in_channels // m.groups for m in convs(base).values())
    n_convs, head = len(convs(base)), sum(p.numel() for p in base.head.parameters())
    model = get_peft_model(base, hf_know.ProjectionConfig(modules_to_save=["head"]))
    assert len(gammas(model)) == n_convs == 6
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == expected + head


@pytest.mark.parametrize(
    "make",
    [
        lambda: tiny_resnet(num_labels=3),
        lambda: ConvNextForImageClassification(
            ConvNextConfig(num_channels=1, num_stages=2, hidden_sizes=[8, 16], depths=[1, 1], num_labels=3)
        ),
        lambda: MobileNetV2ForImageClassification(
            MobileNetV2Config(num_channels=1, image_size=32, depth_multiplier=0.25, num_labels=3)
        ),
    ],
    ids=["resnet", "convnext", "mobilenet_v2"],
)
def test_transformers_cnns_identity_at_init_and_exact_merge(make):
    base = make().eval()
    x = torch.randn(2, 1, 32, 32)
    reference = base(pixel_values=x).logits
    n_convs = len(convs(base))
    model = get_peft_model(base, hf_know.ProjectionConfig(modules_to_save=["classifier"])).eval()
    assert len(gammas(model)) == n_convs
    assert torch.equal(model(pixel_values=x).logits, reference)
    with torch.no_grad():
        for p in gammas(model).values():
            p.mul_(1 + 0.1 * torch.randn_like(p))
    adapted = model(pixel_values=x).logits
    assert not torch.allclose(adapted, reference, rtol=1e-3, atol=0)
    merged = model.merge_and_unload()
    assert not any(isinstance(m, hf_know.ProjectionLayer) for m in merged.modules())
    torch.testing.assert_close(merged(pixel_values=x).logits, adapted, rtol=1e-5, atol=1e-5)


def test_skip_pointwise_and_depthwise_change_the_counts():
    full = get_peft_model(tiny_cnn(), hf_know.ProjectionConfig())
    no_pw = get_peft_model(tiny_cnn(), hf_know.ProjectionConfig(skip_pointwise=True))
    no_dw = get_peft_model(tiny_cnn(), hf_know.ProjectionConfig(skip_depthwise=True))
    assert not any("pointwise" in n for n in gammas(no_pw)) and any("pointwise" in n for n in gammas(full))
    assert not any("depthwise" in n for n in gammas(no_dw)) and any("depthwise" in n for n in gammas(full))
    assert len(gammas(no_pw)) == len(gammas(no_dw)) == len(gammas(full)) - 1


def test_save_load_roundtrip_keeps_head_and_outputs(tmp_path):
    base = tiny_cnn()
    model = get_peft_model(copy.deepcopy(base), hf_know.ProjectionConfig(modules_to_save=["head"], init_weights=False))
    with torch.no_grad():
        model.base_model.model.head.modules_to_save["default"].weight.add_(1.0)
    model.eval()
    expected = model(X)
    model.save_pretrained(tmp_path)
    loaded = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path).eval()
    assert torch.equal(loaded(X), expected)
    # only the adapter was saved: gammas and the head copy, not the frozen convs
    from safetensors.torch import load_file

    keys = load_file(tmp_path / "adapter_model.safetensors").keys()
    assert keys and all("projection_gamma" in k or ".head." in k for k in keys)


def test_train_batchnorm_saves_running_statistics(tmp_path):
    base = tiny_cnn()
    model = get_peft_model(
        copy.deepcopy(base), hf_know.ProjectionConfig(train_batchnorm=True, modules_to_save=["head"])
    )
    assert "bn" in model.peft_config["default"].modules_to_save
    model.train()
    for _ in range(3):
        model(X)  # updates the BatchNorm running statistics
    model.eval()
    expected = model(X)
    model.save_pretrained(tmp_path)
    loaded = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path).eval()
    assert torch.equal(loaded(X), expected)
    model.add_adapter("second", hf_know.ProjectionConfig(train_batchnorm=True))  # BN already wrapped: still found
    assert "bn" in model.peft_config["second"].modules_to_save
    frozen = get_peft_model(copy.deepcopy(base), hf_know.ProjectionConfig())
    bn_trainable = [p.requires_grad for n, p in frozen.named_parameters() if ".bn." in n]
    assert bn_trainable and not any(bn_trainable)


def test_bias_projection_only_trains_and_saves_projected_biases(tmp_path):
    model = get_peft_model(tiny_cnn(), hf_know.ProjectionConfig(bias="projection_only"))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(n.endswith("conv.base_layer.bias") for n in trainable)
    assert not any("head" in n for n in trainable)
    model.save_pretrained(tmp_path)
    from safetensors.torch import load_file

    assert any(k.endswith("conv.base_layer.bias") for k in load_file(tmp_path / "adapter_model.safetensors"))


def test_named_adapters_set_adapter_disable_and_unload():
    base = tiny_cnn().eval()
    reference = base(X)
    model = get_peft_model(base, hf_know.ProjectionConfig(init_weights=False)).eval()
    model.add_adapter("second", hf_know.ProjectionConfig(init_weights=False))
    out_default = model(X)
    model.set_adapter("second")
    out_second = model(X)
    assert not torch.allclose(out_default, out_second)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".second" in n for n in trainable)
    with model.disable_adapter():
        assert torch.equal(model(X), reference)
    model.set_adapter("default")
    assert torch.equal(model(X), out_default)
    unloaded = model.unload()
    assert torch.equal(unloaded(X), reference)


def test_training_under_transformers_trainer_moves_only_gammas_and_head(tmp_path):
    base = tiny_resnet(num_labels=2)
    untouched = copy.deepcopy(base)
    frozen_before = {n: p.detach().clone() for n, p in base.named_parameters() if "convolution" in n}
    stats_before = {n: b.clone() for n, b in base.named_buffers() if "running" in n}
    model = get_peft_model(base, hf_know.ProjectionConfig(modules_to_save=["classifier"]))
    data = Dataset.from_dict({"pixel_values": torch.randn(16, 1, 16, 16).numpy(), "labels": [0, 1] * 8}).with_format(
        "torch"
    )
    args = TrainingArguments(
        output_dir=str(tmp_path),
        num_train_epochs=2,
        per_device_train_batch_size=8,
        learning_rate=0.05,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
    )
    Trainer(model=model, args=args, train_dataset=data).train()
    moved = [g for g in gammas(model).values() if not torch.equal(g, torch.ones_like(g))]
    assert len(moved) == len(gammas(model))
    for name, weight in model.base_model.model.named_parameters():
        key = name.replace(".base_layer", "")
        if key in frozen_before:
            assert torch.equal(weight, frozen_before[key]), name
    # frozen BatchNorm keeps the pretrained statistics, so the saved adapter reproduces the trained model
    for name, buffer in model.base_model.model.named_buffers():
        if name in stats_before:
            assert torch.equal(buffer, stats_before[name]), name
    model.eval()
    expected = model(pixel_values=IMG).logits
    model.save_pretrained(tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(untouched, tmp_path / "adapter").eval()
    assert torch.equal(reloaded(pixel_values=IMG).logits, expected)


def test_two_stage_recipe_merges_then_trains_everything():
    base = tiny_resnet(num_labels=2).eval()
    model = get_peft_model(base, hf_know.ProjectionConfig(modules_to_save=["classifier"], init_weights=False)).eval()
    stage1 = model(pixel_values=IMG).logits
    full = hf_know.prepare_full_finetuning(model)
    assert not isinstance(full, PeftModel) and not any(isinstance(m, hf_know.ProjectionLayer) for m in full.modules())
    assert all(p.requires_grad for p in full.parameters())
    torch.testing.assert_close(full.eval()(pixel_values=IMG).logits, stage1, rtol=1e-5, atol=1e-5)
    full.train()
    loss = full(pixel_values=IMG, labels=torch.tensor([0, 1, 0])).loss
    loss.backward()
    assert all(p.grad is not None for p in full.parameters())
    with pytest.raises(TypeError, match="PeftModel"):
        hf_know.prepare_full_finetuning(base)


def test_push_to_and_pull_from_the_loopback_hub(tmp_path, hub):
    tiny_resnet(num_labels=3).save_pretrained(tmp_path / "base")
    base = AutoModelForImageClassification.from_pretrained(tmp_path / "base")
    model = get_peft_model(base, hf_know.ProjectionConfig(modules_to_save=["classifier"], init_weights=False)).eval()
    expected = model(pixel_values=IMG).logits
    model.push_to_hub("tester/projection-adapter")
    fresh = AutoModelForImageClassification.from_pretrained(tmp_path / "base")
    pulled = PeftModel.from_pretrained(fresh, "tester/projection-adapter").eval()
    assert torch.equal(pulled(pixel_values=IMG).logits, expected)
    assert hub.state.repo("model", "tester/projection-adapter").resolve("main").files["adapter_model.safetensors"].lfs
