"""PROTEUS on convs: LoRA-conv shaped task updates on `nn.Conv2d` (k x k, 1 x 1, "same"-padding subclasses), routed
per sample, composed, merged, saved and loaded like the linear ones, on a CNN and on ImageNet EfficientNet-Lite0."""

import pytest
import torch
from efficientnet_lite_pytorch.utils import Conv2dStaticSamePadding
from peft import PeftModel, get_peft_model
from torch import nn

import hf_know
from hf_know.backbones import ImageClassifier, efficientnet_lite0
from hf_know.cluster_retrieval import Conv2d


class Blocks(nn.Module):
    """A small CNN whose stages form a block stack (PROTEUS reads its embedding there)."""

    def __init__(self):
        super().__init__()
        self.stem = Conv2dStaticSamePadding(1, 6, 3, stride=2, image_size=12, bias=False)  # pads (0, 1, 0, 1)
        self.blocks = nn.ModuleList([nn.Conv2d(6, 6, 3, padding=1), nn.Conv2d(6, 6, 1)])

    def forward(self, x):
        x = self.stem(x)
        for block in self.blocks:
            x = torch.relu(block(x))
        return x.mean((2, 3))


TARGETS = ["stem", "blocks.0", "blocks.1", "classifier"]


def cnn_with_tasks(tasks=("a", "b"), **kwargs):
    torch.manual_seed(0)
    model = get_peft_model(
        ImageClassifier(Blocks(), 6, num_labels=3, in_channels=1),
        hf_know.ClusterRetrievalAdapterConfig(target_modules=TARGETS, r=2, **kwargs),
    )
    for task in tasks:
        model.add_task(task)
        with torch.no_grad():  # trained-looking updates, not B = 0
            for name, param in model.named_parameters():
                if param.requires_grad and ".cr_" in name:
                    param.normal_(0, 0.3)
    return model


def test_convs_are_wrapped_and_a_routed_update_equals_the_composed_weight():
    model = cnn_with_tasks()
    convs = [m for m in model.modules() if isinstance(m, Conv2d)]
    assert len(convs) == 3
    x = torch.randn(4, 1, 12, 12)
    seen = {}

    def record(module, args, output):
        seen[module] = (args[0], output)

    handles = [layer.register_forward_hook(record) for layer in convs]
    with torch.no_grad():
        model(pixel_values=x, adapter_names=[0, 1, 1, 0])
    for handle in handles:
        handle.remove()
    for layer in convs:
        base, (inputs, routed) = layer.get_base_layer(), seen[layer]
        for row, task in enumerate([0, 1, 1, 0]):
            weight = base.weight + layer.delta_weight("default", task)
            expected = torch.func.functional_call(base, {"weight": weight}, (inputs[row : row + 1],))
            torch.testing.assert_close(routed[row : row + 1], expected, rtol=1e-5, atol=1e-5)


def test_composition_and_orthogonality_cover_conv_tasks():
    model = cnn_with_tasks(composition="learned", ortho_lambda=1.0)
    layer = next(m for m in model.modules() if isinstance(m, Conv2d))
    assert layer.cr_A["default"]["b"].shape == (2, 1 * 3 * 3)  # the stem: in * kh * kw columns
    assert layer.composition_matrix("default")[1, 0] != 0  # b's learned weight on a's pair
    _, _, ortho = layer.regularization("default")
    assert ortho > 0
    assert model.regularization_loss().requires_grad


def test_one_task_merges_exactly_and_several_are_refused():
    x = torch.randn(3, 1, 12, 12)
    model = cnn_with_tasks(tasks=("a",)).eval()
    with torch.no_grad():
        routed = model(pixel_values=x, adapter_names=[0, 0, 0]).logits
        merged = model.merge_and_unload()
        torch.testing.assert_close(merged(pixel_values=x).logits, routed, rtol=1e-5, atol=1e-5)
    assert not any(isinstance(m, Conv2d) for m in merged.modules())
    with pytest.raises(ValueError, match="holds 2 tasks"):
        cnn_with_tasks().merge_and_unload()


def test_conv_tasks_save_and_load_with_their_signatures(tmp_path):
    model = cnn_with_tasks().eval()
    for name in ("a", "b"):
        model.fit_signature(name, [{"pixel_values": torch.randn(8, 1, 12, 12)}])
    x = torch.randn(5, 1, 12, 12)
    with torch.no_grad():
        before = model(pixel_values=x).logits  # task-free: retrieval picks each input's task
    model.save_pretrained(tmp_path)
    torch.manual_seed(0)
    base = ImageClassifier(Blocks(), 6, num_labels=3, in_channels=1)
    loaded = PeftModel.from_pretrained(base, tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixel_values=x).logits, before)


def test_a_depthwise_conv_is_refused_by_name():
    model = efficientnet_lite0(3, 32)
    config = hf_know.ClusterRetrievalAdapterConfig(target_modules=["_blocks.1._depthwise_conv"], r=2)
    with pytest.raises(ValueError, match="groups=96"):
        get_peft_model(model, config)


def test_efficientnet_lite0_learns_routed_conv_tasks_and_retrieves_from_its_blocks():
    model = efficientnet_lite0(2, 32)
    targets = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.groups == 1 and "_blocks.15." in n]
    config = hf_know.ClusterRetrievalAdapterConfig(target_modules=[*targets, "classifier"], r=4)
    model = get_peft_model(model, config)
    model.add_task("only")
    x = torch.randn(2, 1, 32, 32)
    out = model(pixel_values=x, adapter_names=[0, 0], labels=torch.tensor([0, 1]))
    out.loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if "cr_B" in n and "_blocks.15" in n]
    assert len(grads) == 2 and all(g.abs().sum() > 0 for g in grads)  # both conv tasks' B get a gradient
    assert model.embed(pixel_values=x).shape == (2, 320)  # pooled from the last MBConv block


def test_training_keeps_the_frozen_backbones_batch_norm_statistics():
    """A task's training batches must not move the running statistics of the frozen backbone's batch norms: the
    frozen features (and every signature fitted on them) would drift; a trainable batch norm still trains."""
    torch.manual_seed(0)
    blocks = Blocks()
    blocks.norm, blocks.trained_norm = nn.BatchNorm2d(6), nn.BatchNorm2d(6)
    model = get_peft_model(
        ImageClassifier(blocks, 6, num_labels=3, in_channels=1),
        hf_know.ClusterRetrievalAdapterConfig(target_modules=TARGETS, r=2, modules_to_save=["trained_norm"]),
    )
    model.add_task("a")
    model.train()
    frozen = model.base_model.model.backbone.norm
    trained = model.base_model.model.backbone.trained_norm.modules_to_save["default"]
    assert not frozen.training and trained.training and model.base_model.model.classifier.training
    x = torch.randn(4, 6, 12, 12) * 3 + 2
    frozen(x), trained(x)  # what the forward of a training step does to each of them
    assert torch.equal(frozen.running_mean, torch.zeros(6)) and not torch.equal(trained.running_mean, torch.zeros(6))
    model.eval()
    assert not frozen.training and not trained.training
