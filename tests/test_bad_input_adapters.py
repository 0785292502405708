"""Bad input, adapters: incomplete or foreign adapters fail to load, task names are checked, unusual layers are
handled exactly or named."""

import warnings

import pytest
import torch
from peft import PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from torch import nn

import hf_know
from hf_know.testing import tiny_bert

from .conftest import snapshot
from .test_cluster_retrieval_model import BOTH, A, crmodel, perturb_trainable, two_task_model

ADAPTER_FILE = "adapter_model.safetensors"


@pytest.fixture(scope="module")
def saved_adapter(tmp_path_factory):
    folder = tmp_path_factory.mktemp("adapter") / "two-tasks"
    torch.manual_seed(0)
    two_task_model().save_pretrained(folder)
    return folder


def edited_copy(tmp_path, saved, edit):
    folder = tmp_path / "edited"
    folder.mkdir()
    for path in saved.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    tensors = load_file(folder / ADAPTER_FILE)
    edit(tensors)
    save_file(tensors, folder / ADAPTER_FILE)
    return folder


def drop(part):
    return lambda tensors: [tensors.pop(k) for k in [k for k in tensors if part in k]]


def poison(part):
    return lambda tensors: [tensors[k].fill_(float("nan")) for k in tensors if part in k]


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (drop("cr_signatures.b."), r"tensor\(s\) it needs are missing from the file: \['base_model.cr_signatures"),
        (drop(".cr_A.b"), r"missing from the file: \[.*cr_A.default.b"),
        (drop("cr_coef"), r"missing from the file: \[.*cr_coef.default.b"),
        (
            poison("cr_signatures.a.means"),
            r"holds NaN or infinite values in \['base_model.cr_signatures.default.a.means",
        ),
    ],
    ids=["no-signature", "no-task-A", "no-coefficients", "nan-signature"],
)
def test_incomplete_or_non_finite_adapters_do_not_load(tmp_path, saved_adapter, edit, match):
    folder = edited_copy(tmp_path, saved_adapter, edit)
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match=match):
        PeftModel.from_pretrained(tiny_bert(), folder)
    assert snapshot(tmp_path) == before


def test_an_adapter_of_another_architecture_does_not_load(saved_adapter):
    with pytest.raises(ValueError, match=r"have no place in this model .*layer\.1\."):
        PeftModel.from_pretrained(tiny_bert(num_hidden_layers=1), saved_adapter)
    with pytest.raises(ValueError, match="does not fit this base model"):
        PeftModel.from_pretrained(tiny_bert(hidden_size=16), saved_adapter)
    torch.manual_seed(0)
    model = PeftModel.from_pretrained(tiny_bert(), saved_adapter).eval()  # the right base still loads
    assert model.task_names == ["a", "b"] and model.retrieve(**BOTH)[0].tolist() == [0] * 8 + [1] * 8


@pytest.mark.parametrize("name", ["keys", "train", "forward", "items", "1st", "a b", "", "class", None])
def test_task_names_that_would_corrupt_the_model_are_refused(name):
    model = crmodel()
    model.add_task("a")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=rf"Task name {name!r} (is not valid|is the name of a PyTorch module)"):
        model.add_task(name)
    assert model.task_names == ["a"] and model.state_dict().keys() == state.keys()
    model.add_task("b")  # the model still works
    assert model.task_names == ["a", "b"]


def test_merge_after_half_and_adapter_dtypes():
    model = crmodel()
    model.add_task("a")
    perturb_trainable(model)
    model = model.half().eval()
    expected = model(**A).logits.float()
    merged = model.merge_and_unload()
    torch.testing.assert_close(merged(**A).logits.float(), expected, atol=2e-2, rtol=2e-2)

    base = tiny_bert().to(torch.bfloat16)
    config = hf_know.ClusterRetrievalAdapterConfig(target_modules=["query"], r=4)
    kept = get_peft_model(base, config, autocast_adapter_dtype=False)
    kept.add_task("a")
    upcast = get_peft_model(
        tiny_bert().to(torch.bfloat16), hf_know.ClusterRetrievalAdapterConfig(target_modules=["query"], r=4)
    )
    upcast.add_task("a")
    upcast.add_task("b")
    assert {p.dtype for n, p in kept.named_parameters() if ".cr_" in n} == {torch.bfloat16}
    assert {p.dtype for n, p in upcast.named_parameters() if ".cr_" in n} == {torch.float32}


def test_one_task_without_a_signature_is_used_for_every_input():
    model = crmodel()
    model.add_task("a")
    perturb_trainable(model)
    model.eval()
    torch.testing.assert_close(model(**A).logits, model(**A, adapter_names=[0] * 8).logits)
    with model.disable_adapter():
        base = model(**A).logits
    assert not torch.allclose(model(**A).logits, base)  # task 'a' was applied


class WeightStandardizedConv2d(nn.Conv2d):
    """BiT-style weight standardisation: the conv's own forward transforms its weight."""

    def forward(self, x):
        w = self.weight
        w = (w - w.mean((1, 2, 3), keepdim=True)) / (w.std((1, 2, 3), keepdim=True) + 1e-5)
        return nn.functional.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


class SamePaddingConv2d(nn.Conv2d):
    """TF-style "same" padding in the forward (EfficientNet ports)."""

    def forward(self, x):
        return super().forward(nn.functional.pad(x, (0, 1, 0, 1)))


def test_conv_subclasses_keep_their_own_forward():
    net = nn.Sequential(WeightStandardizedConv2d(3, 8, 3, padding=1), nn.ReLU(), SamePaddingConv2d(8, 4, 2))
    x = torch.randn(2, 3, 9, 9)
    expected = net(x)
    model = get_peft_model(net, hf_know.ProjectionConfig())
    torch.testing.assert_close(model(x), expected)  # identical at init, for every wrapped layer type
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "projection_gamma" in name:
                p.uniform_(0.5, 1.5)
    projected = model(x)
    assert projected.shape == expected.shape and not torch.allclose(projected, expected)
    torch.testing.assert_close(model.merge_and_unload()(x), projected, atol=1e-5, rtol=1e-5)  # merge stays exact


def test_transposed_convs_left_out_are_named():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ConvTranspose2d(4, 2, 2), nn.Conv2d(2, 2, 1))
    with pytest.warns(UserWarning, match=r"leaves 1 transposed conv layer\(s\) of Sequential unprojected .*\['1'\]"):
        get_peft_model(net, hf_know.ProjectionConfig())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        get_peft_model(nn.Sequential(nn.Conv2d(3, 4, 3)), hf_know.ProjectionConfig())  # no transposed conv: quiet


def test_incomplete_or_non_finite_projection_adapters_do_not_load(tmp_path):
    """The same load checks for the other PEFT method of the package (one shared mechanism)."""
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3))
    get_peft_model(net, hf_know.ProjectionConfig()).save_pretrained(tmp_path / "saved")
    for name, edit, match in [
        ("no-gamma", drop("2.projection_gamma"), r"missing from the file: \[.*2\.projection_gamma\.default"),
        ("nan-gamma", poison("0.projection_gamma"), r"NaN or infinite values in \[.*0\.projection_gamma\.default"),
    ]:
        (tmp_path / name).mkdir()
        folder = edited_copy(tmp_path / name, tmp_path / "saved", edit)
        fresh = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3))
        with pytest.raises(ValueError, match=match):
            PeftModel.from_pretrained(fresh, folder)
