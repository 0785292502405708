"""Run a continual-learning task stream with a [`ClusterRetrievalModel`] and record its accuracy matrices."""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from datasets import Dataset
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
        square = [row + [float("nan")] * (len(self.task_names) - len(row)) for row in self.accuracy]
        retrieval = [row + [float("nan")] * (len(self.task_names) - len(row)) for row in self.retrieval_accuracy]
        scores = load_metric("continual_learning").compute(accuracy=square, retrieval_accuracy=retrieval)
        return {**scores, "oracle_acc": sum(self.oracle_accuracy[-1]) / len(self.oracle_accuracy[-1])}


@torch.no_grad()
def evaluate_task(model, dataset: Dataset, task_index: int, batch_size: int = 64, collate_fn=None) -> dict:
    """Task-free accuracy, oracle-routed accuracy and retrieval accuracy of `model` on one task's `dataset`.

    Predictions are the argmax over all logits (the stream's shared label space), so a sample routed to the
    wrong task is usually wrong.
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
        hits["accuracy"] += int((routed.argmax(-1) == labels).sum())
        hits["oracle_accuracy"] += int((oracle.argmax(-1) == labels).sum())
        hits["retrieval_accuracy"] += int((retrieved == task_index).sum())
    return {name: count / len(dataset) for name, count in hits.items()}


def run_task_stream(
    model,
    tasks: Sequence[tuple[str, Dataset, Dataset]],
    training_args: TrainingArguments,
    collate_fn: Callable | None = None,
    signature_batch_size: int = 64,
) -> StreamResult:
    """Learn `tasks` = [(name, train, test), ...] one after another with `transformers.Trainer`, keeping no data
    of finished tasks: per task `add_task`, train, `fit_signature` on its training inputs, then evaluate on the
    test sets of every task seen so far. Works under `accelerate launch` (each process evaluates everything)."""
    result = StreamResult(task_names=[name for name, _, _ in tasks])
    for t, (name, train, _) in enumerate(tasks):
        model.add_task(name)
        with tempfile.TemporaryDirectory() as scratch:  # checkpoints are not kept between tasks
            args = dataclasses.replace(training_args, output_dir=scratch, save_strategy="no", push_to_hub=False)
            Trainer(model=model, args=args, train_dataset=train, data_collator=collate_fn).train()
        # labels ride along: signatures ignore them, and the LDA head (head="lda") needs them
        loader = DataLoader(train, batch_size=signature_batch_size, collate_fn=collate_fn or default_data_collator)
        model.fit_signature(name, loader)
        rows = [evaluate_task(model, test, j, collate_fn=collate_fn) for j, (_, _, test) in enumerate(tasks[: t + 1])]
        for metric in ("accuracy", "oracle_accuracy", "retrieval_accuracy"):
            getattr(result, metric).append([row[metric] for row in rows])
    return result
