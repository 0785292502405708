"""Answer accuracy by exact match, the paper's metric: the student generates the answer text for the question and its
choices, and it counts when it equals the gold option's text (case and surrounding whitespace aside). Option
ranking (`ranking.py`) is the more sensitive measure for small students."""

from __future__ import annotations

from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .data import task_prompt
from .generation import generate_texts


def normalize_answer(text: str) -> str:
    return " ".join(text.lower().split())


def exact_match_accuracy(predictions: list[str], references: list[str]) -> float:
    if len(predictions) != len(references) or not references:
        raise ValueError(f"Need as many predictions as references (>0), got {len(predictions)} and {len(references)}.")
    hits = sum(normalize_answer(p) == normalize_answer(r) for p, r in zip(predictions, references, strict=True))
    return hits / len(references)


def predict_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    dataset: Dataset,
    prefix: str = "predict: ",
    max_new_tokens: int = 32,
    max_source_length: int = 256,
    batch_size: int = 32,
) -> list[str]:
    """The student's greedy answer for each row (`question`, `choices`), from the answer task's prompt."""
    prompts = [task_prompt(prefix, q, c) for q, c in zip(dataset["question"], dataset["choices"], strict=True)]
    return generate_texts(model.eval(), tokenizer, prompts, max_new_tokens, batch_size, max_source_length, "answers")
