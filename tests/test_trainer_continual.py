"""trainers/continual.py under `accelerate launch` with 2 CPU processes, pushing to the loopback Hub."""

import json
import sys

import pytest
from peft import PeftModel
from transformers import set_seed

from hf_know.cluster_retrieval.stream import evaluate_task
from hf_know.image_data import digits_task_stream
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
