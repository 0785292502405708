"""Rationales from your own teachers: TinyLLM's teacher-forcing chain of thought (Tian et al., "Beyond Answers",
WSDM 2025), as knowledge purification (arXiv 2602.01064) uses it.

Each teacher (a local transformers model and its tokenizer) is run twice per row with `generate`:

- teacher-forced: the question, its options, the gold answer and "Rationale: Let's think step by step.", after
  two in-context examples drawn at random from `examples` -> that teacher's rationale;
- unforced: the question and its options only, "Answer:" -> that teacher's own answer -> `teacher_answers`, the
  label routers learn from. Either generated and mapped to an option by its letter "(b)" or its text (`""` when it
  names no option), or, for small teachers that seldom name an option, the option they rank highest (`ranking.py`).
"""

from __future__ import annotations

import random
import re

import torch
from datasets import Dataset
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .data import (
    OPTION_LETTERS,
    RATIONALE_FEATURES,
    lettered_options,
    parse_stated_answer,
    validate_rationale_data,
)
from .ranking import option_log_likelihoods, rank_options

ANSWER_METHODS = ("generate", "rank")

RATIONALE_CUE = "Rationale: Let's think step by step."


def format_options(choices: list[str]) -> str:
    return " ".join(lettered_options(choices))


def teacher_forced_prompt(row: dict, examples: list[dict]) -> str:
    """The teacher-forcing CoT prompt of `row` after its in-context `examples` (each with a `rationale`)."""

    def block(r: dict) -> str:
        letter = OPTION_LETTERS[r["choices"].index(r["answer"])]
        return (
            f"Question: {r['question']}\nOptions: {format_options(r['choices'])}\nAnswer: ({letter}) {r['answer']}\n"
            f"{RATIONALE_CUE}"
        )

    shots = "".join(f"{block(e)} {e['rationale']}\n\n" for e in examples)
    return f"{shots}{block(row)}"


def answer_prompt(row: dict) -> str:
    """The unforced prompt: the question and its options, no gold answer."""
    return f"Question: {row['question']}\nOptions: {format_options(row['choices'])}\nAnswer:"


def parse_answer(text: str, choices: list[str]) -> str:
    """The option a free-form answer names: by letter "(b)" first, else by option text; `""` if none."""
    letter = re.search(r"\(([a-z])\)", text, flags=re.IGNORECASE)
    if letter and OPTION_LETTERS.index(letter.group(1).lower()) < len(choices):
        return choices[OPTION_LETTERS.index(letter.group(1).lower())]
    named = [c for c in choices if c.lower() in text.lower()]
    return max(named, key=len) if named else ""


@torch.no_grad()
def generate_texts(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    max_new_tokens: int = 64,
    batch_size: int = 8,
    max_length: int | None = None,
    desc: str = "generate",
) -> list[str]:
    """Greedy continuations of `prompts` (only the new text), for encoder-decoder and decoder-only models alike."""
    causal = not model.config.is_encoder_decoder
    padding_side = tokenizer.padding_side
    tokenizer.padding_side = "left" if causal else "right"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    outputs = []
    try:
        for start in tqdm(range(0, len(prompts), batch_size), desc=desc, disable=len(prompts) <= batch_size):
            batch = tokenizer(
                prompts[start : start + batch_size],
                return_tensors="pt",
                padding=True,
                truncation=max_length is not None,
                max_length=max_length,
            ).to(model.device)
            generated = model.generate(
                **batch, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
            )
            if causal:
                generated = generated[:, batch["input_ids"].shape[1] :]
            outputs += tokenizer.batch_decode(generated, skip_special_tokens=True)
    finally:
        tokenizer.padding_side = padding_side
    return [text.strip() for text in outputs]


def generate_rationales(
    dataset: Dataset,
    teachers: dict[str, tuple[PreTrainedModel, PreTrainedTokenizerBase]],
    examples: list[dict],
    num_examples: int = 2,
    max_new_tokens: int = 128,
    batch_size: int = 8,
    seed: int = 0,
    answers: str = "generate",
) -> Dataset:
    """Rows (`question`, `choices`, `answer`) -> rationale data with every teacher's rationale and own answer.

    Args:
        teachers: name -> (model, tokenizer), in the order the `rationales` column will have.
        examples: in-context examples from the same dataset, each a row with a `rationale`; `num_examples` of
            them are drawn at random per row.
        answers: how a teacher's unforced answer is read: `"generate"` (greedy text, parsed) or `"rank"` (the
            option it ranks highest under the unforced prompt).
    """
    if answers not in ANSWER_METHODS:
        raise ValueError(f"answers={answers!r}; expected one of {ANSWER_METHODS}.")
    if len(examples) < num_examples or any(not e.get("rationale") for e in examples):
        raise ValueError(f"Need at least {num_examples} in-context examples, each with a non-empty 'rationale'.")
    rng = random.Random(seed)
    rows = list(dataset)
    shots = [rng.sample(examples, num_examples) for _ in rows]
    forced = [teacher_forced_prompt(row, s) for row, s in zip(rows, shots, strict=True)]
    unforced = [answer_prompt(row) for row in rows]
    rationales, own = [], []
    for name, (model, tokenizer) in teachers.items():
        rationales.append(generate_texts(model, tokenizer, forced, max_new_tokens, batch_size, desc=f"{name} CoT"))
        if answers == "rank":
            scores = option_log_likelihoods(model, tokenizer, rows, answer_prompt, batch_size=4 * batch_size)
            own.append(rank_options(scores, rows))
        else:
            raw = generate_texts(model, tokenizer, unforced, 16, batch_size, desc=f"{name} answers")
            own.append([parse_answer(text, row["choices"]) for text, row in zip(raw, rows, strict=True)])
    records = {
        "id": [str(row.get("id", i)) for i, row in enumerate(rows)],
        "question": [row["question"] for row in rows],
        "choices": [row["choices"] for row in rows],
        "answer": [row["answer"] for row in rows],
        "rationales": [list(r) for r in zip(*rationales, strict=True)],
        "teacher_answers": [list(a) for a in zip(*own, strict=True)],
        "stated_answers": [
            [parse_stated_answer(r, row["choices"]) for r in rs]
            for rs, row in zip(zip(*rationales, strict=True), rows, strict=True)
        ],
    }
    result = Dataset.from_dict(records, features=RATIONALE_FEATURES)
    validate_rationale_data(result, list(teachers))
    return result
