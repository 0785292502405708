"""Multi-teacher rationale data: one `datasets` schema, its validation, and a loader for the TinyLLM release.

One row per question:

- `id`, `question`, `choices` (option texts), `answer` (the gold option's text);
- `rationales`: one string per teacher, `""` where that teacher has none for this row;
- `teacher_answers`: per teacher, the option text the teacher chose **without** seeing the gold answer (its
  unforced answer, the label routers learn from), `""` where unknown;
- `stated_answers`: per teacher, the option its rationale states as the answer when that can be parsed, `""`
  otherwise. Rationales generated with the gold answer in the prompt state the gold answer, so a stated answer is
  not a correctness label.

A missing or empty rationale is not an error: purifiers skip that teacher on that row, and the rows are counted.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Dataset, Features, Sequence, Value
from transformers.utils import logging

logger = logging.get_logger(__name__)

RATIONALE_FEATURES = Features(
    {
        "id": Value("string"),
        "question": Value("string"),
        "choices": Sequence(Value("string")),
        "answer": Value("string"),
        "rationales": Sequence(Value("string")),
        "teacher_answers": Sequence(Value("string")),
        "stated_answers": Sequence(Value("string")),
    }
)
REQUIRED_COLUMNS = ("question", "choices", "answer", "rationales")
TINYLLM_DOMAINS = ("obqa", "arc", "riddle", "pubmedqa")
TINYLLM_TEACHERS = ("flan-t5-xl", "llama-2-chat")
OPTION_LETTERS = "abcdefghijklmnopqrstuvwxyz"


@dataclass
class RationaleDataReport:
    """What a loader or `validate_rationale_data` found: rows, and per teacher the rows without a rationale and the
    rows whose stated answer could not be parsed."""

    teachers: list[str]
    rows: int = 0
    missing_rationales: dict[str, int] = field(default_factory=dict)
    unparsed_answers: dict[str, int] = field(default_factory=dict)


def validate_rationale_data(dataset: Dataset, teachers: list[str] | None = None) -> RationaleDataReport:
    """Check the schema and every row; return counts. Raises `ValueError` naming the column or row at fault.

    Args:
        dataset: rows in the schema above (`teacher_answers` and `stated_answers` are optional columns).
        teachers: teacher names; their number must equal the length of every row's `rationales`.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in dataset.column_names]
    if missing:
        raise ValueError(
            f"Rationale data lacks the column(s) {missing}; expected at least {list(REQUIRED_COLUMNS)} "
            f"(got {dataset.column_names})."
        )
    if len(dataset) == 0:
        raise ValueError("Rationale data has no rows.")
    width = len(teachers) if teachers is not None else len(dataset[0]["rationales"])
    teachers = list(teachers) if teachers is not None else [f"teacher_{i}" for i in range(width)]
    report = RationaleDataReport(teachers, rows=len(dataset))
    report.missing_rationales = dict.fromkeys(teachers, 0)
    for index, row in enumerate(dataset):
        where = f"row {index} (id {row.get('id')!r})"
        if row["answer"] not in row["choices"]:
            raise ValueError(f"{where}: the gold answer {row['answer']!r} is not among its choices {row['choices']}.")
        for column in ("rationales", "teacher_answers", "stated_answers"):
            if column in row and len(row[column]) != width:
                raise ValueError(
                    f"{where}: column {column!r} has {len(row[column])} entries; expected one per teacher ({width})."
                )
        for column in ("teacher_answers", "stated_answers"):
            for teacher, value in zip(teachers, row.get(column) or [], strict=False):
                if value and value not in row["choices"]:
                    raise ValueError(f"{where}: {column} of {teacher!r} is {value!r}, not one of {row['choices']}.")
        for teacher, rationale in zip(teachers, row["rationales"], strict=True):
            report.missing_rationales[teacher] += not (rationale or "").strip()
    skipped = {t: n for t, n in report.missing_rationales.items() if n}
    if skipped:
        logger.info("Rows without a rationale, per teacher (skipped for that teacher): %s", skipped)
    return report


def lettered_options(choices: list[str]) -> list[str]:
    """`["(a) first", "(b) second", ...]`."""
    return [f"({OPTION_LETTERS[i]}) {choice}" for i, choice in enumerate(choices)]


def format_question(question: str, choices: list[str]) -> str:
    """The student's input, TinyLLM's format: the question, then "Answer Choices:" and one "(a) ..." line each."""
    return "\n".join([question, "Answer Choices:", *lettered_options(choices)])


def task_prompt(prefix: str, question: str, choices: list[str]) -> str:
    """A task's prompt: its prefix, the question and choices (`format_question`), and a newline the completion
    follows."""
    return prefix + format_question(question, choices) + "\n"


def parse_stated_answer(text: str, choices: list[str]) -> str:
    """The option a rationale states as its answer ("the answer is (c) ..."), as option text; `""` if none."""
    found = re.findall(r"answer is:?\s*\(?([a-z])\)", text, flags=re.IGNORECASE)
    if not found:
        return ""
    index = OPTION_LETTERS.index(found[-1].lower())
    return choices[index] if index < len(choices) else ""


def _read_json(path: Path, what: str):
    """One JSON document, or a JSON Lines file as a list of records; errors name the file and the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start}); expected {what}.") from error
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        try:
            records.append(json.loads(line)) if line.strip() else None
        except json.JSONDecodeError as error:
            raise ValueError(
                f"{path}: invalid JSON at line {number}, column {error.colno} ({error.msg}); expected {what}."
            ) from error
    return records


def split_tinyllm_rationale(text: str) -> tuple[str, str]:
    """(teacher 1's rationale, teacher 2's rationale) of one TinyLLM string, without the student-format question
    between them and without teacher 2's "Let's think step by step." prefix; `""` where a part is absent."""
    first, _, rest = text.partition("\n\nQ:")
    second = rest.split("llama rationale:", 1)[1] if "llama rationale:" in rest else ""
    second = second.strip().removeprefix("Let's think step by step.").strip()
    return first.strip(), second


def load_tinyllm(root: str | Path, domain: str, split: str = "train") -> tuple[Dataset, RationaleDataReport]:
    """One set and split of data in the TinyLLM release's layout: `root/<domain>/<domain>_<split>.json` (questions,
    a JSON array or JSON Lines) and `root/<domain>/llm/<split>_CoT_<k>.json` (rationale strings, batches in numeric
    k order). Any set in that layout loads (the four here are `TINYLLM_DOMAINS`; upstream ships more).

    Teacher 1 (FLAN-T5-xl) ends with "Thus, the answer is (x)" and teacher 2 (Llama-2-chat), present where the
    strings carry a "llama rationale:" part, sometimes does; a set without any such part has teacher 1 alone. Stated
    answers are parsed where possible; the report counts, per teacher, the rows without a rationale and those whose
    answer did not parse. The rationales were generated with the gold answer in the prompt, so no unforced
    `teacher_answers` are known.
    """
    folder = Path(root) / domain
    questions = folder / f"{domain}_{split}.json"
    if not questions.is_file():
        sets = sorted(p.name for p in Path(root).glob("*/") if p.is_dir()) if Path(root).is_dir() else []
        raise ValueError(
            f"No TinyLLM questions at {questions}; expected {domain}/{domain}_{split}.json under {root} "
            f"(sets found there: {sets or 'none'})."
        )
    records = _read_json(questions, "TinyLLM question records")
    batches = sorted((folder / "llm").glob(f"{split}_CoT_*.json"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    texts = [text for batch in batches for text in _read_json(batch, "a JSON array of rationale strings")]
    if len(texts) != len(records):
        raise ValueError(
            f"{folder}: {len(records)} questions in {questions.name} but {len(texts)} rationale strings in "
            f"llm/{split}_CoT_*.json; expected one per question."
        )
    for index, (record, text) in enumerate(zip(records, texts, strict=True)):
        missing = [key for key in ("id", "question", "choices", "answer") if key not in record]
        if missing or not isinstance(text, str):
            problem = f"lacks the key(s) {missing}" if missing else f"has a rationale of type {type(text).__name__}"
            raise ValueError(
                f"{questions} record {index} {problem}; expected id, question, choices, answer and a rationale string."
            )
    teachers = list(TINYLLM_TEACHERS if any("llama rationale:" in text for text in texts) else TINYLLM_TEACHERS[:1])
    report = RationaleDataReport(teachers, rows=len(records))
    report.missing_rationales = dict.fromkeys(teachers, 0)
    report.unparsed_answers = dict.fromkeys(teachers, 0)
    rows = {name: [] for name in RATIONALE_FEATURES}
    for record, text in zip(records, texts, strict=True):
        rationales = list(split_tinyllm_rationale(text))[: len(teachers)]
        stated = [parse_stated_answer(r, record["choices"]) for r in rationales]
        for teacher, rationale, answer in zip(teachers, rationales, stated, strict=True):
            report.missing_rationales[teacher] += not rationale
            report.unparsed_answers[teacher] += bool(rationale) and not answer
        values = {
            "id": str(record["id"]),
            "question": record["question"],
            "choices": record["choices"],
            "answer": record["answer"],
            "rationales": rationales,
            "teacher_answers": [""] * len(teachers),
            "stated_answers": stated,
        }
        for name, value in values.items():
            rows[name].append(value)
    dataset = Dataset.from_dict(rows, features=RATIONALE_FEATURES)
    logger.info(
        "TinyLLM %s/%s: %d rows; no rationale: %s; stated answer not parsed: %s",
        domain,
        split,
        report.rows,
        report.missing_rationales,
        report.unparsed_answers,
    )
    return dataset, report
