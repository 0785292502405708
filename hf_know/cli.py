"""`hf-know <command>`: the console entry point (like `trl sft`), and what the scripts share.

```bash
hf-know purify --config configs/purify/tiny.yaml
hf-know project --config configs/project/digits_projection.yaml --learning_rate 1e-3
hf-know continual --config configs/continual/digits.yaml
hf-know know predict --config configs/know/predict_tiny.yaml
```

Each command is a script of `hf_know.scripts` (also runnable as `trainers/<command>.py`, e.g. under `accelerate
launch`); its options are the fields of its dataclasses, read by trl's `TrlParser` from `--config file.yaml` and the
command line, which wins.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from transformers import TrainingArguments
from trl import TrlParser

COMMANDS = {
    "purify": "Purify several teachers' rationales and distil them into a student (knowledge purification).",
    "project": "Fine-tune a CNN with model projection, or a baseline method.",
    "continual": "Learn a stream of tasks with PROTEUS and infer without task ids.",
    "know": "KNOW: collect a forgetting trajectory, predict weights, meta-train the hyper-model.",
}


def check_config_file(argv: Sequence[str]) -> None:
    """Name a `--config` file that is missing or not a YAML mapping (the parser would raise an unnamed YAML or
    file error)."""
    if "--config" not in argv:
        return
    index = list(argv).index("--config") + 1
    if index >= len(argv):
        raise ValueError("--config needs a file name.")
    path = Path(argv[index])
    if not path.is_file():
        raise ValueError(f"--config {path}: no such file.")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ValueError(f"--config {path}: not valid YAML ({error}).") from error
    if not isinstance(values, dict):
        raise ValueError(f"--config {path}: expected a mapping of option names to values.")


def parse(parser: TrlParser, argv: Sequence[str] | None = None) -> tuple:
    """`parser.parse_args_and_config(argv)` after `check_config_file`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    check_config_file(argv)
    return parser.parse_args_and_config(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Run `hf-know <command> [options]`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        listing = "\n".join(f"  {name:<10} {text}" for name, text in COMMANDS.items())
        raise SystemExit(f"usage: hf-know <command> [--config file.yaml] [options]\n\ncommands:\n{listing}")
    script = importlib.import_module(f"hf_know.scripts.{argv[0]}")
    script.run(argv[1:], prog=f"hf-know {argv[0]}")


@dataclass
class ScriptTrainingArguments(TrainingArguments):
    """`transformers.TrainingArguments` with defaults for the small runs of the scripts: no checkpoints during
    training, no experiment tracker unless asked for, every dataset column kept (e.g. `pixel_values`), dataloader
    memory pinned only where CUDA can use it; and
    `overwrite_output_dir` (the flag transformers 4 had), without which an `output_dir` that is not empty and was
    not written by the same script is refused (see `hf_know.io`)."""

    save_strategy: str = field(default="no", metadata={"help": "Checkpointing during training."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep every dataset column."})
    dataloader_pin_memory: bool = field(
        default_factory=torch.cuda.is_available, metadata={"help": "Pin dataloader memory (on with CUDA)."}
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Replace a non-empty output_dir that is not an earlier output of the same script."},
    )

    def __post_init__(self):
        if self.report_to is None:
            self.report_to = "none"
        super().__post_init__()
