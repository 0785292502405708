"""The KNOWN hyper-model: architecture, fast path, Hub round trip, and the Keras HDF5 converter."""

import copy

import numpy as np
import pytest
import torch

from hf_know.know import KnowHyperModel, KnownNet, KnowPredictor, tensor_kind
from hf_know.know.hypermodel import KNOWN_BATCH
from hf_know.know.keras import convert_keras_weights, keras_layer_order
from hf_know.know.metatrain import MetaDataConfig, collect_meta_trajectories, training_pairs

h5py = pytest.importorskip("h5py")


def test_known_net_has_the_papers_size_and_fast_path_matches():
    net = KnownNet(window=5)
    assert sum(p.numel() for p in net.parameters()) == 9425  # counted from the released KNOWN_*.h5 files
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.3)
    trajectory = torch.randn(1000, 5) * 0.1

    def exact() -> torch.Tensor:  # the layer-by-layer forward in float64
        return copy.deepcopy(net).double()(trajectory.double()).float()

    expected = exact()
    assert expected.abs().max() < 1 and expected.std() > 1e-3  # tanh-bounded, not degenerate
    # The fast path reassociates sums; it stays as close to the exact value as float32 `forward` does (both
    # within 4e-6 over 200 seeds).
    torch.testing.assert_close(net(trajectory), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(net.fast_forward(trajectory), expected, atol=1e-5, rtol=0)
    with torch.no_grad():  # the packed weights follow parameter updates
        net.head.weight.mul_(-1)
    torch.testing.assert_close(net.fast_forward(trajectory), exact(), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="trajectories of length 5"):
        net(torch.zeros(3, 4))


def test_retrodict_is_the_papers_recursion_across_batches():
    """`retrodict` slides the window over its own predictions: k steps equal k applications of the layer-by-layer
    forward, on rows spanning more than one CPU batch; a float64 trajectory keeps its precision."""
    net = KnownNet(window=5)
    trajectory = (torch.randn(KNOWN_BATCH + 3, 1) + torch.randn(KNOWN_BATCH + 3, 5) * 0.01).double()
    window = trajectory.clone()
    for _ in range(3):
        with torch.no_grad():
            predicted = window[:, -1] + net.float()(window.float()).double()
        window = torch.cat([window[:, 1:], predicted[:, None]], dim=1)
    got = net.retrodict(trajectory, 3)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, window[:, -1], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="steps=0"):
        net.retrodict(trajectory, 0)


@pytest.mark.parametrize(
    ("shape", "any_kernel", "only_3x3"),
    [
        ((8, 3, 3, 3), "conv", "conv"),
        ((8, 3, 1, 1), "conv", "fc"),
        ((8, 3, 7, 7), "conv", "fc"),
        ((10, 20), "fc", "fc"),
        ((8, 3, 5), "conv", "fc"),
        ((10,), "bias", "bias"),
    ],
)
def test_tensor_kind_rules(shape, any_kernel, only_3x3):
    assert tensor_kind(shape, "any_kernel") == any_kernel
    assert tensor_kind(shape, "3x3_only") == only_3x3
    with pytest.raises(ValueError, match="conv_rule='nope' is not one of"):
        tensor_kind(shape, "nope")


def test_hypermodel_save_push_and_load(tmp_path, hub):
    model = KnowHyperModel(conv_rule="3x3_only")
    trajectory = torch.randn(64, 5) * 0.05
    model.save_pretrained(tmp_path / "hm")
    loaded = KnowHyperModel.from_pretrained(tmp_path / "hm")
    assert loaded.conv_rule == "3x3_only"
    for kind in ("conv", "fc", "bias"):
        torch.testing.assert_close(loaded(trajectory, kind), model(trajectory, kind))
    model.push_to_hub("tester/known")
    pulled = KnowPredictor.from_pretrained("tester/known")
    torch.testing.assert_close(pulled.hypermodel(trajectory, "fc"), model(trajectory, "fc"))
    assert pulled.hypermodel_name == "tester/known"


def test_default_hypermodel_ships_with_the_package_and_beats_naive_on_fresh_meta_data():
    predictor = KnowPredictor.from_pretrained()
    assert isinstance(predictor.hypermodel, KnowHyperModel) and predictor.hypermodel.window == 5
    # Trajectories of networks it never saw (another seed): the meta-trained KNOWN predicts the next larger-data
    # weights better than the newest value; a freshly initialised hyper-model does far worse.
    trajectories = collect_meta_trajectories(MetaDataConfig(num_runs=2, tasks=["digits_mlp"], meta_data_seed=123))
    inputs, targets = training_pairs(trajectories["fc"], window=5)
    with torch.no_grad():
        known = (predictor.hypermodel(inputs, "fc") - targets).abs().mean()
        fresh = (KnowHyperModel()(inputs, "fc") - targets).abs().mean()
    naive = (inputs[:, -1] - targets).abs().mean()
    assert known < 0.9 * naive < fresh


def write_keras_h5(path, rng, window=5):
    """An HDF5 file in the layout Keras 2.9 `save_weights` gives KNOWN: groups dense ... dense_12, each with
    `weight_names` and `<group>/<group>/kernel:0` of shape (in, out) plus `bias:0`."""
    shapes = [(window, 64), (64, 8), (8, 64), (8, 64), (8, 64), (64, 32)]
    shapes += [(window - 1, 64), (64, 8), (8, 64), (8, 64), (8, 64), (64, 32), (64, 1)]
    arrays = {}
    with h5py.File(path, "w") as file:
        file.attrs["keras_version"] = b"2.9.0"
        file.attrs["backend"] = b"tensorflow"
        names = [f"dense_{i}" if i else "dense" for i in range(13)]
        file.attrs["layer_names"] = [n.encode() for n in names]
        for name, shape in zip(names, shapes, strict=True):
            kernel = rng.normal(0, 0.3, shape).astype(np.float32)
            bias = rng.normal(0, 0.1, shape[1]).astype(np.float32)
            group = file.create_group(name)
            group.attrs["weight_names"] = [f"{name}/kernel:0".encode(), f"{name}/bias:0".encode()]
            group.create_dataset(f"{name}/kernel:0", data=kernel)
            group.create_dataset(f"{name}/bias:0", data=bias)
            arrays[name] = (kernel, bias)
    return arrays


def numpy_known(arrays, w):
    """KNOWN as the authors' Keras model computes it (know.md section 2), written independently in NumPy."""

    def dense(name, x):
        kernel, bias = arrays[name]
        return x @ kernel + bias

    def branch(x, first):
        names = [f"dense_{first + i}" if first + i else "dense" for i in range(6)]
        h = dense(names[0], x)
        c = np.maximum(dense(names[1], h), 0)
        g = dense(names[2], c) + dense(names[3], c) * np.exp(dense(names[4], c) * h)
        z = dense(names[5], g)
        return np.where(z > 0, z, 0.3 * z)  # Keras LeakyReLU's default slope

    z = np.concatenate([branch(w, 0), branch(np.diff(w, axis=1), 6)], axis=1)
    return w[:, -1] + np.tanh(dense("dense_12", z))[:, 0]


def test_keras_converter_matches_an_independent_numpy_forward(tmp_path):
    rng = np.random.default_rng(0)
    files = {kind: tmp_path / f"KNOWN_{kind}.h5" for kind in ("Conv", "FC", "Bias")}
    arrays = {kind: write_keras_h5(path, rng) for kind, path in files.items()}
    model = convert_keras_weights(files["Conv"], files["FC"], files["Bias"])
    w = rng.normal(0, 0.05, (500, 5)).astype(np.float32)
    for kind, name in (("conv", "Conv"), ("fc", "FC"), ("bias", "Bias")):
        expected = numpy_known(arrays[name], w.astype(np.float64))
        got = model(torch.from_numpy(w), kind).detach().numpy()
        np.testing.assert_allclose(got, expected, atol=2e-5)
    assert [name for name, _ in keras_layer_order(model.nets["fc"])][-1] == "dense_12"


def test_keras_converter_names_the_bad_file_and_layer(tmp_path):
    rng = np.random.default_rng(0)
    good, short = tmp_path / "good.h5", tmp_path / "short.h5"
    write_keras_h5(good, rng)
    write_keras_h5(short, rng, window=4)
    with pytest.raises(ValueError, match=r"short\.h5:dense: kernel \(4, 64\).*expected \(5, 64\)"):
        convert_keras_weights(good, short, good)
    broken = tmp_path / "broken.h5"
    write_keras_h5(broken, rng)
    with h5py.File(broken, "a") as file:
        del file["dense_7"]
    with pytest.raises(ValueError, match=r"broken\.h5: no layer group 'dense_7'"):
        convert_keras_weights(good, good, broken)


def test_meta_data_read_from_real_trajectories_are_their_checkpoints_values(tmp_path):
    """`MetaDataConfig.trajectories`: scalars drawn from a collect_trajectory folder are rows of its checkpoints'
    values (smallest data first), capped per kind; a folder with another number of sessions is refused by name."""
    import datasets
    from safetensors.torch import load_file
    from transformers import TrainingArguments

    from hf_know.know import collect_trajectory
    from hf_know.testing import tiny_bert

    ids = torch.randint(1, 100, (64, 6), generator=torch.Generator().manual_seed(0))
    data = datasets.Dataset.from_dict({"input_ids": ids.tolist(), "labels": (ids[:, 0] % 2).tolist()})
    args = TrainingArguments(str(tmp_path / "scratch"), per_device_train_batch_size=8, learning_rate=1e-2,
                             report_to="none", save_strategy="no", use_cpu=True)  # fmt: skip
    checkpoints = collect_trajectory(tiny_bert(), data, args, tmp_path / "run", num_sessions=7)
    config = MetaDataConfig(num_runs=0, trajectories=[str(tmp_path / "run")], max_scalars_per_trajectory=300)
    sampled = collect_meta_trajectories(config)
    states = [load_file(f"{c}/model.safetensors") for c in checkpoints]
    name = "bert.encoder.layer.0.attention.self.query.weight"
    assert len(sampled["fc"]) == 300 and 0 < len(sampled["bias"]) <= 300 and len(sampled["conv"]) == 0
    fc_rows = torch.cat([torch.stack([s[n].reshape(-1) for s in states], 1) for n in states[0] if
                         n.endswith(".weight") and states[0][n].ndim == 2])  # fmt: skip
    assert not torch.equal(states[0][name], states[-1][name])  # the sessions trained
    rows = {tuple(row.tolist()) for row in fc_rows}
    assert all(tuple(row.tolist()) in rows for row in sampled["fc"])
    with pytest.raises(ValueError, match="holds 7 sessions; the meta-data use num_sessions=5"):
        collect_meta_trajectories(MetaDataConfig(num_runs=0, num_sessions=5, trajectories=[str(tmp_path / "run")]))
