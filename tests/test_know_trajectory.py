"""Forgetting trajectories with transformers.Trainer: nested subsets, one checkpoint per session, resume, Hub."""

import itertools
import json
from pathlib import Path

import datasets
import pytest
import torch
from huggingface_hub import HfApi
from safetensors.torch import load_file
from torch import nn
from transformers import TrainerCallback, TrainingArguments

from hf_know.know import collect_trajectory, subset_sizes
from hf_know.know.trajectory import SESSION_FILE
from hf_know.testing import tiny_bert


def text_dataset(n=48):
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 100, (n, 6), generator=generator)
    return datasets.Dataset.from_dict({"input_ids": ids.tolist(), "labels": (ids[:, 0] % 2).tolist()})


def arguments(tmp_path, **kwargs):
    return TrainingArguments(
        output_dir=str(tmp_path / "scratch"),
        per_device_train_batch_size=8,
        num_train_epochs=1,
        learning_rate=1e-3,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        seed=0,
        **kwargs,
    )


def weights(folder):
    return load_file(folder / "model.safetensors")


class Interrupt(TrainerCallback):
    """Stops the run in the middle of the session whose subset has `size` examples."""

    def __init__(self, size):
        self.size = size

    def on_step_end(self, args, state, control, train_dataloader=None, **kwargs):
        if len(train_dataloader.dataset) == self.size:
            raise KeyboardInterrupt


def test_subset_sizes_and_their_errors():
    assert subset_sizes(1000, 0.5, 5) == [1000, 500, 250, 125, 62]
    with pytest.raises(ValueError, match="too small for 5 nested subsets"):
        subset_sizes(8, 0.5, 5)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        subset_sizes(100, 1.5, 3)


def test_sessions_nested_resumable_and_deterministic(tmp_path):
    dataset = text_dataset()
    straight = collect_trajectory(tiny_bert(num_labels=2), dataset, arguments(tmp_path), tmp_path / "a", num_sessions=4)
    assert straight == [str(tmp_path / "a" / f"session-{k}") for k in (3, 2, 1, 0)]  # smallest data first
    records = [json.loads((tmp_path / "a" / f"session-{k}" / SESSION_FILE).read_text()) for k in range(4)]
    assert [r["subset_size"] for r in records] == [48, 24, 12, 6]
    assert all(r["train_loss"] > 0 for r in records)
    # every session moved the weights
    states = [weights(tmp_path / "a" / f"session-{k}") for k in range(4)]
    assert all(not torch.equal(a["classifier.weight"], b["classifier.weight"]) for a, b in itertools.pairwise(states))

    # Interrupted inside session 2: sessions 0 and 1 are complete, nothing of session 2 is left behind.
    torch.manual_seed(0)
    model = tiny_bert(num_labels=2)
    with pytest.raises(KeyboardInterrupt):
        collect_trajectory(
            model, dataset, arguments(tmp_path), tmp_path / "b", num_sessions=4, callbacks=[Interrupt(12)]
        )
    assert sorted(p.name for p in (tmp_path / "b").iterdir() if not p.name.startswith(".hf-know")) == [
        "session-0",
        "session-1",
        "trajectory.json",
    ]
    before = (tmp_path / "b" / "session-1" / "model.safetensors").stat().st_mtime_ns
    # Resume with a fresh model: finished sessions are not redone, and the result equals the uninterrupted run.
    torch.manual_seed(123)
    collect_trajectory(tiny_bert(num_labels=2), dataset, arguments(tmp_path), tmp_path / "b", num_sessions=4)
    assert (tmp_path / "b" / "session-1" / "model.safetensors").stat().st_mtime_ns == before
    for k in range(4):
        a, b = weights(tmp_path / "a" / f"session-{k}"), weights(tmp_path / "b" / f"session-{k}")
        assert all(torch.equal(a[name], b[name]) for name in a), k
    with pytest.raises(ValueError, match=r"other settings \(r, subset_sizes: \[0.5, \[48, 24, 12, 6\]\] there"):
        collect_trajectory(tiny_bert(num_labels=2), dataset, arguments(tmp_path), tmp_path / "b", num_sessions=4, r=0.6)


def test_per_session_schedule_and_given_full_data_model(tmp_path):
    dataset = text_dataset()
    model = tiny_bert(num_labels=2)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    collect_trajectory(
        model,
        dataset,
        arguments(tmp_path),
        tmp_path / "t",
        num_sessions=3,
        train_first_session=False,
        session_epochs=[1, 2, 3],
        session_learning_rates=[1e-3, 5e-4, 2.5e-4],
    )
    session0 = weights(tmp_path / "t" / "session-0")
    assert torch.equal(session0["classifier.weight"], initial["classifier.weight"])  # taken as is
    record = json.loads((tmp_path / "t" / "session-2" / SESSION_FILE).read_text())
    assert record["epochs"] == 3 and record["learning_rate"] == 2.5e-4 and "train_loss" in record
    with pytest.raises(ValueError, match="session_epochs has 2 values; expected one per session"):
        collect_trajectory(model, dataset, arguments(tmp_path), tmp_path / "u", num_sessions=3, session_epochs=[1, 2])


def test_sessions_on_hub_branches_and_resume_from_the_hub(tmp_path, hub):
    dataset = text_dataset()
    specs = collect_trajectory(
        tiny_bert(num_labels=2),
        dataset,
        arguments(tmp_path),
        tmp_path / "t",
        num_sessions=3,
        hub_model_id="tester/forgetting",
    )
    assert specs == ["tester/forgetting@session-2", "tester/forgetting@session-1", "tester/forgetting@session-0"]
    branches = {b.name for b in HfApi().list_repo_refs("tester/forgetting").branches}
    assert {"session-0", "session-1", "session-2"} <= branches
    # A run that stopped after saving a session but before pushing it pushes that session when resumed.
    HfApi().delete_branch("tester/forgetting", branch="session-2")
    collect_trajectory(
        tiny_bert(num_labels=2),
        dataset,
        arguments(tmp_path),
        tmp_path / "t",
        num_sessions=3,
        hub_model_id="tester/forgetting",
        callbacks=[Interrupt(len(dataset))],
    )
    assert "session-2" in {b.name for b in HfApi().list_repo_refs("tester/forgetting").branches}
    # On another machine (fresh output_dir): every session is pulled from the Hub, none retrained.
    torch.manual_seed(5)
    collect_trajectory(
        tiny_bert(num_labels=2),
        dataset,
        arguments(tmp_path),
        tmp_path / "elsewhere",
        num_sessions=3,
        hub_model_id="tester/forgetting",
        callbacks=[Interrupt(len(dataset))],
    )
    a, b = weights(tmp_path / "t" / "session-2"), weights(tmp_path / "elsewhere" / "session-2")
    assert all(torch.equal(a[name], b[name]) for name in a)


def image_dataset(n=32):
    generator = torch.Generator().manual_seed(2)
    images = torch.randn(n, 1, 8, 8, generator=generator)
    return datasets.Dataset.from_dict(
        {"pixel_values": images.tolist(), "labels": (images.mean(dim=(1, 2, 3)) > 0).long().tolist()}
    ).with_format("torch")


def test_peft_and_plain_module_trajectories_save_only_what_trains_and_resume(tmp_path):
    """A PEFT model's sessions are adapters (LoRA A/B and the saved head), a plain module's are model.safetensors;
    an interrupted run resumes from the saved adapter, not from the frozen base."""
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict

    from hf_know.backbones import ImageClassifier
    from hf_know.know.trajectory import load_session

    config = LoraConfig(r=2, target_modules=["query", "value"], modules_to_save=["classifier"])
    torch.manual_seed(0)
    model = get_peft_model(tiny_bert(), config)
    base = {k: v.clone() for k, v in model.base_model.model.bert.state_dict().items() if "lora" not in k}
    with pytest.raises(KeyboardInterrupt):
        collect_trajectory(
            model, text_dataset(), arguments(tmp_path), tmp_path / "lora", num_sessions=3, callbacks=[Interrupt(12)]
        )
    torch.manual_seed(0)
    fresh = get_peft_model(tiny_bert(), config)
    checkpoints = collect_trajectory(fresh, text_dataset(), arguments(tmp_path), tmp_path / "lora", num_sessions=3)
    for folder in checkpoints:
        saved = load_file(f"{folder}/adapter_model.safetensors")
        assert saved and all("lora_" in k or "classifier" in k for k in saved)
        assert not (Path(folder) / "model.safetensors").exists()
    torch.manual_seed(0)
    straight = collect_trajectory(
        get_peft_model(tiny_bert(), config), text_dataset(), arguments(tmp_path), tmp_path / "straight", num_sessions=3
    )
    resumed, uninterrupted = (load_file(f"{c[0]}/adapter_model.safetensors") for c in (checkpoints, straight))
    assert all(torch.allclose(resumed[k], uninterrupted[k], atol=1e-6) for k in resumed)
    first = load_file(f"{checkpoints[1]}/adapter_model.safetensors")
    assert any(not torch.equal(first[k], resumed[k]) for k in first)
    load_session(fresh, checkpoints[1])
    assert all(torch.equal(v, first[k]) for k, v in get_peft_model_state_dict(fresh).items())
    frozen = {k: v for k, v in fresh.base_model.model.bert.state_dict().items() if "lora" not in k}
    assert frozen.keys() == base.keys() and all(torch.equal(frozen[k], base[k]) for k in base)

    torch.manual_seed(0)
    classifier = ImageClassifier(nn.Sequential(nn.Conv2d(1, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()), 4, 2, 1)
    checkpoints = collect_trajectory(
        classifier, image_dataset(), arguments(tmp_path), tmp_path / "plain", num_sessions=3
    )
    saved = load_file(f"{checkpoints[0]}/model.safetensors")
    assert set(saved) == set(classifier.state_dict())
    assert all(torch.equal(saved[k], v) for k, v in classifier.state_dict().items())  # the last session is session 2
