"""`_peft_registry` teaches PEFT the projection method; these tests fail loudly if PEFT changes the mechanism."""

import textwrap

import pytest
import torch
from peft import PeftType, get_peft_model
from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_PREFIX_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING
from peft.utils import register_peft_method
from transformers import AutoModelForImageClassification

import hf_know
from hf_know._peft_registry import add_peft_type, register_method
from hf_know.testing import tiny_resnet

from .conftest import run_python


def test_peft_still_needs_an_enum_member_to_register():
    """The reason the registry exists: if PEFT ever accepts new names directly, this fails and we can simplify."""
    with pytest.raises(ValueError, match="Unknown PEFT type"):
        register_peft_method(name="hfknowunknown", config_cls=hf_know.ProjectionConfig, model_cls=None)


def test_projection_is_a_full_peft_type():
    member = PeftType("PROJECTION")
    assert member is PeftType.PROJECTION is PeftType["PROJECTION"]
    assert member in list(PeftType) and member == "PROJECTION"
    assert PEFT_TYPE_TO_CONFIG_MAPPING[member] is hf_know.ProjectionConfig
    assert PEFT_TYPE_TO_TUNER_MAPPING[member] is hf_know.ProjectionModel
    assert PEFT_TYPE_TO_PREFIX_MAPPING[member] == "projection_"
    assert hf_know.ProjectionConfig().peft_type is member


def test_registration_is_idempotent_and_refuses_conflicts():
    before = len(list(PeftType))
    assert add_peft_type("PROJECTION") is PeftType.PROJECTION
    assert register_method("projection", hf_know.ProjectionConfig, hf_know.ProjectionModel) is PeftType.PROJECTION
    assert len(list(PeftType)) == before
    with pytest.raises(ValueError, match="already registered"):
        register_method("lora", hf_know.ProjectionConfig, hf_know.ProjectionModel)
    with pytest.raises(ValueError, match="upper-case identifier"):
        add_peft_type("not upper")


def test_saved_adapter_loads_in_a_fresh_process(tmp_path):
    """Only `import hf_know` in the new process: PeftConfig, PeftModel, AutoPeftModel and get_peft_model work."""
    tiny_resnet(num_labels=4).save_pretrained(tmp_path / "base")
    base = AutoModelForImageClassification.from_pretrained(tmp_path / "base")  # sets base_model_name_or_path
    model = get_peft_model(base, hf_know.ProjectionConfig(modules_to_save=["classifier"], init_weights=False))
    model.save_pretrained(tmp_path / "adapter")
    x = torch.randn(2, 1, 16, 16)
    torch.save({"x": x, "y": model.eval()(pixel_values=x).logits}, tmp_path / "io.pt")
    code = textwrap.dedent(
        f"""
        import torch, hf_know
        from peft import AutoPeftModel, PeftConfig, PeftModel, PeftType, get_peft_model
        from transformers import AutoModelForImageClassification
        config = PeftConfig.from_pretrained({str(tmp_path / "adapter")!r})
        assert type(config) is hf_know.ProjectionConfig and config.peft_type is PeftType.PROJECTION
        io = torch.load({str(tmp_path / "io.pt")!r}, weights_only=True)
        base = AutoModelForImageClassification.from_pretrained({str(tmp_path / "base")!r})
        model = PeftModel.from_pretrained(base, {str(tmp_path / "adapter")!r}).eval()
        assert torch.equal(model(pixel_values=io["x"]).logits, io["y"])
        auto = AutoPeftModel.from_pretrained({str(tmp_path / "adapter")!r}).eval()
        assert torch.equal(auto(pixel_values=io["x"]).logits, io["y"])
        fresh = AutoModelForImageClassification.from_pretrained({str(tmp_path / "base")!r})
        created = get_peft_model(fresh, hf_know.ProjectionConfig())
        assert sum(isinstance(m, hf_know.ProjectionLayer) for m in created.modules()) == 6
        print("ok")
        """
    )
    assert run_python(code).stdout.strip().endswith("ok")
