"""Offline image-classification data as `datasets` datasets: scikit-learn's bundled handwritten digits (1,797 8x8
images) and Fashion-MNIST (70,000 28x28 images, from the Debian package `dataset-fashion-mnist`).

Both give single-channel `pixel_values` scaled to [-1, 1] (EfficientNet-Lite's input range) and `labels`.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image

DIGIT_CLASSES = tuple(range(10))
# The image datasets hf-know's scripts take (`dataset: ...`): display name and Hub dataset tag of each.
IMAGE_DATASETS = {"digits": ("sklearn digits", "sklearn-digits"), "fashion_mnist": ("Fashion-MNIST", "fashion_mnist")}
# Where `apt-get install dataset-fashion-mnist` puts the four gzipped IDX files (`dpkg -L dataset-fashion-mnist`).
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


def load_digits_dataset(
    classes: Sequence[int] = DIGIT_CLASSES,
    image_size: int = 32,
    train_per_class: int | None = None,
    test_fraction: float = 0.3,
    seed: int = 0,
    validation_per_class: int | None = None,
) -> DatasetDict:
    """sklearn's 8x8 digits (1,797 images), upscaled to `image_size`, as `train` / `test` (/ `validation`) splits.

    Args:
        classes: which digits to keep; labels are renumbered 0..len(classes)-1 in this order, so two disjoint
            class sets make a source and a target task for transfer.
        image_size: side of the bilinearly upscaled single-channel image, values scaled to [-1, 1].
        train_per_class: keep only this many training images per class (few-shot targets); all by default.
        test_fraction: share of each class held out for `test`, drawn before `train_per_class` is applied.
        seed: the stratified split's seed.
        validation_per_class: also make a `validation` split of this many images per class, drawn from the
            training pool after the `train_per_class` training images (so the three splits are disjoint).

    Columns: `pixel_values` (float32 [1, image_size, image_size]) and `labels` (int).
    """
    from sklearn.datasets import load_digits

    classes = list(classes)
    if not classes or len(set(classes)) != len(classes) or not set(classes) <= set(DIGIT_CLASSES):
        raise ValueError(f"classes must be distinct digits from 0 to 9, got {classes}.")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}.")
    for name, value in (("train_per_class", train_per_class), ("validation_per_class", validation_per_class)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be a positive int or None, got {value}.")
    if validation_per_class is not None and train_per_class is None:
        raise ValueError("validation_per_class needs train_per_class: the validation images come after them.")
    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)
    images = torch.nn.functional.interpolate(images, size=(image_size, image_size), mode="bilinear")
    images = (images * 2.0 - 1.0).numpy()
    rng = np.random.default_rng(seed)
    split = {"train": [], "test": []} if validation_per_class is None else {"train": [], "validation": [], "test": []}
    for label, digit in enumerate(classes):
        index = rng.permutation(np.flatnonzero(digits.target == digit))
        n_test = round(len(index) * test_fraction)
        train = index[n_test:] if train_per_class is None else index[n_test : n_test + train_per_class]
        split["test"] += [(i, label) for i in index[:n_test]]
        split["train"] += [(i, label) for i in train]
        if validation_per_class is not None:
            start = n_test + train_per_class
            validation = index[start : start + validation_per_class]
            if len(validation) < validation_per_class:
                raise ValueError(
                    f"Digit {digit} has only {len(validation)} images left for validation_per_class="
                    f"{validation_per_class} after {n_test} test and {train_per_class} training images."
                )
            split["validation"] += [(i, label) for i in validation]
    return DatasetDict(
        {
            name: Dataset.from_dict(
                {"pixel_values": images[[i for i, _ in rows]], "labels": [label for _, label in rows]}
            ).with_format("torch")
            for name, rows in split.items()
        }
    )


def load_image_dataset(
    dataset: str,
    classes: Sequence[int],
    image_size: int,
    train_per_class: int | None = None,
    test_per_class: int | None = None,
    seed: int = 0,
    data_dir: str | os.PathLike = FASHION_MNIST_DIR,
) -> DatasetDict:
    """One of `IMAGE_DATASETS` restricted to `classes` (labels renumbered in that order), as `train` / `test`:
    `load_fashion_mnist` or `load_digits_dataset` (whose test split is its 30% share, `test_per_class` unused)."""
    if dataset == "fashion_mnist":
        return load_fashion_mnist(classes, image_size, train_per_class, test_per_class, seed=seed, data_dir=data_dir)
    if dataset == "digits":
        return load_digits_dataset(classes, image_size, train_per_class, seed=seed)
    raise ValueError(f"dataset={dataset!r}; expected one of {list(IMAGE_DATASETS)}.")


def digits_task_stream(
    tasks: Sequence[Sequence[int]],
    image_size: int = 8,
    train_per_class: int | None = None,
    seed: int = 0,
) -> list[DatasetDict]:
    """sklearn digits as a continual-learning stream: one `train` / `test` DatasetDict per group of digits.

    Labels index the concatenation of all groups (class-incremental: one label space for the whole stream), so
    `tasks=[[0, 1], [2, 3]]` gives labels 0, 1 to the first task and 2, 3 to the second.
    """
    from .cluster_retrieval.stream import split_into_tasks

    groups = [list(group) for group in tasks]
    data = load_digits_dataset([c for group in groups for c in group], image_size, train_per_class, seed=seed)
    return split_into_tasks(data, [len(group) for group in groups])


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """An IDX file (the MNIST format, gzipped or not) as a uint8 array; refuses a file whose header does not match
    its size."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as file:
        data = file.read()
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file (header {data[:4].hex()!r}).")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    if len(data) - offset != int(np.prod(shape)):
        raise ValueError(f"{path}: header says shape {shape}, but the file holds {len(data) - offset} values.")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape)


def pixel_values_transform(image_size: int):
    """A batched `Dataset.with_transform` turning grey `image`s into [N, 1, image_size, image_size] float32
    `pixel_values` in [-1, 1] (bilinear resize), keeping `labels`."""

    def transform(batch: dict) -> dict:
        images = torch.from_numpy(np.stack([np.asarray(image.convert("L")) for image in batch["image"]]))
        images = images.unsqueeze(1).float() / 255.0
        if images.shape[-1] != image_size or images.shape[-2] != image_size:
            images = torch.nn.functional.interpolate(images, size=(image_size, image_size), mode="bilinear")
        return {"pixel_values": images * 2.0 - 1.0, "labels": torch.as_tensor(batch["labels"])}

    return transform


def _per_class(labels: np.ndarray, classes: list[int], counts: Sequence[int | None], rng) -> list[np.ndarray]:
    """Disjoint index sets, one per entry of `counts` (None: all that remain), with that many images of each class
    (relabelled 0..len(classes)-1 by position in `classes`)."""
    picked = [[] for _ in counts]
    for digit in classes:
        pool = rng.permutation(np.flatnonzero(labels == digit))
        start = 0
        for k, count in enumerate(counts):
            stop = len(pool) if count is None else start + count
            if stop > len(pool):
                raise ValueError(f"Class {digit} has {len(pool)} images; {start + count} were asked for.")
            picked[k].append(pool[start:stop])
            start = stop
    return [np.concatenate(chosen) for chosen in picked]


def load_fashion_mnist(
    classes: Sequence[int] | None = None,
    image_size: int = 64,
    train_per_class: int | None = None,
    test_per_class: int | None = None,
    validation_per_class: int | None = None,
    seed: int = 0,
    data_dir: str | os.PathLike = FASHION_MNIST_DIR,
) -> DatasetDict:
    """Fashion-MNIST as `train` / `test` (/ `validation`) splits with an `image` column (`datasets.Image`) and
    `labels` (`ClassLabel` with the article names), transformed on access into `pixel_values` (see
    `pixel_values_transform`).

    As in the transformers image-classification examples, train with `remove_unused_columns=False` (the default of
    hf-know's scripts): the transform needs the `image` column the Trainer would otherwise drop.

    Args:
        classes: which of the ten classes to keep (all by default); labels are renumbered 0..len(classes)-1 in
            this order.
        image_size: side of the resized images (28 is the original).
        train_per_class: training images per class, drawn with `seed` from the official 60,000 (all by default).
        test_per_class: test images per class from the official 10,000 (all by default).
        validation_per_class: also a `validation` split of this many images per class, drawn from the official
            training images disjoint from `train`.
        seed: the draw's seed.
        data_dir: the folder holding `train-images-idx3-ubyte.gz` and the three other files.
    """
    data_dir = Path(data_dir)
    names = {
        "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
        "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
    }
    missing = [name for pair in names.values() for name in pair if not (data_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST files {missing} are not in {str(data_dir)!r}. Install them with `apt-get install "
            "dataset-fashion-mnist` (Debian/Ubuntu; `dpkg -L dataset-fashion-mnist` lists where they went) or "
            "pass data_dir= a folder with the four IDX files from github.com/zalandoresearch/fashion-mnist."
        )
    classes = list(range(10)) if classes is None else list(classes)
    if not classes or len(set(classes)) != len(classes) or not set(classes) <= set(range(10)):
        raise ValueError(f"classes must be distinct class ids from 0 to 9, got {classes}.")
    if image_size < 1:
        raise ValueError(f"image_size must be a positive int, got {image_size}.")
    rng = np.random.default_rng(seed)
    features = Features({"image": Image(), "labels": ClassLabel(names=[FASHION_MNIST_CLASSES[c] for c in classes])})
    relabel = np.full(10, -1)
    relabel[classes] = np.arange(len(classes))
    splits = {}
    for official, (image_file, label_file) in names.items():
        images, labels = read_idx(data_dir / image_file), read_idx(data_dir / label_file)
        if images.ndim != 3 or labels.shape != images.shape[:1]:
            raise ValueError(f"{data_dir}: images of shape {images.shape} do not match labels of {labels.shape}.")
        if official == "test":
            chosen = {"test": _per_class(labels, classes, [test_per_class], rng)[0]}
        elif validation_per_class is None:
            chosen = {"train": _per_class(labels, classes, [train_per_class], rng)[0]}
        else:
            if train_per_class is None:
                raise ValueError("validation_per_class needs train_per_class: validation comes from the same pool.")
            train, validation = _per_class(labels, classes, [train_per_class, validation_per_class], rng)
            chosen = {"train": train, "validation": validation}
        for split, index in chosen.items():
            index = rng.permutation(index)
            rows = {"image": list(images[index]), "labels": relabel[labels[index]].tolist()}
            splits[split] = Dataset.from_dict(rows, features=features)
    transform = pixel_values_transform(image_size)
    return DatasetDict(
        {name: splits[name].with_transform(transform) for name in ("train", "validation", "test") if name in splits}
    )
