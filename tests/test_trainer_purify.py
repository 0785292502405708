"""trainers/purify.py under `accelerate launch` with 2 CPU processes, pushing student and router to a loopback Hub."""

import json
import sys
from pathlib import Path

import pytest
from huggingface_hub import hf_hub_download
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

from hf_know.purification import SimilarityRouter, exact_match_accuracy, load_router, predict_answers
from hf_know.testing.rationales import toy_rationale_data

from .conftest import REPO_ROOT
from .test_trainer_project import run

SCRIPT = str(REPO_ROOT / "trainers" / "purify.py")
LAUNCH = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--cpu"]


def test_accelerate_launch_purifies_distils_saves_and_pushes(tmp_path, hub):
    output = tmp_path / "student"
    run(
        [*LAUNCH, SCRIPT, "--config", "configs/purify/tiny.yaml", "--output_dir", str(output),
         "--push_to_hub", "true", "--hub_model_id", "tester/tiny-purified"],
        hub.env,
    )  # fmt: skip
    metrics = json.loads((output / "metrics.json").read_text())
    assert set(metrics["chosen_teachers"]) <= {"adder", "multiplier"} and not list(tmp_path.glob(".student.tmp-*"))
    # the pushed student loads with the plain transformers class and reproduces the run's accuracy
    model = AutoModelForSeq2SeqLM.from_pretrained("tester/tiny-purified")
    tokenizer = AutoTokenizer.from_pretrained("tester/tiny-purified")
    test = toy_rationale_data(128).select(range(96, 128))
    accuracy = exact_match_accuracy(predict_answers(model, tokenizer, test), test["answer"])
    assert accuracy == pytest.approx(metrics["eval_accuracy"])
    router = load_router("tester/tiny-purified-router")
    assert isinstance(router, SimilarityRouter) and router.teachers == ["adder", "multiplier"]
    card = Path(hf_hub_download("tester/tiny-purified", "README.md")).read_text()
    assert (
        "| purifier | similarity |" in card and "adder, multiplier" in card and "| λ (rationale weight) | 1.0 |" in card
    )
    assert "tester/tiny-purified-router" in card and "AutoModelForSeq2SeqLM" in card


def test_causal_student_with_the_rl_selector_on_two_processes(tmp_path, hub):
    output = tmp_path / "causal"
    run(
        [*LAUNCH, SCRIPT, "--config", "configs/purify/tiny.yaml", "--output_dir", str(output),
         "--student_architecture", "llama", "--purifier", "reinforce", "--num_train_epochs", "2",
         "--push_to_hub", "true", "--hub_model_id", "tester/tiny-causal"],
        hub.env,
    )  # fmt: skip
    metrics = json.loads((output / "metrics.json").read_text())
    assert "eval_accuracy" in metrics and sum(metrics["chosen_teachers"].values()) == 96
    assert AutoModelForCausalLM.from_pretrained("tester/tiny-causal").config.model_type == "llama"
    assert "AutoModelForCausalLM" in Path(hf_hub_download("tester/tiny-causal", "README.md")).read_text()
    assert load_router("tester/tiny-causal-router").method == "reinforce"


def test_script_names_a_bad_purifier(tmp_path, hub):
    bad = [sys.executable, SCRIPT, "--config", "configs/purify/tiny.yaml", "--output_dir", str(tmp_path / "x")]
    with pytest.raises(AssertionError, match=r"purifier='gpt4'; expected one of"):
        run([*bad, "--purifier", "gpt4"], hub.env)
    assert not (tmp_path / "x").exists()
