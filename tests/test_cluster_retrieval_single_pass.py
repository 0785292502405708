"""Frozen-backbone retrieval in a single pass: when every adapted layer runs after the feature layer, the forward
routes itself from the hidden state it computes there, with the same outputs as routing from a separate pass."""

import pytest
import torch
from peft import get_peft_model
from torch import nn
from transformers import LlamaConfig, LlamaForSequenceClassification

import hf_know
from hf_know.backbones import efficientnet_lite0
from hf_know.testing import tiny_bert

from .test_cluster_retrieval_model import LM_PROMPTS, A, B, batch, perturb_trainable, two_task_lm


def counting(module: nn.Module) -> list:
    calls = []
    module.register_forward_hook(lambda *_: calls.append(1))
    return calls


def bert_two_tasks(targets, feature_layer):
    torch.manual_seed(0)
    config = hf_know.ClusterRetrievalAdapterConfig(
        target_modules=targets, r=4, pooling="mean", retrieval_space="frozen_backbone", feature_layer=feature_layer
    )
    model = get_peft_model(tiny_bert(), config)
    for name, data in (("a", [A, batch(0, 10, n=24)]), ("b", [B, batch(90, 100, n=24)])):
        model.add_task(name)
        perturb_trainable(model)
        model.fit_signature(name, data)
    return model.eval()


@pytest.mark.parametrize("feature_layer", [1, 2, -1])
def test_adapters_above_the_feature_layer_route_in_the_same_pass(feature_layer):
    targets = ["layer.1.attention.self.query", "layer.1.attention.self.value", "classifier"]
    if feature_layer != 1:
        targets = ["classifier"]  # the feature layer is the last block's output: only the head is above it
    model = bert_two_tasks(targets, feature_layer)
    both = {k: torch.cat([A[k], B[k]]) for k in A}
    embeddings = counting(model.base_model.model.bert.embeddings)
    with torch.no_grad():
        free = model(**both).logits
    assert len(embeddings) == 1  # one pass: no separate embedding pass
    found, _ = model.retrieve(**both)
    assert found.tolist() == [0] * 8 + [1] * 8
    with torch.no_grad():
        torch.testing.assert_close(free, model(**both, adapter_names=found.tolist()).logits)


@pytest.mark.parametrize(
    ("target", "feature_layer", "layer_runs"),
    [("layer.1.attention.self.query", 2, [1, 2]), ("layer.0.attention.self.query", 1, [2, 1])],
)
def test_adapted_blocks_below_the_feature_layer_share_the_forwards_prefix(target, feature_layer, layer_runs):
    """The embeddings (and blocks below the first adapted one) run once; the frozen blocks from the first adapted
    one up to the feature layer run once more, with the adapters off, to route the rest of the same forward."""
    model = bert_two_tasks([target, "classifier"], feature_layer)
    both = {k: torch.cat([A[k], B[k]]) for k in A}
    embeddings = counting(model.base_model.model.bert.embeddings)
    layers = [counting(layer) for layer in model.base_model.model.bert.encoder.layer]
    with torch.no_grad():
        free = model(**both).logits
    assert len(embeddings) == 1 and [len(calls) for calls in layers] == layer_runs
    found, _ = model.retrieve(**both)
    assert found.tolist() == [0] * 8 + [1] * 8
    with torch.no_grad():
        torch.testing.assert_close(free, model(**both, adapter_names=found.tolist()).logits)


def test_a_forward_that_writes_a_generation_cache_embeds_in_a_separate_pass():
    lm = two_task_lm(retrieval_space="frozen_backbone")  # q/v of every layer: below the last layer's output
    prompts = LM_PROMPTS
    embeddings = counting(lm.base_model.model.model.embed_tokens)
    with torch.no_grad():
        cached = lm(**prompts["b"]).logits  # use_cache: the blocks must not run twice into the cache
        assert len(embeddings) == 2
        uncached = lm(**prompts["b"], use_cache=False).logits
        assert len(embeddings) == 3
        torch.testing.assert_close(cached, uncached)
        torch.testing.assert_close(cached, lm(**prompts["b"], adapter_names=[1] * 4).logits)
    generated = lm.generate(**prompts["b"], max_new_tokens=3, do_sample=False)
    assert torch.equal(generated, lm.generate(**prompts["b"], max_new_tokens=3, do_sample=False, adapter_names=[1] * 4))


def test_a_classifier_on_a_decoder_shares_the_prefix_and_builds_no_cache():
    """A sequence classifier on a causal LM cannot generate, yet its config's `use_cache` makes the decoder build a
    cache: blocks run twice used to fill it twice (a shape error). The routed forward now asks for no cache."""
    torch.manual_seed(0)
    base = LlamaForSequenceClassification(
        LlamaConfig(
            vocab_size=101, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2, pad_token_id=100, num_labels=4, use_cache=True,
        )
    )  # fmt: skip
    config = hf_know.ClusterRetrievalAdapterConfig(
        target_modules=r"model\.layers\.1\.self_attn\.(q_proj|v_proj)|score",
        r=4,
        pooling="mean",
        retrieval_space="frozen_backbone",
        feature_layer=2,
    )
    model = get_peft_model(base, config)
    for name, data in (("a", [A, batch(0, 10, n=24)]), ("b", [B, batch(90, 100, n=24)])):
        model.add_task(name)
        perturb_trainable(model)
        model.fit_signature(name, data)
    model.eval()
    both = {k: torch.cat([A[k], B[k]]) for k in A}
    embeddings = counting(model.base_model.model.model.embed_tokens)
    layers = [counting(layer) for layer in model.base_model.model.model.layers]
    with torch.no_grad():
        free = model(**both)
    assert len(embeddings) == 1 and [len(calls) for calls in layers] == [1, 2, 1]
    assert free.past_key_values is None
    found, _ = model.retrieve(**both)
    with torch.no_grad():
        torch.testing.assert_close(free.logits, model(**both, adapter_names=found.tolist()).logits)


def test_an_embedding_pass_stops_after_the_feature_layer_of_a_transformer():
    model = bert_two_tasks(["classifier"], feature_layer=1)
    layers = [counting(layer) for layer in model.base_model.model.bert.encoder.layer]
    model.embed(**A)
    assert [len(calls) for calls in layers] == [1, 1]  # layer 1 runs only for its input to be read (a hook)
    model = bert_two_tasks(["classifier"], feature_layer=0)
    layers = [counting(layer) for layer in model.base_model.model.bert.encoder.layer]
    model.embed(**A)
    assert [len(calls) for calls in layers] == [1, 0]


@pytest.mark.parametrize("feature_layer", [14, 15])
def test_efficientnet_routes_its_conv_adapters_from_the_block_below_them_in_one_pass(feature_layer):
    """EfficientNet's blocks change width, so an embedding pass (fit_signature) runs the whole stack instead of
    cutting it after the feature layer (what follows could not take block 14's output)."""
    torch.manual_seed(0)
    base = efficientnet_lite0(4, 32)
    above = tuple(f"_blocks.{i}." for i in range(feature_layer, 16))
    convs = [
        n for n, m in base.named_modules() if isinstance(m, nn.Conv2d) and m.groups == 1 and n.startswith(above, 9)
    ]
    config = hf_know.ClusterRetrievalAdapterConfig(
        target_modules=[*convs, "_conv_head", "classifier"],
        r=4,
        retrieval_space="frozen_backbone",
        feature_layer=feature_layer,
    )
    model = get_peft_model(base, config)
    images = {"a": torch.randn(6, 1, 32, 32), "b": torch.randn(6, 1, 32, 32).abs() * 3}
    for name, x in images.items():
        model.add_task(name)
        perturb_trainable(model)
        model.fit_signature(name, [{"pixel_values": x}])
    model.eval()
    x = torch.cat(list(images.values()))
    stem = counting(model.base_model.model.backbone._conv_stem)
    with torch.no_grad():
        free = model(pixel_values=x).logits
    assert len(stem) == 1
    found, _ = model.retrieve(pixel_values=x)
    with torch.no_grad():
        torch.testing.assert_close(free, model(pixel_values=x, adapter_names=found.tolist()).logits)
    assert found.tolist() == [0] * 6 + [1] * 6
    width = base.backbone._blocks[feature_layer]._expand_conv.get_base_layer().in_channels
    assert model.embed(pixel_values=x).shape == (12, width)  # the input of the block at the feature layer


def test_routing_follows_a_replaced_or_reloaded_signature():
    """The stacked signatures retrieval scores every forward with are rebuilt when a signature changes."""
    model = bert_two_tasks(["classifier"], feature_layer=-1)
    both = {k: torch.cat([A[k], B[k]]) for k in A}
    before = model.retrieve(**both)[0]
    assert before.tolist() == [0] * 8 + [1] * 8
    a, b = model.signature("a"), model.signature("b")
    swapped = [(s.weights.clone(), s.means.clone(), s.precision_cholesky.clone()) for s in (b, a)]
    for name, (weights, means, precision) in zip(("a", "b"), swapped, strict=True):
        model.set_signature(name, type(a)(weights, means, precision))
    assert model.retrieve(**both)[0].tolist() == [1] * 8 + [0] * 8
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.set_signature("a", type(a)(*swapped[1]))  # both tasks now share one signature: ties go to task 0
    assert model.retrieve(**both)[0].tolist() == [0] * 16
    model.load_state_dict(state)  # in-place copies: the stack must notice
    assert model.retrieve(**both)[0].tolist() == [1] * 8 + [0] * 8
