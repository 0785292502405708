"""Per-row, per-teacher scores: the labels routers learn from and the correctness flag of the RL selector's state.

A score is positive when the teacher is right on that row, so `scores > 0` is the correctness flag either way:

- **unforced answers** (`teacher_answers`, all known on the row): +1 if the teacher's own answer is the gold one,
  -1 otherwise;
- otherwise the **rationale-support score**: under a sentence encoder E, how much closer the rationale r sits to
  the gold option than to the closest other option, cos(E(r), E(gold)) - max_{o != gold} cos(E(r), E(o)). A rationale
  that argues for the gold answer scores above 0; one that argues for a distractor, or for nothing, scores lower.
  The TinyLLM release has no unforced answers, so this score labels it.

A teacher without a rationale on a row scores NaN there (it cannot be chosen).
"""

from __future__ import annotations

import math

import torch
from datasets import Dataset

from .encoder import SentenceEncoder


def rationale_support(dataset: Dataset, encoder: SentenceEncoder, progress: bool = False) -> torch.Tensor:
    """[rows, teachers] rationale-support margins (see the module docstring); NaN where a rationale is missing."""
    rationales, choices, answers = dataset["rationales"], dataset["choices"], dataset["answer"]
    texts = sorted({r for row in rationales for r in row if r.strip()} | {c for row in choices for c in row})
    index = {text: i for i, text in enumerate(texts)}
    embeddings = encoder.embed(texts, progress=progress)
    scores = torch.full((len(rationales), len(rationales[0])), math.nan)
    for i, (row, options, gold) in enumerate(zip(rationales, choices, answers, strict=True)):
        option_embeddings = embeddings[[index[o] for o in options]]
        gold_mask = torch.tensor([o == gold for o in options])
        for j, rationale in enumerate(row):
            if rationale.strip():
                similarity = option_embeddings @ embeddings[index[rationale]]
                scores[i, j] = similarity[gold_mask].max() - similarity[~gold_mask].max()
    return scores


def teacher_scores(dataset: Dataset, encoder: SentenceEncoder | None = None, progress: bool = False) -> torch.Tensor:
    """[rows, teachers] scores: ±1 from unforced answers where every teacher's is known, else rationale support.

    Raises `ValueError` when some row needs the support score and no `encoder` is given.
    """
    width = len(dataset[0]["rationales"])
    answers = dataset["teacher_answers"] if "teacher_answers" in dataset.column_names else [[""] * width] * len(dataset)
    known = torch.tensor([all(row) for row in answers])
    scores = torch.full((len(dataset), width), math.nan)
    if not known.all():
        if encoder is None:
            row = int((~known).nonzero()[0])
            raise ValueError(
                f"Row {row} (and {int((~known).sum()) - 1} more) has no unforced teacher_answers; pass a sentence "
                "encoder so the rationale-support score can label those rows."
            )
        unknown = (~known).nonzero().flatten()
        scores[unknown] = rationale_support(dataset.select(unknown.tolist()), encoder, progress)
    gold = dataset["answer"]
    for i in known.nonzero().flatten().tolist():
        scores[i] = torch.tensor([1.0 if a == gold[i] else -1.0 for a in answers[i]])
    missing = torch.tensor([[not r.strip() for r in row] for row in dataset["rationales"]])
    return scores.masked_fill(missing, math.nan)
