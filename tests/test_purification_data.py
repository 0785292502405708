"""Multi-teacher rationale data: schema validation, answer parsing, and the TinyLLM loader."""

import json

import pytest
from datasets import Dataset

from hf_know.purification import RATIONALE_FEATURES, load_tinyllm, validate_rationale_data
from hf_know.purification.data import parse_stated_answer, split_tinyllm_rationale

from .conftest import REPO_ROOT

TINYLLM = REPO_ROOT.parent / "shared" / "data" / "tinyllm"
CHOICES = ["red", "green", "blue"]


def rows(**overrides):
    row = {
        "id": "q1",
        "question": "Which colour is grass?",
        "choices": CHOICES,
        "answer": "green",
        "rationales": ["Grass is green. Thus, the answer is (b) green", ""],
        "teacher_answers": ["green", ""],
        "stated_answers": ["green", ""],
    }
    row.update(overrides)
    second = {**row, "id": "q2", "rationales": ["", "Sky colours."]}
    return Dataset.from_dict({k: [row[k], second[k]] for k in row})


def test_validation_counts_missing_rationales_and_names_bad_rows():
    report = validate_rationale_data(rows(), teachers=["t5", "llama"])
    assert report.rows == 2 and report.missing_rationales == {"t5": 1, "llama": 1}
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['rationales'\]"):
        validate_rationale_data(rows().remove_columns("rationales"))
    with pytest.raises(ValueError, match=r"row 0 \(id 'q1'\): the gold answer 'purple' is not among its choices"):
        validate_rationale_data(rows(answer="purple"))
    with pytest.raises(ValueError, match=r"column 'rationales' has 2 entries; expected one per teacher \(3\)"):
        validate_rationale_data(rows(), teachers=["a", "b", "c"])
    with pytest.raises(ValueError, match=r"teacher_answers of 't5' is 'grey', not one of"):
        validate_rationale_data(rows(teacher_answers=["grey", ""]), teachers=["t5", "llama"])
    with pytest.raises(ValueError, match="no rows"):
        validate_rationale_data(Dataset.from_dict({k: [] for k in RATIONALE_FEATURES}))


def test_parse_stated_answer_and_split_tinyllm_strings():
    assert parse_stated_answer("... Thus, the answer is (c) blue", CHOICES) == "blue"
    assert parse_stated_answer("So the answer is: (A).", CHOICES) == "red"
    assert parse_stated_answer("The sky is blue, I think", CHOICES) == ""
    assert parse_stated_answer("the answer is (z)", CHOICES) == ""
    text = (
        "Grass is green. Thus, the answer is (b) green\n\nQ: Which colour is grass?\nAnswer Choices:\n(a) red\n"
        "(b) green\n(c) blue llama rationale: Let's think step by step.\nGrass has chlorophyll."
    )
    assert split_tinyllm_rationale(text) == ("Grass is green. Thus, the answer is (b) green", "Grass has chlorophyll.")
    assert split_tinyllm_rationale("Only one. Thus, the answer is (a) red") == (
        "Only one. Thus, the answer is (a) red",
        "",
    )


def write_tinyllm(root, n_batches=11) -> None:
    """A TinyLLM-layout folder: JSON Lines questions and CoT batches 0..10 (numeric, not lexical, order)."""
    folder = root / "obqa"
    (folder / "llm").mkdir(parents=True)
    records = [
        {"id": f"q{i}", "question": f"Q{i}?", "choices": CHOICES, "answer": CHOICES[i % 3]} for i in range(n_batches)
    ]
    (folder / "obqa_train.json").write_text("\n".join(json.dumps(r) for r in records))
    for i, record in enumerate(records):
        letter = "abc"[i % 3]
        second = f" llama rationale: Let's think step by step.\nBecause {i}. The answer is ({letter})" if i % 2 else ""
        text = f"R{i}. Thus, the answer is ({letter}) {record['answer']}\n\nQ: {record['question']}{second}"
        (folder / "llm" / f"train_CoT_{i}.json").write_text(json.dumps([text]))


def test_tinyllm_loader_aligns_batches_in_numeric_order_and_counts(tmp_path):
    write_tinyllm(tmp_path)
    dataset, report = load_tinyllm(tmp_path, "obqa", "train")
    assert dataset.features == RATIONALE_FEATURES and len(dataset) == 11
    assert [row["rationales"][0].split(".")[0] for row in dataset] == [f"R{i}" for i in range(11)]  # batch 10 last
    assert all(row["stated_answers"][0] == row["answer"] for row in dataset)
    assert dataset[1]["rationales"][1] == "Because 1. The answer is (b)" and dataset[1]["stated_answers"][1] == "green"
    assert report.missing_rationales == {"flan-t5-xl": 0, "llama-2-chat": 6}
    assert report.unparsed_answers == {"flan-t5-xl": 0, "llama-2-chat": 0}
    assert validate_rationale_data(dataset, report.teachers).missing_rationales["llama-2-chat"] == 6
    (tmp_path / "obqa" / "llm" / "train_CoT_10.json").unlink()
    with pytest.raises(ValueError, match=r"11 questions in obqa_train\.json but 10 rationale strings"):
        load_tinyllm(tmp_path, "obqa", "train")
    with pytest.raises(ValueError, match=r"No TinyLLM questions at .*piqa_train.json.*sets found there: \['obqa'\]"):
        load_tinyllm(tmp_path, "piqa")


@pytest.mark.skipif(not TINYLLM.is_dir(), reason="the real TinyLLM data lives in ../shared/data/tinyllm")
def test_real_tinyllm_data_loads_with_its_known_properties():
    dataset, report = load_tinyllm(TINYLLM, "arc", "train")
    assert report.rows == len(dataset) == 1117
    # Teacher 1 was teacher-forced: its stated answer is the gold one on every row (data README).
    assert all(row["stated_answers"][0] == row["answer"] for row in dataset)
    # Teacher 2 states a parsable answer on only a few percent of rows.
    assert (
        0
        < len(dataset) - report.unparsed_answers["llama-2-chat"] - report.missing_rationales["llama-2-chat"]
        < 0.1 * len(dataset)
    )
    validate_rationale_data(dataset, report.teachers)
