"""ClusterRetrievalAdapterConfig as a PEFT method: tasks, composition, penalties, signatures, routing, save/load."""

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForSequenceClassification, Trainer, TrainingArguments

import hf_know
from hf_know.testing import tiny_bert, tiny_llama, tiny_vit

from .conftest import run_python

TARGETS = ["query", "value", "classifier"]


def batch(low: int, high: int, n: int = 8, length: int = 10) -> dict:
    """Token ids drawn from [low, high): disjoint ranges make well-separated tasks."""
    ids = torch.randint(low, high, (n, length), generator=torch.Generator().manual_seed(low + n))
    return {"input_ids": ids, "attention_mask": torch.ones(n, length, dtype=torch.long)}


A, B = batch(0, 10), batch(90, 100)
BOTH = {k: torch.cat([A[k], B[k]]) for k in A}


def crmodel(base=None, **kwargs):
    kwargs.setdefault("pooling", "mean")  # a random tiny BERT's [CLS] state says little about the tokens
    config = hf_know.ClusterRetrievalAdapterConfig(target_modules=TARGETS, r=4, **kwargs)
    return get_peft_model(base if base is not None else tiny_bert(), config)


def perturb_trainable(model, scale: float = 0.2) -> None:
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(scale * torch.randn_like(p))


def two_task_model(**kwargs):
    """Two tasks with non-trivial updates and fitted signatures: task 'a' on token ids < 50, 'b' on >= 50."""
    model = crmodel(**kwargs)
    model.add_task("a")
    perturb_trainable(model)
    model.fit_signature("a", [A, batch(0, 10, n=24)])
    model.add_task("b")
    perturb_trainable(model)
    model.fit_signature("b", [B, batch(90, 100, n=24)])
    return model.eval()


def test_identity_until_trained_and_only_the_newest_task_trains():
    base = tiny_bert().eval()
    expected = base(**A).logits
    model = crmodel(base).eval()
    torch.testing.assert_close(model(**A).logits, expected)  # no task yet: no update, no routing needed
    model.add_task("a")
    torch.testing.assert_close(model(**A, adapter_names=[0] * 8).logits, expected)  # B starts at 0
    model.add_task("b")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith(".b") for n in trainable), trainable
    model.set_adapter("default")  # PEFT's set_adapter must not unfreeze finished tasks
    assert {n for n, p in model.named_parameters() if p.requires_grad} == trainable


def test_earlier_task_stays_bit_identical_when_trainer_trains_a_new_one(tmp_path):
    model = crmodel()
    model.add_task("a")
    perturb_trainable(model)
    frozen = {n: p.clone() for n, p in model.named_parameters() if n.endswith(".a")}
    model.add_task("b")
    data = Dataset.from_dict({**{k: v.tolist() for k, v in B.items()}, "labels": [2, 3] * 4})
    args = TrainingArguments(
        tmp_path, num_train_epochs=3, per_device_train_batch_size=4, report_to="none", dataloader_pin_memory=False
    )
    before_b = {n: p.clone() for n, p in model.named_parameters() if n.endswith(".b")}
    Trainer(model=model, args=args, train_dataset=data).train()
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    assert any(not torch.equal(p, before_b[n]) for n, p in model.named_parameters() if n in before_b)


def test_penalties_are_added_to_the_loss_in_training_mode_only():
    model = crmodel(composition_l1=0.5, composition_l2=0.5, ortho_lambda=2.0)
    model.add_task("a")
    model.add_task("b")
    perturb_trainable(model)
    labels = torch.tensor([0, 1] * 4)
    penalty = model.regularization_loss()
    assert penalty > 0
    model.train()
    out = model(**A, labels=labels)
    plain = torch.nn.functional.cross_entropy(out.logits, labels)
    torch.testing.assert_close(out.loss, plain + penalty)
    model.eval()
    out = model(**A, labels=labels, adapter_names=[1] * 8)
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits, labels))


def test_regularization_terms_match_their_definitions():
    model = crmodel(composition_l1=1.0, composition_l2=0.0, ortho_lambda=0.0)
    model.add_task("a")
    model.add_task("b")
    perturb_trainable(model)
    layers = [m for m in model.modules() if isinstance(m, hf_know.cluster_retrieval.ClusterRetrievalLayer)]
    l1 = torch.stack([la.cr_coef["default"]["b"].abs().mean() for la in layers]).mean()
    torch.testing.assert_close(model.regularization_loss(), l1)
    layer = layers[0]
    a_new = torch.nn.functional.normalize(layer.cr_A["default"]["b"], dim=-1)
    a_old = torch.nn.functional.normalize(layer.cr_A["default"]["a"], dim=-1)
    torch.testing.assert_close(layer.regularization("default")[2], (a_new @ a_old.T).pow(2).mean())


def test_composed_update_matches_the_formula_and_mixed_batches_match_per_sample_passes():
    model = two_task_model()
    layer = model.base_model.model.bert.encoder.layer[0].attention.self.query
    a, b = layer.cr_A["default"], layer.cr_B["default"]
    c = layer.cr_coef["default"]["b"]
    s = layer.scaling["default"]
    expected = s * (b["b"] @ a["b"] + c[0] * b["a"] @ a["a"])
    torch.testing.assert_close(layer.delta_weight("default", 1), expected)
    mixed = model(**BOTH, adapter_names=["a"] * 8 + ["b"] * 8).logits
    torch.testing.assert_close(mixed[:8], model(**A, adapter_names=["a"] * 8).logits)
    torch.testing.assert_close(mixed[8:], model(**B, adapter_names=[1] * 8).logits)


def test_zero_coefficients_give_a_fresh_lora_and_one_task_equals_plain_lora():
    base = tiny_bert().eval()
    twin_base = tiny_bert()
    twin_base.load_state_dict(base.state_dict())
    lora = get_peft_model(twin_base, LoraConfig(target_modules=TARGETS, r=4, lora_alpha=16))
    model = crmodel(base, composition="learned")
    model.add_task("only")
    perturb_trainable(model)
    for name, module in model.named_modules():
        if isinstance(module, hf_know.cluster_retrieval.ClusterRetrievalLayer):
            twin = lora.get_submodule(name)
            twin.lora_A["default"].weight.data = module.cr_A["default"]["only"].data.clone()
            twin.lora_B["default"].weight.data = module.cr_B["default"]["only"].data.clone()
    model.eval(), lora.eval()
    torch.testing.assert_close(model(**A, adapter_names=[0] * 8).logits, lora(**A).logits)
    model.add_task("next")  # coefficients start at 0: the new task's update is its own pair only (B = 0)
    torch.testing.assert_close(
        model.base_model.model.classifier.delta_weight("default", 1), torch.zeros_like(base.classifier.weight)
    )


def test_retrieval_routes_each_sample_to_its_task_and_forward_needs_no_task_id():
    model = two_task_model()
    tasks, scores = model.retrieve(**BOTH)
    assert tasks.tolist() == [0] * 8 + [1] * 8
    assert scores.shape == (16, 2)
    oracle = model(**BOTH, adapter_names=[0] * 8 + [1] * 8).logits
    torch.testing.assert_close(model(**BOTH).logits, oracle)  # task-free forward: retrieval, mixed batch


@pytest.mark.parametrize("space", ["task_adapted", "frozen_backbone"])
@pytest.mark.parametrize(
    ("signature_type", "rule"),
    [("dpgmm", "max_loglik"), ("gmm", "max_loglik"), ("kmeans", "nearest_centroid"), ("centroid", "soft")],
)
def test_every_signature_type_rule_and_space_retrieves_separated_tasks(space, signature_type, rule):
    model = two_task_model(retrieval_space=space, signature_type=signature_type, retrieval_rule=rule, max_components=3)
    assert model.retrieve(**BOTH)[0].tolist() == [0] * 8 + [1] * 8


def test_soft_retrieval_mixes_the_top_tasks_updates():
    model = two_task_model(retrieval_rule="soft", top_k=2, retrieval_temperature=1e6)
    _, weights = model.retrieve(**A)
    torch.testing.assert_close(weights.sum(-1), torch.ones(8, dtype=weights.dtype))
    assert (weights > 0.4).all()  # a huge temperature mixes both tasks almost equally
    layer = model.base_model.model.classifier
    x = torch.randn(3, 32)
    mixed = layer._routed_delta(x, "default", torch.tensor([[0.5, 0.5]] * 3))
    halves = [
        layer._routed_delta(x, "default", torch.tensor([[1.0, 0.0]] * 3)),
        layer._routed_delta(x, "default", torch.tensor([[0.0, 1.0]] * 3)),
    ]
    torch.testing.assert_close(mixed, 0.5 * halves[0] + 0.5 * halves[1])


def test_embeddings_are_the_pooled_hidden_state_of_the_feature_layer():
    base = tiny_bert().eval()
    expected = base(**A, output_hidden_states=True).hidden_states
    for layer, pooling in [(0, "mean"), (1, "cls"), (-1, "cls")]:
        model = crmodel(base, retrieval_space="frozen_backbone", feature_layer=layer, pooling=pooling)
        model.add_task("a")
        perturb_trainable(model)  # frozen-backbone embeddings ignore the adapters
        features = model.base_model._embed("default", (), A, None)[0]
        hidden = expected[layer]
        pooled = hidden.mean(1) if pooling == "mean" else hidden[:, 0]
        torch.testing.assert_close(features, torch.nn.functional.normalize(pooled, dim=-1))
        model.unload()


def test_projection_mode_makes_new_rows_exactly_orthogonal():
    model = crmodel(ortho_mode="projection")
    model.add_task("a")
    model.add_task("b")
    perturb_trainable(model)
    model.add_task("c")  # bakes b's projection in
    a = model.base_model.model.bert.encoder.layer[0].attention.self.query.cr_A["default"]
    assert (a["b"] @ a["a"].T).abs().max() < 1e-5
    assert (a["c"] @ a["a"].T).abs().max() > 1e-3  # c is projected in the forward until d is added
    layer = model.base_model.model.bert.encoder.layer[0].attention.self.query
    assert (layer._task_A("default", 2) @ torch.cat([a["a"], a["b"]]).T).abs().max() < 1e-5


LM_PROMPTS = {"a": batch(0, 30, n=4, length=6), "b": batch(30, 64, n=4, length=6)}


def two_task_lm(**config):
    """A tiny decoder LM with tasks "a" and "b" (prompts `LM_PROMPTS`), last-token pooling, in eval mode."""
    torch.manual_seed(0)
    lm = get_peft_model(tiny_llama(), hf_know.ClusterRetrievalAdapterConfig(r=4, pooling="last_token", **config))
    for name, inputs in LM_PROMPTS.items():
        lm.add_task(name)
        perturb_trainable(lm)
        lm.fit_signature(name, [inputs])
    return lm.eval()


def test_vit_and_decoder_lm_with_last_token_pooling():
    vit = get_peft_model(tiny_vit(), hf_know.ClusterRetrievalAdapterConfig(target_modules=["q_proj", "v_proj"], r=4))
    images = {"a": torch.randn(6, 1, 8, 8) + 2, "b": torch.randn(6, 1, 8, 8) - 2}
    for name, pixels in images.items():
        vit.add_task(name)
        perturb_trainable(vit)
        vit.fit_signature(name, [{"pixel_values": pixels}])
    assert vit.eval().retrieve(pixel_values=torch.cat(list(images.values())))[0].tolist() == [0] * 6 + [1] * 6
    lm = two_task_lm()
    assert lm.retrieve(**LM_PROMPTS["b"])[0].tolist() == [1] * 4
    generated = lm.generate(**LM_PROMPTS["b"], max_new_tokens=3, do_sample=False)
    oracle = lm.generate(**LM_PROMPTS["b"], max_new_tokens=3, do_sample=False, adapter_names=[1] * 4)
    assert torch.equal(generated, oracle)


def test_save_and_load_in_a_fresh_process_keeps_every_task_and_signature(tmp_path):
    model = two_task_model()
    torch.save({"inputs": BOTH, "logits": model(**BOTH).logits}, tmp_path / "expected.pt")
    model.save_pretrained(tmp_path / "adapter")
    run_python(
        f"""
import torch, hf_know
from peft import PeftModel
from hf_know.testing import tiny_bert
torch.manual_seed(0)
base = tiny_bert()
expected = torch.load({str(tmp_path / "expected.pt")!r}, weights_only=True)
model = PeftModel.from_pretrained(base, {str(tmp_path / "adapter")!r}).eval()
assert model.task_names == ["a", "b"], model.task_names
assert model.signature("b") is not None
torch.testing.assert_close(model(**expected["inputs"]).logits, expected["logits"])
"""
    )


def test_push_to_and_pull_from_the_loopback_hub(tmp_path):
    torch.manual_seed(0)
    model = two_task_model()
    expected = model(**BOTH).logits
    model.push_to_hub("tester/continual-adapter")
    torch.manual_seed(0)
    pulled = PeftModel.from_pretrained(tiny_bert(), "tester/continual-adapter").eval()
    torch.testing.assert_close(pulled(**BOTH).logits, expected)
    assert pulled.retrieve(**BOTH)[0].tolist() == [0] * 8 + [1] * 8


def test_merge_with_one_task_unload_and_disable_adapter(tmp_path):
    base = tiny_bert().eval()
    plain = base(**A).logits
    model = crmodel(base)
    model.add_task("a")
    perturb_trainable(model)
    model.eval()
    routed = model(**A, adapter_names=[0] * 8).logits
    with model.disable_adapter():
        torch.testing.assert_close(model(**A).logits, plain)
    merged = model.merge_and_unload()
    torch.testing.assert_close(merged(**A).logits, routed)

    two = two_task_model()
    with pytest.raises(ValueError, match="holds 2 tasks"):
        two.merge_and_unload()
    unloaded = two.unload()
    assert not any(isinstance(m, hf_know.cluster_retrieval.ClusterRetrievalLayer) for m in unloaded.modules())
    unloaded(**A)  # no routing hook is left behind


def test_classifier_in_modules_to_save_is_targeted_per_task_instead():
    model = get_peft_model(
        tiny_bert(), hf_know.ClusterRetrievalAdapterConfig(target_modules=TARGETS, task_type="SEQ_CLS")
    )
    assert "classifier" not in model.peft_config["default"].modules_to_save
    assert isinstance(model.base_model.model.classifier, hf_know.cluster_retrieval.ClusterRetrievalLayer)


def test_bad_input_is_named():
    model = crmodel()
    model.add_task("a")
    model.add_task("b")
    model.eval()
    with pytest.raises(ValueError, match="No task of adapter 'default' has a signature"):
        model(**A)
    with pytest.raises(ValueError, match=r"No task .* has a signature"):
        model.retrieve(**A)
    with pytest.raises(ValueError, match="Duplicate task name 'a'"):
        model.add_task("a")
    with pytest.raises(ValueError, match=r"Task name 'a\.b' is not valid"):
        model.add_task("a.b")
    with pytest.raises(ValueError, match="empty dataloader"):
        model.fit_signature("a", [])
    with pytest.raises(TypeError, match="dicts of model inputs"):
        model.fit_signature("a", [(A["input_ids"],)])
    with pytest.raises(ValueError, match="Unknown task 'zzz'"):
        model.fit_signature("zzz", [A])
    with pytest.raises(ValueError, match="Task id 3 is out of range"):
        model(**A, adapter_names=[3] * 8)
    with pytest.raises(ValueError, match="adapter_names has 2 entries for a batch of 8"):
        model(**A, adapter_names=[0, 0])
    signature = hf_know.cluster_retrieval.fit_signature(torch.randn(20, 5), "centroid")
    model.fit_signature("a", [A])
    with pytest.raises(ValueError, match=r"5-dimensional features.*32-dimensional"):
        model.set_signature("a", signature)
    with pytest.raises(TypeError, match=r"nn\.Linear and nn\.Conv2d layers only"):
        get_peft_model(tiny_bert(), hf_know.ClusterRetrievalAdapterConfig(target_modules=["word_embeddings"]))
    with pytest.raises(ValueError, match="retrieval_rule must be one of"):
        hf_know.ClusterRetrievalAdapterConfig(retrieval_rule="argmax")


def test_loading_onto_a_base_model_of_another_shape_is_refused(tmp_path):
    model = two_task_model()
    model.save_pretrained(tmp_path)
    other = AutoModelForSequenceClassification.from_config(tiny_bert(hidden_size=48).config)
    with pytest.raises(ValueError, match=r"does not fit this base model.*cr_A"):
        PeftModel.from_pretrained(other, tmp_path)


def test_public_embeddings_are_what_signatures_and_retrieval_use():
    model = two_task_model(signature_type="centroid")
    through_b = model.embed(**B, task="b")
    torch.testing.assert_close(model.embed(**B, task=1), through_b)
    assert not torch.allclose(model.embed(**B, task="a"), through_b)  # each task's module changes the embedding
    signature = hf_know.cluster_retrieval.fit_signature(
        torch.cat([through_b, model.embed(**batch(90, 100, n=24), task="b")]), "centroid"
    )
    torch.testing.assert_close(signature.means, model.signature("b").means)
    frozen = model.embed(**B)
    with model.disable_adapter():
        torch.testing.assert_close(model.embed(**B), frozen)


def test_lda_head_classifies_from_class_statistics_and_saves_with_the_adapter(tmp_path):
    model = crmodel(head="lda")
    data = {
        "a": (batch(0, 5, n=16), batch(5, 10, n=16), [0, 1]),
        "b": (batch(90, 95, n=16), batch(95, 100, n=16), [2, 3]),
    }
    for name, (first, second, classes) in data.items():
        model.add_task(name)
        perturb_trainable(model, 0.05)
        inputs = {k: torch.cat([first[k], second[k]]) for k in first}
        model.fit_signature(name, [{**inputs, "labels": torch.tensor([classes[0]] * 16 + [classes[1]] * 16)}])
    assert model.peft_config["default"].task_classes == {"a": [0, 1], "b": [2, 3]}
    test = {k: torch.cat([data["a"][1][k], data["b"][0][k]]) for k in A}  # class 1 (task a), class 2 (task b)
    model.eval()
    logits = model.classify(**test)
    assert logits.argmax(-1).tolist() == [1] * 16 + [2] * 16
    assert torch.isinf(logits[:16, 2:]).all() and torch.isinf(logits[16:, :2]).all()  # other tasks' classes
    torch.testing.assert_close(model.classify(**test, adapter_names=[0] * 16 + [1] * 16), logits)
    model.save_pretrained(tmp_path)
    torch.manual_seed(0)
    loaded = PeftModel.from_pretrained(tiny_bert(), tmp_path).eval()
    torch.testing.assert_close(loaded.classify(**test), logits)
    with pytest.raises(ValueError, match="batches need 'labels'"):
        model.add_task("c")
        model.fit_signature("c", [A])
    with pytest.raises(ValueError, match="classify needs head='lda'"):
        two_task_model().classify(**A)


def test_class_gaussian_signatures_fit_from_labelled_batches_and_reload(tmp_path):
    torch.manual_seed(0)
    model = crmodel(signature_type="class_gaussian", max_components=2, retrieval_space="frozen_backbone")
    labelled = {}
    for name, (low, high) in (("a", (0, 10)), ("b", (90, 100))):
        model.add_task(name)
        batches = [batch(low, high, n=16), batch(low + 2, high, n=16)]
        labelled[name] = [{**b, "labels": torch.tensor([0, 1] * 8)} for b in batches]
        with pytest.raises(ValueError, match="signature_type='class_gaussian' fits class statistics"):
            model.fit_signature(name, batches)
        signature = model.fit_signature(name, labelled[name])
        assert signature.weights.tolist() == [0.5, 0.5] and signature.precision_cholesky.dim() == 3
    model.eval()
    found, _ = model.retrieve(**BOTH)
    assert found.tolist() == [0] * 8 + [1] * 8
    model.save_pretrained(tmp_path)
    torch.manual_seed(0)  # the same base
    loaded = PeftModel.from_pretrained(tiny_bert(), tmp_path).eval()
    torch.testing.assert_close(loaded.retrieve(**BOTH)[1], model.retrieve(**BOTH)[1])
