"""Bad input, data and configs: errors name the file, row, field or tensor, and come before any expensive work."""

import json
import os
import subprocess
import sys

import pytest
from datasets import Dataset, DatasetDict

from hf_know.know.metatrain import MetaDataConfig, MetaTrainConfig
from hf_know.purification import ClassifierRouter, load_tinyllm, validate_rationale_data
from hf_know.purification.toy import TOY_TEACHERS, rationale_texts
from hf_know.testing import tiny_sentence_encoder, toy_rationale_data, word_tokenizer

from .conftest import REPO_ROOT, snapshot


def test_any_set_in_the_tinyllm_layout_loads_even_with_a_single_teacher(tmp_path):
    folder = tmp_path / "strategyqa"
    (folder / "llm").mkdir(parents=True)
    records = [{"id": i, "question": f"Q{i}?", "choices": ["yes", "no"], "answer": "yes"} for i in range(3)]
    (folder / "strategyqa_test.json").write_text(json.dumps(records))
    texts = ["R0. Thus, the answer is (a) yes", "", "R2 without a stated answer"]
    (folder / "llm" / "test_CoT_0.json").write_text(json.dumps(texts))
    dataset, report = load_tinyllm(tmp_path, "strategyqa", "test")
    assert report.teachers == ["flan-t5-xl"] and len(dataset) == 3
    assert report.missing_rationales == {"flan-t5-xl": 1} and report.unparsed_answers == {"flan-t5-xl": 1}
    assert dataset[0]["rationales"] == ["R0. Thus, the answer is (a) yes"] and dataset[0]["stated_answers"] == ["yes"]
    validate_rationale_data(dataset, report.teachers)


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("strategyqa_test.json", b"\xff\xfe binary", r"strategyqa_test.json: not UTF-8 text"),
        ("strategyqa_test.json", b'{"id": 1}\n{"id": 2, oops}\n', r"strategyqa_test.json: invalid JSON at line 2"),
        (
            "strategyqa_test.json",
            b'[{"id": 1, "question": "q"}]',
            r"record 0 lacks the key\(s\) \['choices', 'answer'\]",
        ),
        ("llm/test_CoT_0.json", b"[1, 2", r"test_CoT_0.json: invalid JSON at line 1"),
    ],
    ids=["binary", "bad-json-line", "missing-keys", "bad-batch"],
)
def test_broken_tinyllm_files_are_named(tmp_path, name, content, match):
    folder = tmp_path / "strategyqa"
    (folder / "llm").mkdir(parents=True)
    (folder / "strategyqa_test.json").write_text(
        json.dumps([{"id": 1, "question": "q", "choices": ["a"], "answer": "a"}])
    )
    (folder / "llm" / "test_CoT_0.json").write_text(json.dumps(["r"]))
    (folder / name).write_bytes(content)
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match=match):
        load_tinyllm(tmp_path, "strategyqa", "test")
    assert snapshot(tmp_path) == before


def test_router_fit_validates_its_data():
    data = toy_rationale_data(16)
    router = ClassifierRouter(list(TOY_TEACHERS), tiny_sentence_encoder(word_tokenizer(rationale_texts(data))))
    bad = Dataset.from_dict({**data.to_dict(), "answer": ["nope", *data["answer"][1:]]})
    with pytest.raises(ValueError, match=r"row 0 \(id '.*'\): the gold answer 'nope' is not among its choices"):
        router.fit(bad)
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['choices'\]"):
        router.fit(data.remove_columns("choices"))


def purify(tmp_path, *args):
    """Run trainers/purify.py with the tiny recipe, or with `args`' own `--config`."""
    script, config = REPO_ROOT / "trainers" / "purify.py", REPO_ROOT / "configs" / "purify" / "tiny.yaml"
    recipe = [] if "--config" in args else ["--config", str(config)]
    command = [sys.executable, str(script), *recipe, "--output_dir", str(tmp_path / "out"), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env={**os.environ})


def test_purify_script_validates_train_and_eval_data_before_building_anything(tmp_path):
    good = toy_rationale_data(8)
    bad = Dataset.from_dict({**good.to_dict(), "answer": [*good["answer"][:3], "nope", *good["answer"][4:]]})
    DatasetDict(train=good, test=bad).save_to_disk(tmp_path / "data")
    result = purify(
        tmp_path,
        "--dataset_name",
        str(tmp_path / "data"),
        "--teachers",
        *TOY_TEACHERS,
        "--model_name_or_path",
        str(tmp_path / "never-read"),
    )
    # The eval set is validated (row 3 named) before the student (a path that does not exist) is ever loaded.
    assert result.returncode != 0 and "row 3 (id" in result.stderr and "'nope'" in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "out").exists()


def test_config_file_errors_name_the_file(tmp_path):
    config = tmp_path / "recipe.yaml"
    config.write_text("learning_rate: [unclosed\n")
    result = purify(tmp_path, "--config", str(config))
    assert result.returncode != 0 and f"--config {config}: not valid YAML" in result.stderr, result.stderr[-2000:]
    config.write_text("- a list\n")
    assert "expected a mapping of option names" in purify(tmp_path, "--config", str(config)).stderr
    config.write_text("learnin_rate: 0.1\n")
    result = purify(tmp_path, "--config", str(config))
    assert "Unknown arguments from config file: ['--learnin_rate', '0.1']" in result.stderr, result.stderr[-2000:]


@pytest.mark.parametrize(
    ("config", "kwargs", "match"),
    [
        (MetaDataConfig, {"tasks": ["cifar"]}, r"tasks=\['cifar'\]: expected a non-empty list among"),
        (MetaDataConfig, {"r_range": [0.9, 0.5]}, r"r_range=\[0.9, 0.5\]: expected 0 < low <= high < 1"),
        (MetaDataConfig, {"num_sessions": 1}, "num_sessions >= 2"),
        (MetaTrainConfig, {"validation_fraction": 1.0}, "0 < validation_fraction < 1"),
        (MetaTrainConfig, {"learning_rate": 0.0}, "learning_rate > 0"),
    ],
)
def test_meta_training_configs_validate_their_fields(config, kwargs, match):
    with pytest.raises(ValueError, match=match):
        config(**kwargs)
