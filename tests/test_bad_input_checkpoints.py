"""Bad input, checkpoints: corrupted or hostile files fail with their name, and no prediction is ever non-finite."""

import json
import re
import shutil
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

from hf_know.know import KnowHyperModel, KnowPredictor
from hf_know.know.checkpoints import Checkpoint, CheckpointReader
from hf_know.testing import tiny_bert

from .conftest import snapshot
from .test_know_predictor import make_trajectory


@pytest.fixture(scope="module")
def trajectory(tmp_path_factory):
    return make_trajectory(tmp_path_factory.mktemp("ckpt"))[0]


def corrupted(tmp_path, folders, edit):
    """The trajectory with its full-data checkpoint's `model.safetensors` bytes passed through `edit`."""
    copies = []
    for folder in folders:
        copies.append(tmp_path / folder.name)
        shutil.copytree(folder, copies[-1])
    weights = copies[-1] / "model.safetensors"
    weights.write_bytes(edit(weights.read_bytes()))
    return copies


def refused(tmp_path, checkpoints, match, **kwargs):
    """predict raises ValueError matching `match`, writes no output and changes no input."""
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match=match):
        KnowPredictor(KnowHyperModel()).predict(checkpoints, 1, tmp_path / "out", predictor="naive", **kwargs)
    assert snapshot(tmp_path) == before and not (tmp_path / "out").exists()


def with_header(data: bytes, edit) -> bytes:
    """The file with its JSON header rewritten by `edit` (same data section)."""
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    encoded = json.dumps(edit(header)).encode()
    encoded += b" " * (-len(encoded) % 8)
    return struct.pack("<Q", len(encoded)) + encoded + data[8 + length :]


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda data: data[: len(data) // 2], "truncated or corrupted"),
        (lambda data: data[:5], "too short for a safetensors header"),
        (lambda data: struct.pack("<Q", 1 << 40) + data[8:], "the header claims 1099511627776 bytes"),
        (lambda data: data[:8] + b"\xff" * 16 + data[24:], "header is not valid JSON"),
        (lambda data: data + b"\0" * 64, "data section holds"),
        (
            lambda data: with_header(
                data, lambda h: {**h, "bert.pooler.dense.bias": {**h["bert.pooler.dense.bias"], "shape": [64]}}
            ),
            r"tensor 'bert.pooler.dense.bias' .* has data offsets",
        ),
    ],
    ids=["truncated", "shorter-than-header", "huge-header-length", "binary-header", "trailing-bytes", "wrong-shape"],
)
def test_corrupted_safetensors_are_refused_with_the_file_name(tmp_path, trajectory, edit, match):
    folders = corrupted(tmp_path, trajectory, edit)
    refused(tmp_path, folders, re.escape(str(folders[-1] / "model.safetensors")) + ".*" + match)


def test_overlapping_tensors_are_refused(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    save_file({"a": torch.ones(4), "b": torch.ones(4)}, folder / "model.safetensors")
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(
        with_header(data, lambda h: {**h, "b": {**h["b"], "data_offsets": h["a"]["data_offsets"]}})
    )
    with pytest.raises(ValueError, match="overlaps the previous tensor"):
        CheckpointReader(Checkpoint("ckpt", folder))


@pytest.mark.parametrize(
    ("shard", "match"),
    [("/etc/passwd", "absolute paths and '..' are refused"), ("../outside.safetensors", "'..' are refused")],
)
def test_index_shards_outside_the_checkpoint_are_refused(tmp_path, shard, match):
    folder = tmp_path / "ckpt"
    tiny_bert().save_pretrained(folder, max_shard_size="20KB")
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    (tmp_path / "outside.safetensors").write_bytes((folder / index["weight_map"]["classifier.bias"]).read_bytes())
    index["weight_map"]["classifier.bias"] = shard
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match=rf"names the shard '{shard}'.*{match}"):
        CheckpointReader(Checkpoint("ckpt", folder))
    (folder / "model.safetensors.index.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"model.safetensors.index.json: not a valid index"):
        CheckpointReader(Checkpoint("ckpt", folder))


def test_legacy_pickles_are_read_safely_or_refused_clearly(tmp_path):
    state = {"w": torch.randn(3, 3)}
    modern, legacy = tmp_path / "modern", tmp_path / "legacy"
    for folder in (modern, legacy):
        folder.mkdir()
    torch.save(state, modern / "pytorch_model.bin")
    torch.save(state, legacy / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    with pytest.raises(ValueError, match="holds only pickle weights"):
        CheckpointReader(Checkpoint("modern", modern))
    reader = CheckpointReader(Checkpoint("modern", modern), allow_pickle=True)
    assert torch.equal(reader.read("w", 0, 9), state["w"].flatten())
    with pytest.raises(
        ValueError, match=r"legacy/pytorch_model.bin cannot be memory-mapped.*convert it to safetensors"
    ):
        CheckpointReader(Checkpoint("legacy", legacy), allow_pickle=True)
    torch.save({"w": state["w"], "code": print}, modern / "pytorch_model.bin")
    with pytest.raises(ValueError, match="weights_only=True refuses"):
        CheckpointReader(Checkpoint("modern", modern), allow_pickle=True)


def test_known_is_finite_for_weights_of_any_magnitude():
    """The exp units overflowed float32 for |w| above a few tens: NaN predictions. Every magnitude now gives a
    finite step, and small weights keep the float32 result exactly."""
    predictor = KnowPredictor.from_pretrained()
    small = torch.randn(64, 5) * 0.05
    for kind, net in predictor.hypermodel.nets.items():
        assert torch.equal(
            net.fast_forward(small), net._fast_forward(small, net._packed(torch.float32), exp_limit=None)
        )
        for magnitude in (27.0, 70.0, 1e3, 1e8):
            trajectory = torch.linspace(0.9, 1.0, 5).repeat(16, 1) * magnitude * torch.randn(16, 1).sign()
            raw = net._fast_forward(trajectory, net._packed(torch.float32), exp_limit=None)
            steps = net.fast_forward(trajectory)
            assert torch.isfinite(steps).all(), (kind, magnitude)
            assert torch.equal(steps[torch.isfinite(raw)], raw[torch.isfinite(raw)])


def test_large_weights_give_a_finite_known_prediction(tmp_path):
    folders = []
    for i in range(5):
        folders.append(tmp_path / f"ckpt-{i}")
        folders[-1].mkdir()
        save_file({"big.weight": torch.full((4, 4), 90.0 + i)}, folders[-1] / "model.safetensors")
    out = KnowPredictor.from_pretrained().predict(folders, 3, tmp_path / "out")
    assert torch.isfinite(load_file(out / "model.safetensors")["big.weight"]).all()


def test_finite_weights_whose_sum_overflows_are_not_refused(tmp_path):
    """The finiteness check sums each chunk first; when the sum overflows although every value is finite, the exact
    check decides, so such a checkpoint is read and its prediction written."""
    folders = []
    for i in range(2):
        folders.append(tmp_path / f"ckpt-{i}")
        folders[-1].mkdir()
        save_file({"layer.weight": torch.full((4, 4), 3e38)}, folders[-1] / "model.safetensors")
    out = KnowPredictor().predict(folders, 1, tmp_path / "out", predictor="naive")
    assert torch.equal(load_file(out / "model.safetensors")["layer.weight"], torch.full((4, 4), 3e38))


def test_a_prediction_that_overflows_its_dtype_is_an_error_not_a_checkpoint(tmp_path):
    folders = []
    for i, value in enumerate((-60000.0, 60000.0)):  # fp16 holds at most 65504
        folders.append(tmp_path / f"ckpt-{i}")
        folders[-1].mkdir()
        save_file({"layer.weight": torch.full((2, 2), value, dtype=torch.float16)}, folders[-1] / "model.safetensors")
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match=r"prediction for tensor 'layer.weight' is not finite in torch.float16"):
        KnowPredictor().predict(folders, 1, tmp_path / "out", predictor="task_vector")
    assert snapshot(tmp_path) == before and not (tmp_path / "out").exists()


def test_a_local_path_that_does_not_exist_is_named(tmp_path, trajectory):
    with pytest.raises(ValueError, match=r"Hyper-model './no/such/hypermodel' does not exist as a local folder"):
        KnowPredictor.from_pretrained("./no/such/hypermodel")
    missing = str(tmp_path / "no" / "such" / "ckpt")
    with pytest.raises(ValueError, match=rf"Checkpoint '{missing}' does not exist as a local folder"):
        KnowPredictor().predict([missing, *trajectory[1:]], 1, tmp_path / "out", predictor="naive")


def test_a_broken_session_record_is_named(tmp_path, trajectory):
    folders = corrupted(tmp_path, trajectory, lambda data: data)
    (folders[2] / "know_session.json").write_text('{"subset_size": ')
    refused(tmp_path, folders, r"ckpt-2/know_session.json: not a valid session record")
