"""KnowPredictor.predict: every predictor, streaming I/O, norm layers, Hub checkpoints and revisions, bad input."""

import json
import logging

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForImageClassification, AutoModelForSequenceClassification

from hf_know.hub import pull, push_folder, render_model_card
from hf_know.know import KnowHyperModel, KnowPredictor, push_prediction, tensor_kind
from hf_know.know.extrapolate import Extrapolator
from hf_know.know.hypermodel import KNOWN_BATCH
from hf_know.know.predictor import PREDICTION_FILE
from hf_know.testing import tiny_bert, tiny_resnet

STEPS = 2


def make_trajectory(root, model_fn=tiny_bert, n=5, dtype=torch.float32, max_shard_size=None):
    """`n` checkpoints whose floating tensors move along a straight line: checkpoint i (smallest data first) is
    `base + t * direction` with t = i - (n - 1), so the full-data one (last) is `base`."""
    torch.manual_seed(0)
    base = model_fn().to(dtype)
    state = base.state_dict()
    direction = {k: torch.randn_like(v) * 0.01 for k, v in state.items() if v.is_floating_point()}
    folders = []
    for i in range(n):
        t = i - (n - 1)
        model = model_fn().to(dtype)
        model.load_state_dict({k: v + t * direction[k] if k in direction else v for k, v in state.items()})
        folder = root / f"ckpt-{i}"
        kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
        model.save_pretrained(folder, **kwargs)
        folders.append(folder)
    return folders, state, direction


def load_prediction(folder):
    files = sorted(folder.glob("*.safetensors"))
    state = {}
    for file in files:
        state.update(load_file(file))
    return state


@pytest.fixture(scope="module")
def bert_trajectory(tmp_path_factory):
    return make_trajectory(tmp_path_factory.mktemp("bert"))


@pytest.mark.parametrize("predictor", ["naive", "task_vector", "linear", "quadratic"])
def test_fitted_predictors_extrapolate_a_straight_trajectory_exactly(tmp_path, bert_trajectory, predictor):
    folders, state, direction = bert_trajectory
    out = KnowPredictor().predict(folders, STEPS, tmp_path / "out", predictor=predictor)
    predicted = load_prediction(out)
    record = json.loads((out / PREDICTION_FILE).read_text())
    assert record["tensors"]["predict"] > 0 and record["tensors"]["norm"] > 0
    k = 0 if predictor == "naive" else STEPS
    for name, value in state.items():
        is_norm = "LayerNorm" in name
        expected = value if is_norm or name not in direction else value + k * direction[name]
        torch.testing.assert_close(predicted[name], expected, atol=1e-5, rtol=1e-4, msg=name)
    model = AutoModelForSequenceClassification.from_pretrained(out)  # a standard checkpoint
    assert model.config.num_labels == 4


def test_shrink_scales_weights_per_kind_and_leaves_biases(tmp_path, bert_trajectory):
    folders, state, _ = bert_trajectory
    out = KnowPredictor().predict(folders, STEPS, tmp_path / "out", predictor="shrink", shrink={"fc": 0.5})
    predicted = load_prediction(out)
    weight = "bert.encoder.layer.0.attention.self.query.weight"
    torch.testing.assert_close(predicted[weight], state[weight] * 0.25)
    torch.testing.assert_close(predicted[weight.replace("weight", "bias")], state[weight.replace("weight", "bias")])


def test_known_applies_the_hypermodel_recursively_per_scalar(tmp_path, bert_trajectory):
    folders, _, _ = bert_trajectory
    hypermodel = KnowHyperModel()
    out = KnowPredictor(hypermodel).predict(folders, STEPS, tmp_path / "out", chunk_size=1000)
    predicted = load_prediction(out)
    states = [load_file(f / "model.safetensors") for f in folders]
    for name in ["bert.embeddings.word_embeddings.weight", "classifier.bias", "bert.pooler.dense.weight"]:
        window = torch.stack([s[name].reshape(-1) for s in states], dim=1)
        kind = tensor_kind(states[-1][name].shape)
        with torch.no_grad():
            for _ in range(STEPS):
                window = torch.cat([window[:, 1:], hypermodel(window, kind)[:, None]], dim=1)
        torch.testing.assert_close(predicted[name].reshape(-1), window[:, -1], atol=1e-6, rtol=1e-5)


def test_sharded_bf16_in_sharded_out_and_chunking_does_not_change_the_result(tmp_path):
    folders, state, _ = make_trajectory(tmp_path, dtype=torch.bfloat16, max_shard_size="30KB")
    assert (folders[0] / "model.safetensors.index.json").is_file()
    predictor = KnowPredictor(KnowHyperModel())
    small = predictor.predict(folders, 1, tmp_path / "small", chunk_size=97, max_shard_size=40_000)
    large = predictor.predict(folders, 1, tmp_path / "large", chunk_size=1 << 20)
    index = json.loads((small / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1 and set(index["weight_map"]) == set(state)
    a, b = load_prediction(small), load_prediction(large)
    assert all(a[k].dtype == torch.bfloat16 and torch.equal(a[k], b[k]) for k in state)
    model = AutoModelForSequenceClassification.from_pretrained(small)
    assert model.bert.embeddings.word_embeddings.weight.dtype in (torch.bfloat16, torch.float32)


def test_batchnorm_copied_by_default_and_reset_on_request(tmp_path):
    folders, state, direction = make_trajectory(tmp_path, model_fn=lambda: tiny_resnet(num_labels=3))
    copy = load_prediction(KnowPredictor().predict(folders, 1, tmp_path / "copy", predictor="linear"))
    reset_dir = KnowPredictor().predict(folders, 1, tmp_path / "reset", predictor="linear", norm_layers="reset")
    reset = load_prediction(reset_dir)
    bn = "resnet.embedder.embedder.normalization"
    for leaf, fresh in [("weight", 1.0), ("bias", 0.0), ("running_mean", 0.0), ("running_var", 1.0)]:
        torch.testing.assert_close(copy[f"{bn}.{leaf}"], state[f"{bn}.{leaf}"])
        assert torch.all(reset[f"{bn}.{leaf}"] == fresh)
    assert reset[f"{bn}.num_batches_tracked"] == 0
    conv = "resnet.embedder.embedder.convolution.weight"
    torch.testing.assert_close(copy[conv], state[conv] + direction[conv])
    AutoModelForImageClassification.from_pretrained(reset_dir)


def adapter_trajectory(root, model, n=5):
    """`n` adapter checkpoints of a PEFT `model` whose trainable tensors move along a straight line (smallest data
    first, the last one at the adapter's initial values)."""
    torch.manual_seed(0)
    trainable = {k: p.detach().clone() for k, p in model.named_parameters() if p.requires_grad}
    direction = {k: torch.randn_like(v) * 0.01 for k, v in trainable.items()}
    folders = []
    for i in range(n):
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name in trainable:
                    param.copy_(trainable[name] + (i - (n - 1)) * direction[name])
        model.save_pretrained(root / f"session-{n - 1 - i}")
        folders.append(root / f"session-{n - 1 - i}")
    return folders, trainable, direction


@pytest.mark.parametrize("method", ["lora", "projection"])
def test_adapter_trajectories_predict_an_adapter_peft_loads(tmp_path, method):
    """KNOW on PEFT adapters: LoRA factors and projection gamma (2-D) are extrapolated, the saved head's bias too; the
    output is one adapter_model.safetensors with the adapter's config, and `PeftModel.from_pretrained` loads it."""
    from peft import LoraConfig, PeftModel, get_peft_model

    from hf_know import ProjectionConfig
    from hf_know.testing import tiny_cnn

    if method == "lora":
        make = tiny_bert
        config = LoraConfig(
            r=2, target_modules=["query", "value"], init_lora_weights=False, modules_to_save=["classifier"]
        )
    else:
        make = tiny_cnn
        config = ProjectionConfig(modules_to_save=["head"])
    folders, trainable, direction = adapter_trajectory(tmp_path, get_peft_model(make(), config))
    out = KnowPredictor().predict(folders, STEPS, tmp_path / "out", predictor="task_vector", max_shard_size=100)
    assert sorted(p.name for p in out.glob("*.safetensors")) == ["adapter_model.safetensors"]
    record = json.loads((out / PREDICTION_FILE).read_text())
    assert record["tensors"]["predict"] == len(trainable) and record["tensors"]["copy"] == 0
    loaded = dict(PeftModel.from_pretrained(make(), out).named_parameters())
    for name, value in trainable.items():  # the same names: both adapters are called "default"
        torch.testing.assert_close(loaded[name].detach(), value + STEPS * direction[name], atol=1e-5, rtol=1e-4)
    assert any("lora_" in name or "projection_gamma" in name for name in trainable)


def test_exclude_copies_matching_tensors(tmp_path, bert_trajectory):
    folders, state, _ = bert_trajectory
    out = KnowPredictor().predict(folders, 1, tmp_path / "out", predictor="linear", exclude=["classifier.*"])
    predicted = load_prediction(out)
    assert torch.equal(predicted["classifier.weight"], state["classifier.weight"])
    assert not torch.equal(predicted["bert.pooler.dense.weight"], state["bert.pooler.dense.weight"])


def test_checkpoints_and_revisions_from_the_hub_and_push_with_card(tmp_path, bert_trajectory, hub):
    folders, _, _ = bert_trajectory
    commits = [push_folder(f, "tester/trajectory", revision=f"session-{4 - i}") for i, f in enumerate(folders)]
    specs = [f"tester/trajectory@session-{4 - i}" for i in range(5)]
    specs[0] = f"tester/trajectory@{commits[0].oid}"  # a commit works as a revision too
    predictor = KnowPredictor(KnowHyperModel())
    from_hub = predictor.predict(specs, STEPS, tmp_path / "hub")
    local = predictor.predict(folders, STEPS, tmp_path / "local")
    a, b = load_prediction(from_hub), load_prediction(local)
    assert all(torch.equal(a[k], b[k]) for k in a)
    record = json.loads((from_hub / PREDICTION_FILE).read_text())
    assert record["checkpoints"][1]["revision"] == "session-3" and record["checkpoints"][0]["commit"] == commits[0].oid
    push_prediction(from_hub, "tester/know-x4")
    pulled = pull("tester/know-x4", local_dir=tmp_path / "pulled")
    AutoModelForSequenceClassification.from_pretrained(pulled)
    card = (pulled / "README.md").read_text()
    assert "| predictor | known |" in card and "session-3" in card and "BertForSequenceClassification" in card
    with pytest.raises(ValueError, match="has no revision 'session-9'"):
        predictor.predict([*specs[:4], "tester/trajectory@session-9"], 1, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_bad_input_names_the_problem_and_writes_nothing(tmp_path, bert_trajectory):
    folders, state, _ = bert_trajectory
    predictor = KnowPredictor(KnowHyperModel())
    out = predictor.predict(folders, 1, tmp_path / "out", predictor="naive")  # an earlier result, to be kept
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def fails(checkpoints, match, **kwargs):
        with pytest.raises(ValueError, match=match):
            predictor.predict(checkpoints, 1, out, **kwargs)
        assert sorted(p.name for p in tmp_path.glob("*out*")) == ["out"]  # no temporary folder left
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the previous output is untouched

    fails(folders[:1], "at least 2 checkpoints")
    fails(folders[:3], "predictor='known' reads the last 5 checkpoints")
    fails(folders[:2], "predictor='quadratic' reads the last 3 checkpoints", predictor="quadratic")
    fails(folders, "predictor='nope' is not one of", predictor="nope")
    fails(folders, "norm_layers='keep' is not one of", norm_layers="keep")

    def variant(name, edit):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "config.json").write_text((folders[1] / "config.json").read_text())
        tensors = load_file(folders[1] / "model.safetensors")
        edit(tensors)
        save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
        return folder

    missing = variant("missing", lambda t: t.pop("classifier.bias"))
    fails(
        [*folders[:1], missing, *folders[2:]], r"'.*missing' does not hold the tensors.*missing \['classifier.bias'\]"
    )
    reshaped = variant("reshaped", lambda t: t.update({"classifier.bias": torch.zeros(7)}))
    fails(
        [*folders[:1], reshaped, *folders[2:]],
        r"Tensor 'classifier.bias' of checkpoint '.*reshaped' is torch.float32 \[7\]; expected torch.float32 \[4\]",
    )
    retyped = variant("retyped", lambda t: t.update({"classifier.bias": t["classifier.bias"].half()}))
    fails([*folders[:1], retyped, *folders[2:]], r"'classifier.bias' of checkpoint '.*retyped' is torch.float16")

    def poison(t):
        t["classifier.weight"][1, 2] = float("nan")

    nan = variant("nan", poison)
    fails([*folders[:4], nan], r"Tensor 'classifier.weight' of checkpoint '.*nan' holds a non-finite value")
    norm = "bert.embeddings.LayerNorm.weight"  # copied, not predicted: checked all the same
    inf = variant("inf", lambda t: t[norm].__setitem__(0, float("inf")))
    fails([*folders[:4], inf], rf"Tensor '{norm}' of checkpoint '.*inf' holds a non-finite value \(flat index 0\)")

    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((folders[0] / "config.json").read_text())
    torch.save(load_file(folders[0] / "model.safetensors"), pickled / "pytorch_model.bin")
    fails([pickled, *folders[1:]], "holds only pickle weights.*allow_pickle=True")
    result = load_prediction(predictor.predict([pickled, *folders[1:]], 1, tmp_path / "ok", allow_pickle=True))
    expected = load_prediction(predictor.predict(folders, 1, tmp_path / "ok2"))
    assert all(torch.equal(result[k], expected[k]) for k in state)
    fails([*folders[:4], tmp_path / "nowhere"], "'.*nowhere' does not exist as a local folder")


def test_reversed_trajectory_from_collect_is_refused(tmp_path):
    folders, _, _ = make_trajectory(tmp_path, n=3)
    for i, folder in enumerate(folders):  # what collect_trajectory records: subset sizes 100, 200, 400
        (folder / "know_session.json").write_text(json.dumps({"subset_size": 100 * 2**i, "r": 0.5}))
    out = KnowPredictor().predict(folders, 1, tmp_path / "out", predictor="linear")
    assert json.loads((out / PREDICTION_FILE).read_text())["r"] == 0.5
    with pytest.raises(ValueError, match="It looks reversed: pass the smallest subset first"):
        KnowPredictor().predict(folders[::-1], 1, tmp_path / "rev", predictor="linear")
    assert not (tmp_path / "rev").exists()


def test_device_and_compute_dtype_options(tmp_path, bert_trajectory, monkeypatch):
    """`device=` / `dtype=`: every chunk reaches the extrapolator on that device in that dtype; the same prediction
    on an explicit CPU device, float64 agrees with float32 to float32 rounding, and an unavailable device or an
    unsupported dtype is refused before anything is written."""
    folders, _, _ = bert_trajectory
    seen = set()
    call = Extrapolator.__call__

    def spy(self, trajectory, kind):
        seen.add((trajectory.device.type, trajectory.dtype))
        return call(self, trajectory, kind)

    monkeypatch.setattr(Extrapolator, "__call__", spy)
    KnowPredictor().predict(folders, STEPS, tmp_path / "spy", predictor="linear", dtype="float64")
    assert seen == {("cpu", torch.float64)}
    predictor = KnowPredictor(KnowHyperModel())
    default = load_prediction(predictor.predict(folders, STEPS, tmp_path / "default", chunk_size=5000))
    explicit = load_prediction(predictor.predict(folders, STEPS, tmp_path / "cpu", chunk_size=5000, device="cpu"))
    assert all(torch.equal(default[k], explicit[k]) for k in default)
    linear = KnowPredictor().predict(folders, STEPS, tmp_path / "f32", predictor="linear")
    double = KnowPredictor().predict(folders, STEPS, tmp_path / "f64", predictor="linear", dtype="float64")
    a, b = load_prediction(linear), load_prediction(double)
    assert all(torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-6) for k in a)
    unavailable = "cuda:64"  # no machine this suite runs on has 65 GPUs
    with pytest.raises(ValueError, match=r"device='cuda:64' is not available here"):
        predictor.predict(folders, STEPS, tmp_path / "gpu", device=unavailable)
    with pytest.raises(ValueError, match=r"dtype='float16': the extrapolation computes in one of"):
        predictor.predict(folders, STEPS, tmp_path / "half", dtype="float16")
    assert not (tmp_path / "gpu").exists() and not (tmp_path / "half").exists()


def test_self_check_scores_one_step_where_the_answer_is_known_and_warns_when_it_does_worse(
    tmp_path, bert_trajectory, caplog
):
    """The self-check extrapolates the checkpoints before the full-data one by one step and scores it against the
    full-data weights: exact on a straight trajectory for the task vector; a halving shrink lands further away than
    standing still, which is recorded and warned about per kind; it is off for `naive`, with too few checkpoints or
    `backtest_scalars=0`, and a negative count is refused."""
    folders, _, _ = bert_trajectory

    def check(name, **options):
        out = KnowPredictor(KnowHyperModel()).predict(folders, STEPS, tmp_path / name, **options)
        return json.loads((out / PREDICTION_FILE).read_text())["backtest"]

    exact = check("task-vector", predictor="task_vector", backtest_scalars=500)
    assert set(exact) == {"fc", "bias"}
    for kind in exact.values():
        assert kind["newest_error"] > 1e-3 and kind["error"] < 1e-6 and 0 < kind["scalars"] <= 500
    with caplog.at_level(logging.WARNING):
        shrunk = check("shrink", predictor="shrink", shrink={"fc": 0.5})
    assert shrunk["fc"]["error"] > shrunk["fc"]["newest_error"]
    assert "KNOW self-check, fc tensors: one shrink step" in caplog.text
    assert "bias tensors" not in caplog.text  # the shrink control leaves biases alone: error equals standing still
    out = tmp_path / "shrink"
    record = json.loads((out / PREDICTION_FILE).read_text())
    card = str(render_model_card("know", {"library_name": "transformers"}, model_name="x", repo_id="t/x",
                                 architecture="Bert", record=record))  # fmt: skip
    assert "## Self-check" in card and "| fc |" in card and "| worse than standing still |" in card
    assert "AutoModel.from_pretrained" in card and "PeftModel" not in card
    adapter_card = str(render_model_card("know", {}, model_name="x", repo_id="t/x", architecture="Bert",
                                         record=record, adapter=True))  # fmt: skip
    assert 'PeftModel.from_pretrained(base_model, "t/x")' in adapter_card and "AutoModel" not in adapter_card
    assert check("naive", predictor="naive") is None
    assert check("known", predictor="known") is None  # KNOWN reads all 5 checkpoints: none left to check it on
    assert check("off", predictor="linear", backtest_scalars=0) is None
    with pytest.raises(ValueError, match=r"backtest_scalars=-1: expected 0 \(no self-check\) or a positive number"):
        check("negative", predictor="linear", backtest_scalars=-1)
    assert not (tmp_path / "negative").exists()


def test_known_recursion_over_batches_matches_the_hypermodel():
    """KNOWN's recursion, run in `KNOWN_BATCH`-row batches through every step (a full and a partial batch here),
    gives the recursive hyper-model's values row for row."""
    torch.manual_seed(0)
    hypermodel, trajectory = KnowHyperModel(), torch.randn(KNOWN_BATCH + 904, 5) * 0.02
    predicted = Extrapolator("known", STEPS, hypermodel)(trajectory, "fc")
    window = trajectory
    with torch.no_grad():
        for _ in range(STEPS):
            window = torch.cat([window[:, 1:], hypermodel(window, "fc")[:, None]], dim=1)
    torch.testing.assert_close(predicted, window[:, -1], atol=1e-6, rtol=1e-5)
