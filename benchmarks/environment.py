"""The machine and library versions a benchmark ran on, recorded in every results file."""

from __future__ import annotations

import platform

import peft
import torch
import transformers

import hf_know


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
