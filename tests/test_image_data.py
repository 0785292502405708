"""The offline digits data: renumbered classes, disjoint train / validation / test splits, named errors."""

import pytest
import torch

from hf_know.image_data import digits_task_stream, load_digits_dataset


def test_splits_are_disjoint_and_sized():
    data = load_digits_dataset([7, 3], image_size=16, train_per_class=5, validation_per_class=20)
    assert {name: len(split) for name, split in data.items()} == {"train": 10, "validation": 40, "test": 109}
    rows = {name: split[:]["pixel_values"].flatten(1) for name, split in data.items()}
    for a, b in [("train", "validation"), ("train", "test"), ("validation", "test")]:
        assert not (torch.cdist(rows[a], rows[b]) == 0).any(), f"{a} and {b} share an image"
    assert sorted(set(data["train"][:]["labels"].tolist())) == [0, 1]  # 7 -> 0, 3 -> 1
    assert rows["train"].shape[1] == 16 * 16 and float(rows["train"].min()) >= -1 and float(rows["train"].max()) <= 1
    # adding a validation split leaves train and test as they were
    plain = load_digits_dataset([7, 3], image_size=16, train_per_class=5)
    assert torch.equal(plain["train"][:]["pixel_values"], data["train"][:]["pixel_values"])
    assert torch.equal(plain["test"][:]["pixel_values"], data["test"][:]["pixel_values"])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"classes": [1, 1]}, "distinct digits"),
        ({"classes": [10]}, "distinct digits from 0 to 9"),
        ({"test_fraction": 1.0}, r"test_fraction must lie in \(0, 1\)"),
        ({"train_per_class": 0}, "train_per_class must be a positive int"),
        ({"validation_per_class": 5}, "validation_per_class needs train_per_class"),
        ({"train_per_class": 5, "validation_per_class": 500}, r"Digit 0 has only \d+ images left"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_digits_dataset(**{"classes": [0, 1], **kwargs})


def test_digits_task_stream_shares_one_label_space_across_tasks():
    stream = digits_task_stream([[7, 3], [5]], image_size=8, train_per_class=4)
    assert [sorted(set(task["train"][:]["labels"].tolist())) for task in stream] == [[0, 1], [2]]
    assert [len(task["train"]) for task in stream] == [8, 4]
    assert all(len(task["test"]) > 0 for task in stream)
