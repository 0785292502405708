"""Small offline image-classification data: scikit-learn's bundled handwritten digits as a `datasets` dataset."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from datasets import Dataset, DatasetDict

DIGIT_CLASSES = tuple(range(10))


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
    groups = [list(group) for group in tasks]
    data = load_digits_dataset([c for group in groups for c in group], image_size, train_per_class, seed=seed)
    stream, start = [], 0
    for group in groups:
        labels = list(range(start, start + len(group)))
        stream.append(
            DatasetDict(
                {
                    name: split.select(np.flatnonzero(np.isin(np.asarray(split[:]["labels"]), labels)))
                    for name, split in data.items()
                }
            )
        )
        start += len(group)
    return stream
