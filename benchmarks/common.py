"""What every benchmark shares: the machine and library versions recorded in each results file, the shared
training recipe, mean ± std over seeds, and the goals table."""

from __future__ import annotations

import platform

import numpy as np
import peft
import torch
import transformers

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


def summarize(values: list[float]) -> dict:
    """Mean and sample standard deviation (0 for a single value) of one figure over seeds."""
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0}


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
