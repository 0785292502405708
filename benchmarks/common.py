"""What every benchmark shares: the machine and library versions recorded in each results file, the shared
training recipe, the run cache that makes long benchmarks resumable, frozen-backbone features, mean ± std over
seeds, and the goals table."""

from __future__ import annotations

import json
import os
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import peft
import torch
import transformers
from torch import nn

import hf_know
from hf_know.cli import ScriptTrainingArguments


def machine(device: str) -> dict:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "device": device if device == "cpu" else torch.cuda.get_device_name(),
    }


def versions() -> dict:
    return {
        "hf_know": hf_know.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
    }


def training_arguments(output_dir: str, device: str, **kwargs) -> ScriptTrainingArguments:
    """The benchmarks' shared recipe: AdamW at a constant learning rate, no weight decay, quiet."""
    return ScriptTrainingArguments(
        output_dir=output_dir,
        lr_scheduler_type="constant",
        weight_decay=0.0,
        disable_tqdm=True,
        use_cpu=device == "cpu",
        **kwargs,
    )


COMPUTE = {"computed": 0, "cached": 0, "seconds": 0.0}  # this invocation's runs; seconds of all runs it used


def cached(path: Path, compute, fresh: bool) -> dict:
    """`compute()` once per `path`: its JSON result, with the seconds it took, is reused by later invocations."""
    if path.is_file() and not fresh:
        result = json.loads(path.read_text())
        COMPUTE["cached"] += 1
    else:
        started = time.perf_counter()
        result = compute()
        result["run_seconds"] = time.perf_counter() - started
        COMPUTE["computed"] += 1
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(result))
        os.replace(tmp, path)
    COMPUTE["seconds"] += result.get("run_seconds", 0.0)
    return result


def summarize(values: list[float]) -> dict:
    """Mean and sample standard deviation (0 for a single value) of one figure over seeds."""
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0}


def fit_task_classifier(features: np.ndarray, tasks: np.ndarray):
    """The retrieval ceiling: a logistic-regression task classifier fitted on every task's features at once, its C
    chosen by 3-fold cross-validation."""
    from sklearn.linear_model import LogisticRegressionCV

    classifier = LogisticRegressionCV(Cs=[0.1, 1.0, 10.0, 100.0], cv=3, max_iter=3000, scoring="accuracy")
    with warnings.catch_warnings():  # scikit-learn's announcements of future defaults
        warnings.simplefilter("ignore", FutureWarning)
        return classifier.fit(features, tasks)


def percent(stats: dict) -> str:
    """`summarize`'s figure of a share as "mean ± std" in percent."""
    return f"{100 * stats['mean']:.1f} ± {100 * stats['std']:.1f}"


def write_results(output: Path, results: dict, lines: list[str]) -> None:
    """`output`.json (the results) and `output`.md (the report `lines`), which is also printed."""
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".json").write_text(json.dumps(results, indent=2))
    output.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def goals_table(goals: dict[str, bool]) -> list[str]:
    """Markdown lines of a results file's goals section (none when there are no goals)."""
    if not goals:
        return []
    return [
        "## Goals",
        "",
        "| goal | met |",
        "|---|---|",
        *(f"| {goal} | {'yes' if met else 'no'} |" for goal, met in goals.items()),
    ]


@torch.no_grad()
def frozen_features(
    classifier, dataset, device: str, batch_size: int = 256
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(features [N, D] float32 on CPU, labels [N], seconds in the backbone) of an `hf_know.backbones.ImageClassifier`
    over a dataset of grey `pixel_values`, batch by batch."""
    rows, seconds = [], 0.0
    for start in range(0, len(dataset), batch_size):
        pixels = dataset[start : start + batch_size]["pixel_values"].to(device)
        begin = time.perf_counter()
        rows.append(classifier.backbone(pixels.expand(-1, classifier.in_channels, -1, -1)).float().cpu())
        seconds += time.perf_counter() - begin  # .cpu() waits for a GPU
    return torch.cat(rows), torch.as_tensor(dataset.with_format(None)["labels"]), seconds


class FrozenBatchNorm(nn.BatchNorm2d):
    """A batch norm that always normalises with its running statistics and never updates them."""

    def train(self, mode: bool = True):
        return super().train(False)


def freeze_batchnorm_statistics(model: nn.Module) -> nn.Module:
    """Make every `BatchNorm2d` of `model` a `FrozenBatchNorm` in place (same state): fine-tuning a pretrained CNN on
    a few hundred images keeps its ImageNet statistics instead of drifting them by a handful of momentum updates."""
    for module in model.modules():
        if type(module) is nn.BatchNorm2d:
            module.__class__ = FrozenBatchNorm
    return model
