"""trainers/continual.py under `accelerate launch` with 2 CPU processes, pushing to the loopback Hub."""

import json
import sys

import pytest
from peft import PeftModel
from transformers import set_seed

from hf_know.cluster_retrieval.stream import evaluate_task, split_into_tasks
from hf_know.image_data import digits_task_stream, load_fashion_mnist
from hf_know.scripts import continual

from .conftest import REPO_ROOT
from .test_trainer_project import run


def test_accelerate_launch_two_processes_runs_the_stream_and_pushes(tmp_path, hub):
    output = tmp_path / "continual"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--cpu"]
    run(
        [
            *launch,
            str(REPO_ROOT / "trainers" / "continual.py"),
            "--config",
            "configs/continual/tiny.yaml",
            "--output_dir",
            str(output),
            "--push_to_hub",
            "true",
            "--hub_model_id",
            "tester/tiny-continual",
        ],
        hub.env,
    )
    metrics = json.loads((output / "metrics.json").read_text())
    assert [len(row) for row in metrics["accuracy"]] == [1, 2]  # evaluated on every seen task after each task
    assert metrics["task_names"] == ["digits_0_1", "digits_2_3"]
    for key in ("acc", "acc_incremental", "forgetting", "bwt", "retrieval_acc", "oracle_acc"):
        assert 0.0 <= abs(metrics[key]) <= 1.0, key
    assert metrics["acc"] == pytest.approx(sum(metrics["accuracy"][-1]) / 2)
    # the pushed adapter (both task modules and signatures) reproduces the run's final row
    parser = continual.make_parser()
    script_args, training_args = parser.parse_args_and_config(
        ["--config", str(REPO_ROOT / "configs/continual/tiny.yaml"), "--output_dir", str(tmp_path / "unused")]
    )
    set_seed(training_args.seed)
    base = continual.build_model(script_args, num_labels=4)
    model = PeftModel.from_pretrained(base, "tester/tiny-continual").eval()
    stream = digits_task_stream(script_args.tasks, script_args.image_size, script_args.train_per_class)
    final = [evaluate_task(model, data["test"], j) for j, data in enumerate(stream)]
    assert [row["accuracy"] for row in final] == pytest.approx(metrics["accuracy"][-1])
    assert [row["retrieval_accuracy"] for row in final] == pytest.approx(metrics["retrieval_accuracy"][-1])
    card = hub.state.blob_path(
        hub.state.repo("model", "tester/tiny-continual").resolve("main").files["README.md"].sha256
    ).read_text()
    assert "continual-learning" in card and "digits_2_3" in card


def test_the_fashion_mnist_recipe_runs_class_incremental_on_imagenet_efficientnet(tmp_path, fashion_dir):
    """configs/continual/fashion_mnist.yaml (the benchmark's PROTEUS arm), shrunk: class-incremental tasks of
    Fashion-MNIST on EfficientNet-Lite0, class_gaussian signatures routed from the frozen block-14 output; the
    saved adapter routes the test images as the run did."""
    output = tmp_path / "fashion"
    argv = [
        *("--config", str(REPO_ROOT / "configs/continual/fashion_mnist.yaml"), "--data_dir", str(fashion_dir)),
        *("--train_per_class", "6", "--test_per_class", "3", "--image_size", "32", "--num_train_epochs", "1"),
        *("--per_device_train_batch_size", "8", "--output_dir", str(output)),
    ]
    metrics = continual.run(argv)
    assert metrics["task_names"] == [f"fashion_mnist_{2 * t}_{2 * t + 1}" for t in range(5)]
    retrieval = metrics["retrieval_accuracy"][-1]
    assert sum(retrieval) / 5 >= 0.8  # each class's synthetic images have their own grey level
    script_args, _ = continual.make_parser().parse_args_and_config(argv)
    model = PeftModel.from_pretrained(continual.build_model(script_args, num_labels=10), output).eval()
    config = model.peft_config["default"]
    assert (config.signature_type, config.retrieval_space, config.feature_layer) == (
        "class_gaussian",
        "frozen_backbone",
        14,
    )
    data = load_fashion_mnist(range(10), image_size=32, train_per_class=6, test_per_class=3, data_dir=fashion_dir)
    stream = split_into_tasks(data, [2] * 5)
    classes = [[2 * t, 2 * t + 1] for t in range(5)]
    final = [evaluate_task(model, task["test"], j, classes=classes) for j, task in enumerate(stream)]
    assert [row["accuracy"] for row in final] == pytest.approx(metrics["accuracy"][-1])
    assert [row["retrieval_accuracy"] for row in final] == pytest.approx(retrieval)
