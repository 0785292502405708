"""trainers/project.py under `accelerate launch` with 2 CPU processes, pushing to the loopback Hub."""

import json
import os
import subprocess
import sys

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForImageClassification

from hf_know.image_data import load_digits_dataset, load_fashion_mnist
from hf_know.scripts import project

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


def test_a_model_builder_fine_tunes_imagenet_efficientnet_on_fashion_mnist_and_its_card_rebuilds_it(
    tmp_path, hub, fashion_dir
):
    """`model_builder` + `dataset: fashion_mnist`, through the recipe of configs/project/, pushed with a card whose
    quick start builds the base with the same builder and loads the adapter to the run's accuracy."""
    output = tmp_path / "lite0-projection"
    argv = [
        "--config",
        str(REPO_ROOT / "configs/project/fashion_mnist_projection.yaml"),
        *("--data_dir", str(fashion_dir), "--classes", "0", "1", "2", "--train_per_class", "4"),
        *("--test_per_class", "4", "--image_size", "32", "--max_steps", "2", "--output_dir", str(output)),
        *("--push_to_hub", "true", "--hub_model_id", "tester/lite0-projection"),
    ]
    metrics = project.run(argv)
    assert metrics["trainable_parameters"] < metrics["total_parameters"]
    card = hub.state.blob_path(
        hub.state.repo("model", "tester/lite0-projection").resolve("main").files["README.md"].sha256
    ).read_text()
    quick_start = card.split("```python")[1].split("```")[0]
    assert "efficientnet_lite0(num_labels=3, image_size=32)" in quick_start
    namespace = {}
    exec(quick_start, namespace)  # the card's own code: builder, then PeftModel.from_pretrained from the Hub
    data = load_fashion_mnist([0, 1, 2], image_size=32, train_per_class=4, test_per_class=4, data_dir=fashion_dir)
    test = data["test"][:]
    with torch.no_grad():
        predictions = namespace["model"].eval()(pixel_values=test["pixel_values"]).logits.argmax(-1)
    assert float((predictions == test["labels"]).float().mean()) == pytest.approx(metrics["eval_accuracy"])


def test_model_builder_and_model_name_or_path_are_exclusive(tmp_path):
    with pytest.raises(ValueError, match="Set model_name_or_path or model_builder, not both"):
        project.ProjectArguments(model_name_or_path="x", model_builder="hf_know.backbones:efficientnet_lite0")
    with pytest.raises(ValueError, match=r"dataset='cifar'; expected one of \['digits', 'fashion_mnist'\]"):
        project.ProjectArguments(dataset="cifar")
