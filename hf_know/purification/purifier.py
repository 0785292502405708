"""The purifier interface and what every routing purifier shares: turning per-teacher scores into one rationale."""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import torch
from datasets import Dataset
from transformers.utils import logging

logger = logging.get_logger(__name__)

PURIFIED_COLUMNS = ("rationale", "purified_teacher", "purified_score", "purified_reason")


@runtime_checkable
class Purifier(Protocol):
    """Rows with several teachers' rationales in, one rationale per row out.

    `purify(dataset)` returns the rows with four columns added: `rationale` (the purified rationale, `""` when no
    teacher has one), `purified_teacher` (the chosen teacher, or `"aggregate"`), `purified_score` (the choice's
    probability or score; NaN for an aggregate) and `purified_reason` (a sentence saying why).
    """

    method: str

    def purify(self, dataset: Dataset) -> Dataset: ...


def with_purified_columns(dataset: Dataset, columns: dict[str, list]) -> Dataset:
    """`dataset` with the `PURIFIED_COLUMNS` set to `columns` (replacing any from an earlier purification)."""
    dataset = dataset.remove_columns([c for c in PURIFIED_COLUMNS if c in dataset.column_names])
    for name in PURIFIED_COLUMNS:
        dataset = dataset.add_column(name, columns[name])
    return dataset


def select_rationales(
    dataset: Dataset,
    logits: torch.Tensor,
    teachers: list[str],
    method: str,
    scores: torch.Tensor | None = None,
) -> Dataset:
    """Each row's rationale from its highest-`logits` teacher among those with a rationale on that row.

    `scores` (default `logits`) is what the reason reports for the choice. Teachers without a rationale are
    skipped on that row; rows where no teacher has one get `""`. Both are counted in the log.
    """
    rationales = dataset["rationales"]
    missing = torch.tensor([[not r.strip() for r in row] for row in rationales])
    masked = logits.float().masked_fill(missing, -math.inf)
    choice = masked.argmax(1)
    scores = logits if scores is None else scores
    columns = {name: [] for name in PURIFIED_COLUMNS}
    for i, j in enumerate(choice.tolist()):
        if math.isinf(masked[i, j]):
            columns["rationale"].append("")
            columns["purified_teacher"].append("")
            columns["purified_score"].append(math.nan)
            columns["purified_reason"].append(f"{method}: no teacher can be chosen on this row")
            continue
        score = float(scores[i, j])
        columns["rationale"].append(rationales[i][j])
        columns["purified_teacher"].append(teachers[j])
        columns["purified_score"].append(score)
        columns["purified_reason"].append(f"{method}: {teachers[j]} (score {score:.3f})")
    skipped = {t: int(n) for t, n in zip(teachers, (missing & ~missing.all(1, keepdim=True)).sum(0), strict=True) if n}
    empty = int(missing.all(1).sum())
    if skipped or empty:
        logger.info(
            "%s: teachers skipped for lack of a rationale: %s; rows with no rationale at all: %d",
            method,
            skipped,
            empty,
        )
    return with_purified_columns(dataset, columns)


class SingleTeacher:
    """Always the rationale of one teacher: the step-by-step single-teacher baseline, and the "single best
    teacher" against which purifiers are compared. Rows where that teacher has no rationale get `""`."""

    method = "single_teacher"

    def __init__(self, teachers: list[str], teacher: str):
        if teacher not in teachers:
            raise ValueError(f"teacher={teacher!r} is not one of the data's teachers {teachers}.")
        self.teachers, self.teacher = list(teachers), teacher

    def purify(self, dataset: Dataset) -> Dataset:
        logits = torch.full((len(dataset), len(self.teachers)), -math.inf)
        logits[:, self.teachers.index(self.teacher)] = 0.0
        return select_rationales(dataset, logits, self.teachers, f"single_teacher[{self.teacher}]", logits.exp())
