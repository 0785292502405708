"""Argument parsing for the trainer scripts: dataclasses on the command line, defaults from `--config file.yaml`.

As TRL's `TrlParser`: values in the YAML file become the parser's defaults, flags given on the command line
override them, and unknown keys in the file are an error that names them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from transformers import HfArgumentParser, TrainingArguments


class ConfigArgumentParser(HfArgumentParser):
    """`HfArgumentParser` with a `--config` option reading defaults from a YAML file."""

    def parse_args_and_config(self, args: Sequence[str] | None = None) -> tuple:
        config_parser = HfArgumentParser([], add_help=False)
        config_parser.add_argument("--config", type=Path, default=None)
        known, remaining = config_parser.parse_known_args(args)
        if known.config is not None:
            if not known.config.is_file():
                raise ValueError(f"--config {known.config}: no such file.")
            try:
                values = yaml.safe_load(known.config.read_text(encoding="utf-8")) or {}
            except (yaml.YAMLError, UnicodeDecodeError) as error:
                raise ValueError(f"--config {known.config}: not valid YAML ({error}).") from error
            if not isinstance(values, dict):
                raise ValueError(f"--config {known.config}: expected a mapping of option names to values.")
            accepted = {action.dest for action in self._actions}
            unknown = sorted(set(values) - accepted)
            if unknown:
                raise ValueError(f"--config {known.config}: unknown option(s) {unknown}.")
            self.set_defaults(**values)
            # Options that are required on the command line are satisfied by the file.
            for action in self._actions:
                if action.dest in values:
                    action.required = False
        return self.parse_args_into_dataclasses(remaining)


@dataclass
class ScriptTrainingArguments(TrainingArguments):
    """`transformers.TrainingArguments` with defaults for the small runs of `trainers/`: no checkpoints during
    training, no experiment tracker unless asked for, and every dataset column kept (e.g. `pixel_values`); and
    `overwrite_output_dir` (the flag transformers 4 had), without which an `output_dir` that is not empty and was
    not written by the same script is refused (see `hf_know.io`)."""

    save_strategy: str = field(default="no", metadata={"help": "Checkpointing during training."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep every dataset column."})
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Replace a non-empty output_dir that is not an earlier output of the same script."},
    )

    def __post_init__(self):
        if self.report_to is None:
            self.report_to = "none"
        super().__post_init__()
