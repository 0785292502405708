"""trainers/project.py under `accelerate launch` with 2 CPU processes, pushing to the loopback Hub."""

import json
import os
import subprocess
import sys

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForImageClassification

from hf_know.image_data import load_digits_dataset

from .conftest import REPO_ROOT


def run(args, env):
    result = subprocess.run(args, cwd=REPO_ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result


def test_accelerate_launch_two_processes_trains_saves_and_pushes(tmp_path, hub):
    pretrained, adapter = tmp_path / "pretrained", tmp_path / "adapter"
    script = str(REPO_ROOT / "trainers" / "project.py")
    run(
        [
            sys.executable,
            script,
            "--config",
            "configs/project/tiny_pretrain.yaml",
            "--output_dir",
            str(pretrained),
        ],
        hub.env,
    )
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--cpu"]
    run(
        [
            *launch,
            script,
            "--config",
            "configs/project/tiny.yaml",
            "--model_name_or_path",
            str(pretrained),
            "--output_dir",
            str(adapter),
            "--push_to_hub",
            "true",
            "--hub_model_id",
            "tester/tiny-projection",
        ],
        hub.env,
    )
    metrics = json.loads((adapter / "metrics.json").read_text())
    assert metrics["trainable_parameters"] < metrics["total_parameters"] / 2
    assert not list(tmp_path.glob(".adapter.tmp-*"))
    # the pushed adapter reproduces the saved run's accuracy
    base = AutoModelForImageClassification.from_pretrained(pretrained, num_labels=3, ignore_mismatched_sizes=True)
    model = PeftModel.from_pretrained(base, "tester/tiny-projection").eval()
    test = load_digits_dataset([3, 4, 5], image_size=16)["test"][:]
    with torch.no_grad():
        predictions = model(pixel_values=test["pixel_values"]).logits.argmax(-1)
    assert float((predictions == test["labels"]).float().mean()) == pytest.approx(metrics["eval_accuracy"])
    card = (
        hub.state.blob_path(hub.state.repo("model", "tester/tiny-projection").resolve("main").files["README.md"].sha256)
    ).read_text()
    assert "model-projection" in card and "library_name: peft" in card
    assert (
        "base_model:" not in card and str(pretrained) in card
    )  # a local base is named in the text, not as Hub metadata


def test_script_rejects_an_adapter_without_a_pretrained_model(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "trainers/project.py",
            "--config",
            "configs/project/tiny_pretrain.yaml",
            "--method",
            "projection",
            "--output_dir",
            str(tmp_path / "x"),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "method='projection' adapts a pretrained model: set model_name_or_path" in result.stderr
    assert not (tmp_path / "x").exists()
