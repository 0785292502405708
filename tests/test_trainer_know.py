"""trainers/know.py: collect a trajectory onto Hub branches, predict from those revisions, push, pull, meta-train."""

import json
import sys

import pytest
import torch
import yaml
from transformers import AutoModelForImageClassification

from hf_know.know import KnowPredictor
from hf_know.scripts import know

from .conftest import REPO_ROOT
from .test_trainer_project import run


def test_collect_to_hub_branches_then_predict_from_revisions_and_push(tmp_path, hub):
    script = [sys.executable, str(REPO_ROOT / "trainers" / "know.py")]
    run(
        [
            *script,
            "collect",
            "--config",
            "configs/know/collect_tiny.yaml",
            "--output_dir",
            str(tmp_path / "traj"),
            "--push_to_hub",
            "true",
            "--hub_model_id",
            "tester/know-trajectory",
            "--disable_tqdm",
            "true",
        ],
        hub.env,
    )
    sizes = [
        json.loads((tmp_path / "traj" / f"session-{k}" / "know_session.json").read_text())["subset_size"]
        for k in range(5)
    ]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] > 8 * sizes[4]
    revisions = [f"tester/know-trajectory@session-{k}" for k in range(4, -1, -1)]
    run(
        [
            *script,
            "predict",
            "--config",
            "configs/know/predict_tiny.yaml",
            "--checkpoints",
            *revisions,
            "--output_dir",
            str(tmp_path / "x8"),
            "--hub_model_id",
            "tester/know-x8",
        ],
        hub.env,
    )
    record = json.loads((tmp_path / "x8" / "know_prediction.json").read_text())
    assert record["predictor"] == "known" and record["steps"] == 3 and record["r"] == 0.5
    assert record["data_multiplier"] == 8 and record["hypermodel"].startswith("hf-know default")
    pulled = AutoModelForImageClassification.from_pretrained("tester/know-x8")
    local = AutoModelForImageClassification.from_pretrained(tmp_path / "x8")
    full = AutoModelForImageClassification.from_pretrained(tmp_path / "traj" / "session-0")
    name = "resnet.encoder.stages.0.layers.0.layer.0.convolution.weight"
    assert torch.equal(pulled.state_dict()[name], local.state_dict()[name])
    assert not torch.equal(local.state_dict()[name], full.state_dict()[name])  # KNOWN moved the weights


def test_meta_train_writes_a_loadable_hypermodel(tmp_path):
    # The shipped recipe without its real trajectories (benchmark outputs, not in a fresh clone).
    recipe = yaml.safe_load((REPO_ROOT / "configs/know/meta_train.yaml").read_text())
    assert recipe.pop("trajectories")
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    report = know.run(
        [
            "meta-train",
            "--config",
            str(tmp_path / "recipe.yaml"),
            "--output_dir",
            str(tmp_path / "hm"),
            "--num_runs",
            "4",
            "--pretrain_epochs",
            "2",
            "--session_epochs",
            "1",
            "--epochs",
            "2",
        ]
    )
    assert set(report) == {"conv", "fc", "bias"} and all(r["val_l1_known"] > 0 for r in report.values())
    record = json.loads((tmp_path / "hm" / "meta_training.json").read_text())
    assert record["MetaDataConfig"]["num_runs"] == 4 and record["scalars"]["conv"] > 0
    assert KnowPredictor.from_pretrained(tmp_path / "hm").hypermodel.window == 5
    with pytest.raises(SystemExit, match=r"usage: know\.py"):
        know.run(["train"])
