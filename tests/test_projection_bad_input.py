"""Bad input gets a ValueError / TypeError naming the module, tensor or field and what was expected."""

import copy

import pytest
import torch
from peft import PeftModel, get_peft_model
from torch import nn

import hf_know
from hf_know.testing import tiny_cnn, tiny_resnet


class WithEmbedding(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.conv = nn.Conv1d(4, 4, 3)


@pytest.mark.parametrize(
    ("model", "target", "kind"),
    [(tiny_cnn, ["head"], "Linear"), (WithEmbedding, ["embed"], "Embedding")],
)
def test_targeting_a_linear_or_embedding_suggests_modules_to_save(model, target, kind):
    with pytest.raises(TypeError, match=rf"'{target[0]}', a {kind}.*modules_to_save=\['{target[0]}'\]"):
        get_peft_model(model(), hf_know.ProjectionConfig(target_modules=target))


def test_targets_matching_nothing_name_the_config_and_list_the_convs():
    with pytest.raises(ValueError, match=r"target_modules=\{'nonexistent'\}.*selects no conv layer.*'conv1d'"):
        get_peft_model(tiny_cnn(), hf_know.ProjectionConfig(target_modules=["nonexistent"]))
    with pytest.raises(ValueError, match="selects no conv layer"):
        get_peft_model(tiny_cnn(), hf_know.ProjectionConfig(exclude_modules=r".*"))


def test_adapter_loaded_onto_a_model_with_other_conv_shapes(tmp_path):
    get_peft_model(tiny_resnet(width=8), hf_know.ProjectionConfig()).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"does not fit this base model.*projection_gamma.*adapter \(8, 1\) vs model"):
        PeftModel.from_pretrained(tiny_resnet(width=4), tmp_path)


def test_safe_merge_refuses_non_finite_gamma_and_names_it():
    model = get_peft_model(tiny_cnn(), hf_know.ProjectionConfig())
    weights = {n: p.detach().clone() for n, p in model.named_parameters() if "base_layer.weight" in n}
    with torch.no_grad():
        model.base_model.model.grouped.projection_gamma["default"][1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"grouped\.projection_gamma\.default \(1 of 32\)"):
        model.merge_and_unload(safe_merge=True)
    with pytest.raises(ValueError, match="non-finite"):
        model.merge_adapter(safe_merge=True)
    # refused before any weight was touched
    assert all(torch.equal(p, weights[n]) for n, p in model.named_parameters() if n in weights)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"bias": "some"},
            ValueError,
            r"bias must be one of \('none', 'all', 'projection_only'\), got 'some'",
        ),
        ({"skip_pointwise": "yes"}, TypeError, "skip_pointwise must be a bool"),
        ({"init_weights": 1}, TypeError, "init_weights must be a bool"),
        ({"target_modules": []}, ValueError, "target_modules is empty"),
        ({"target_modules": ["conv", 3]}, TypeError, "must hold module names"),
        ({"exclude_modules": 3}, TypeError, "exclude_modules must be None, a str or a list"),
        ({"modules_to_save": "head"}, TypeError, r"write \['head'\]"),
    ],
)
def test_config_values_out_of_range(kwargs, error, match):
    with pytest.raises(error, match=match):
        hf_know.ProjectionConfig(**kwargs)


def test_transposed_conv_is_not_a_projection_target():
    model = nn.Sequential(nn.Conv2d(2, 2, 3), nn.ConvTranspose2d(2, 2, 3))
    with pytest.raises(TypeError, match=r"a ConvTranspose2d, but projection applies to nn\.Conv1d"):
        get_peft_model(copy.deepcopy(model), hf_know.ProjectionConfig(target_modules=["1"]))
    with pytest.warns(UserWarning, match="leaves 1 transposed conv"):
        projected = get_peft_model(model, hf_know.ProjectionConfig())  # by default only the real conv
    assert [n for n, _ in projected.named_parameters() if "gamma" in n] == [
        "base_model.model.0.projection_gamma.default"
    ]
