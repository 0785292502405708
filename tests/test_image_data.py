"""The offline digits and Fashion-MNIST data: renumbered classes, disjoint splits, named errors."""

import gzip

import pytest
import torch

from hf_know.image_data import FASHION_MNIST_DIR, digits_task_stream, load_digits_dataset, load_fashion_mnist


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


def test_fashion_mnist_is_drawn_per_class_relabelled_and_scaled(fashion_dir):
    data = load_fashion_mnist([9, 2], image_size=16, train_per_class=5, validation_per_class=20, data_dir=fashion_dir)
    assert {name: len(split) for name, split in data.items()} == {"train": 10, "validation": 40, "test": 20}
    assert data["train"].features["labels"].names == ["Ankle boot", "Pullover"]
    batch = data["train"][:]
    assert batch["pixel_values"].shape == (10, 1, 16, 16) and batch["pixel_values"].dtype == torch.float32
    value = (batch["pixel_values"][:, 0, 0, 0] + 1) / 2 * 255  # back to the stored byte
    original = torch.tensor([9, 2])[batch["labels"]]
    assert torch.equal(torch.div(value.round(), 8, rounding_mode="floor").long(), original)  # 9 -> 0, 2 -> 1
    assert sorted(batch["labels"].tolist()) == [0] * 5 + [1] * 5
    # the same seed draws the same images, another seed others
    again = load_fashion_mnist([9, 2], image_size=16, train_per_class=5, validation_per_class=20, data_dir=fashion_dir)
    assert torch.equal(again["train"][:]["pixel_values"], batch["pixel_values"])


def test_fashion_mnist_trains_with_the_trainer_that_keeps_the_image_column(fashion_dir, tmp_path):
    from transformers import Trainer

    from hf_know.cli import ScriptTrainingArguments
    from hf_know.testing import tiny_resnet

    data = load_fashion_mnist([0, 1, 2], image_size=16, train_per_class=4, test_per_class=2, data_dir=fashion_dir)
    args = ScriptTrainingArguments(tmp_path / "out", num_train_epochs=1, per_device_train_batch_size=4, report_to=[])
    trainer = Trainer(model=tiny_resnet(3), args=args, train_dataset=data["train"], eval_dataset=data["test"])
    trainer.train()
    assert "eval_loss" in trainer.evaluate()


def test_missing_or_corrupt_fashion_mnist_files_are_named(fashion_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(data_dir=tmp_path / "nowhere")
    with gzip.open(fashion_dir / "t10k-labels-idx1-ubyte.gz", "wb") as file:
        file.write(bytes([0, 0, 8, 1]) + (10_000).to_bytes(4, "big") + bytes(10))
    with pytest.raises(ValueError, match=r"header says shape \(10000,\), but the file holds 10 values"):
        load_fashion_mnist(data_dir=fashion_dir)
    with pytest.raises(ValueError, match="Class 0 has 30 images; 31 were asked for"):
        load_fashion_mnist(train_per_class=31, data_dir=fashion_dir)


@pytest.mark.skipif(not (FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz").is_file(), reason="dataset-fashion-mnist")
def test_the_installed_fashion_mnist_has_its_published_sizes():
    data = load_fashion_mnist(image_size=28, train_per_class=1, test_per_class=None)
    assert len(data["test"]) == 10_000 and len(data["train"]) == 10
