"""Run a continual-learning task stream with a [`ClusterRetrievalModel`] and record its accuracy matrices.

Two protocols: domain-incremental (the default: every prediction is the argmax over all logits) and
class-incremental (`class_incremental=True`, as in L2P, DualPrompt and PROTEUS, arXiv 2603.13235): each task trains
with cross-entropy over its own classes only, and an input routed to a task is predicted among that task's classes.
"""

from __future__ import annotations

import dataclasses
import itertools
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from datasets import Dataset, DatasetDict
from torch import nn
from torch.utils.data import DataLoader
from transformers import Trainer, TrainingArguments, default_data_collator

from ..metrics import load as load_metric


@dataclass
class StreamResult:
    """Row t of each matrix holds the results on tasks 0..t after training task t (T x T, lower triangle).

    `accuracy` is task-free (each input routed by retrieval), `oracle_accuracy` routes by the true task id, and
    `retrieval_accuracy` is the share of inputs retrieved to their own task.
    """

    task_names: list[str]
    accuracy: list[list[float]] = field(default_factory=list)
    oracle_accuracy: list[list[float]] = field(default_factory=list)
    retrieval_accuracy: list[list[float]] = field(default_factory=list)

    def metrics(self) -> dict[str, float]:
        """ACC, ACC-, forgetting, BWT and retrieval accuracy (the `continual_learning` metric), and the final
        average accuracy with oracle task ids."""
        scores = continual_metrics(self.accuracy, self.retrieval_accuracy)
        return {**scores, "oracle_acc": sum(self.oracle_accuracy[-1]) / len(self.oracle_accuracy[-1])}


def continual_metrics(accuracy: list[list[float]], retrieval_accuracy: list[list[float]] | None = None) -> dict:
    """The `continual_learning` metric of lower-triangular matrices (row t: tasks 0..t after training task t)."""

    def square(rows):
        return [row + [float("nan")] * (len(rows) - len(row)) for row in rows]

    retrieval = square(retrieval_accuracy) if retrieval_accuracy else None
    return load_metric("continual_learning").compute(accuracy=square(accuracy), retrieval_accuracy=retrieval)


def task_classes(dataset: Dataset) -> list[int]:
    """The sorted label values of one task's `dataset` (its `labels` column)."""
    return sorted({int(label) for label in dataset.with_format(None)["labels"]})  # no transform (images) runs


def split_into_tasks(data: DatasetDict, task_sizes: Sequence[int]) -> list[DatasetDict]:
    """A class-incremental stream from one dataset whose `labels` run 0..n-1 in task order: task t gets the next
    `task_sizes[t]` labels, in every split, keeping the labels (one label space for the whole stream)."""
    labels = {name: np.asarray(split.with_format(None)["labels"]) for name, split in data.items()}
    n = 1 + max(int(values.max()) for values in labels.values())
    if sum(task_sizes) != n or min(task_sizes) < 1:
        raise ValueError(f"task_sizes {list(task_sizes)} must be positive and add up to the dataset's {n} labels.")
    bounds = np.cumsum([0, *task_sizes])
    return [
        DatasetDict(
            {
                name: split.select(np.flatnonzero((labels[name] >= start) & (labels[name] < end)))
                for name, split in data.items()
            }
        )
        for start, end in itertools.pairwise(bounds)
    ]


def predict_among(logits: torch.Tensor, classes: Sequence[int] | None) -> torch.Tensor:
    """Argmax of `logits` restricted to `classes` (all logits if None), as class ids."""
    if classes is None:
        return logits.argmax(-1)
    classes = torch.as_tensor(classes, device=logits.device)
    return classes[logits[:, classes].argmax(-1)]


def class_masked_loss(model, classes: Sequence[int]) -> Callable:
    """A `Trainer(compute_loss_func=...)` loss: cross-entropy over the logits of `classes` only (the class-
    incremental protocol's train-time mask), plus `model.regularization_loss()` when the model has one (the
    penalties a model adds to its own loss, which a loss computed outside it must add itself)."""
    classes = list(classes)

    def loss(outputs, labels, num_items_in_batch=None):
        mask = torch.full_like(outputs.logits, float("-inf"))
        mask[:, classes] = 0.0
        ce = nn.functional.cross_entropy(outputs.logits + mask, labels)
        return ce + model.regularization_loss() if hasattr(model, "regularization_loss") else ce

    return loss


def train_task(
    model,
    dataset: Dataset,
    training_args: TrainingArguments,
    collate_fn: Callable | None = None,
    classes: Sequence[int] | None = None,
) -> None:
    """Train `model` on one task with `transformers.Trainer` in a scratch folder (no checkpoints are kept); with
    `classes`, on the class-incremental loss `class_masked_loss`, else on the model's own loss."""
    loss = class_masked_loss(model, classes) if classes is not None else None
    with tempfile.TemporaryDirectory() as scratch:
        args = dataclasses.replace(training_args, output_dir=scratch, save_strategy="no", push_to_hub=False)
        Trainer(model=model, args=args, train_dataset=dataset, data_collator=collate_fn, compute_loss_func=loss).train()


@torch.no_grad()
def evaluate_task(
    model,
    dataset: Dataset,
    task_index: int,
    batch_size: int = 64,
    collate_fn=None,
    classes: Sequence[Sequence[int]] | None = None,
) -> dict:
    """Task-free accuracy, oracle-routed accuracy and retrieval accuracy of `model` on one task's `dataset`.

    Without `classes` predictions are the argmax over all logits (the stream's shared label space), so a sample
    routed to the wrong task is usually wrong; with `classes` (per task, class-incremental) an input is predicted
    among the classes of the task it was routed to.
    """
    model.eval()
    device = next(model.parameters()).device
    hits = {"accuracy": 0, "oracle_accuracy": 0, "retrieval_accuracy": 0}
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate_fn or default_data_collator)
    for batch in loader:
        labels = batch.pop("labels").to(device)
        inputs = {k: v.to(device) for k, v in batch.items()}
        retrieved, _ = model.retrieve(**inputs)
        routed = model(**inputs, adapter_names=retrieved.tolist()).logits
        oracle = model(**inputs, adapter_names=[task_index] * len(labels)).logits
        if classes is None:
            routed_predictions = routed.argmax(-1)
        else:
            routed_predictions = torch.stack([predict_among(routed, group) for group in classes])
            routed_predictions = routed_predictions[retrieved.to(device), torch.arange(len(labels), device=device)]
        oracle_predictions = predict_among(oracle, classes[task_index] if classes is not None else None)
        hits["accuracy"] += int((routed_predictions == labels).sum())
        hits["oracle_accuracy"] += int((oracle_predictions == labels).sum())
        hits["retrieval_accuracy"] += int((retrieved.to(device) == task_index).sum())
    return {name: count / len(dataset) for name, count in hits.items()}


def run_task_stream(
    model,
    tasks: Sequence[tuple[str, Dataset, Dataset]],
    training_args: TrainingArguments,
    collate_fn: Callable | None = None,
    signature_batch_size: int = 64,
    class_incremental: bool = False,
) -> StreamResult:
    """Learn `tasks` = [(name, train, test), ...] one after another with `transformers.Trainer`, keeping no data
    of finished tasks: per task `add_task`, train, `fit_signature` on its training inputs, then evaluate on the
    test sets of every task seen so far. `class_incremental` trains and predicts each task over its own classes
    (see the module docstring). Works under `accelerate launch` (each process evaluates everything)."""
    result = StreamResult(task_names=[name for name, _, _ in tasks])
    classes = [task_classes(train) for _, train, _ in tasks] if class_incremental else None
    for t, (name, train, _) in enumerate(tasks):
        model.add_task(name)
        train_task(model, train, training_args, collate_fn, classes[t] if classes else None)
        # labels ride along: signatures ignore them, and the LDA head (head="lda") needs them
        loader = DataLoader(train, batch_size=signature_batch_size, collate_fn=collate_fn or default_data_collator)
        model.fit_signature(name, loader)
        seen = classes[: t + 1] if classes else None
        rows = [
            evaluate_task(model, test, j, collate_fn=collate_fn, classes=seen)
            for j, (_, _, test) in enumerate(tasks[: t + 1])
        ]
        for metric in ("accuracy", "oracle_accuracy", "retrieval_accuracy"):
            getattr(result, metric).append([row[metric] for row in rows])
    return result
