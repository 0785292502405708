"""KNOW from the command line: make a forgetting trajectory, meta-train the KNOWN hyper-model, predict weights.

```bash
hf-know know collect --config configs/know/collect_tiny.yaml
hf-know know predict --config configs/know/predict_tiny.yaml
python trainers/know.py meta-train --config configs/know/meta_train.yaml
```

`collect` fine-tunes an image classifier on nested shrinking subsets of sklearn's digits (a ResNet built from the
sizes below, or a pretrained one from `model_name_or_path`) and writes `session-k` checkpoints (and pushes them to
branches of `hub_model_id`); `predict` runs `KnowPredictor.predict` on any checkpoints, local or on the Hub, and
optionally pushes the result with a model card; `meta-train` rebuilds the default hyper-model shipped with hf-know.
Every field below (and, for `collect`, of `transformers.TrainingArguments`) can be set in the YAML file or on the
command line.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field

from transformers import AutoModelForImageClassification, ResNetConfig, ResNetForImageClassification, set_seed
from trl import TrlParser

from ..cli import ScriptTrainingArguments, parse
from ..image_data import load_digits_dataset
from ..io import check_disjoint, check_output_dir, save_output
from ..know import KnowHyperModel, KnowPredictor, collect_trajectory, push_prediction
from ..know.extrapolate import PREDICTORS
from ..know.metatrain import MetaDataConfig, MetaTrainConfig, collect_meta_trajectories, config_dict, meta_train


@dataclass
class CollectArguments:
    """The trajectory: sessions on nested subsets of sklearn's digits restricted to `classes`."""

    classes: list[int] = field(default_factory=lambda: list(range(10)), metadata={"help": "Digits to classify."})
    image_size: int = field(default=16, metadata={"help": "Side of the upscaled images."})
    model_name_or_path: str | None = field(default=None, metadata={"help": "Pretrained classifier (folder or Hub)."})
    hidden_sizes: list[int] = field(default_factory=lambda: [8, 16], metadata={"help": "From-scratch ResNet widths."})
    r: float = field(default=0.5, metadata={"help": "Subset ratio: |D_k| = r^k |D_0|."})
    num_sessions: int = field(default=5, metadata={"help": "Checkpoints in the trajectory (S)."})
    trajectory_seed: int = field(default=0, metadata={"help": "Seed of the shuffle the subsets are prefixes of."})
    train_first_session: bool = field(default=True, metadata={"help": "Session 0 trains on the full data."})
    session_epochs: list[float] | None = field(default=None, metadata={"help": "Per-session epochs."})
    session_learning_rates: list[float] | None = field(default=None, metadata={"help": "Per-session LRs."})


@dataclass
class CollectTrainingArguments(ScriptTrainingArguments):
    output_dir: str = field(default="outputs/know/trajectory", metadata={"help": "Where session-k folders go."})


@dataclass
class PredictArguments:
    """`KnowPredictor.predict` (see its docstring) and where the result goes."""

    checkpoints: list[str] = field(metadata={"help": "Folders / repo ids / repo@revision, smallest data first."})
    output_dir: str = field(default="outputs/know/prediction", metadata={"help": "The predicted checkpoint."})
    steps: int = field(default=3, metadata={"help": "Extrapolation steps, (1/r)^steps times the data."})
    predictor: str = field(default="known", metadata={"help": f"One of {PREDICTORS}."})
    hypermodel: str | None = field(default=None, metadata={"help": "Hyper-model folder or repo; default shipped."})
    norm_layers: str = field(default="copy", metadata={"help": "copy (from the full-data model) or reset."})
    exclude: list[str] = field(default_factory=list, metadata={"help": "Tensor-name globs copied, not predicted."})
    r: float | None = field(default=None, metadata={"help": "Subset ratio, recorded (read from sessions if set)."})
    allow_pickle: bool = field(default=False, metadata={"help": "Read pytorch_model.bin (weights_only=True)."})
    backtest_scalars: int = field(
        default=100_000, metadata={"help": "Scalars per tensor kind in the one-step self-check; 0 for none."}
    )
    max_shard_size: str = field(default="5GB", metadata={"help": "Largest safetensors shard."})
    device: str = field(default="cpu", metadata={"help": "Where the extrapolation runs: cpu, cuda, cuda:1..."})
    dtype: str = field(default="float32", metadata={"help": "Compute precision: float32 or float64."})
    hub_model_id: str | None = field(default=None, metadata={"help": "Push the result to this Hub repo."})
    hub_token: str | None = field(default=None, metadata={"help": "Hub token (else the usual HF settings)."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Replace a non-empty foreign output_dir."})


# The fields of `PredictArguments` passed to `KnowPredictor.predict` under their own names.
PREDICT_OPTIONS = (
    "predictor",
    "r",
    "norm_layers",
    "exclude",
    "allow_pickle",
    "backtest_scalars",
    "max_shard_size",
    "device",
    "dtype",
)


@dataclass
class MetaTrainArguments:
    """Where the hyper-model goes, and its shape."""

    output_dir: str = field(default="outputs/know/hypermodel", metadata={"help": "Hyper-model folder."})
    conv_rule: str = field(default="any_kernel", metadata={"help": "any_kernel or 3x3_only (see tensor_kind)."})
    window: int = field(default=5, metadata={"help": "Trajectory length KNOWN reads."})
    hub_model_id: str | None = field(default=None, metadata={"help": "Push the hyper-model to this Hub repo."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Replace a non-empty foreign output_dir."})


def collect(args: CollectArguments, training_args: CollectTrainingArguments) -> list[str]:
    check_disjoint(training_args.output_dir, [args.model_name_or_path])
    set_seed(training_args.seed)
    hub_model_id = training_args.hub_model_id if training_args.push_to_hub else None
    if training_args.push_to_hub and not hub_model_id:
        raise ValueError(
            "push_to_hub is set but hub_model_id is not: name the Hub repo whose branches get the sessions."
        )
    # Sessions are pushed as branches by collect_trajectory; the Trainer itself never pushes.
    training_args = dataclasses.replace(training_args, push_to_hub=False)
    data = load_digits_dataset(args.classes, args.image_size)
    if args.model_name_or_path:
        model = AutoModelForImageClassification.from_pretrained(
            args.model_name_or_path, num_labels=len(args.classes), ignore_mismatched_sizes=True
        )
    else:
        config = ResNetConfig(
            num_channels=1,
            embedding_size=args.hidden_sizes[0],
            hidden_sizes=args.hidden_sizes,
            depths=[1] * len(args.hidden_sizes),
            layer_type="basic",
            num_labels=len(args.classes),
        )
        model = ResNetForImageClassification(config)
    return collect_trajectory(
        model,
        data["train"],
        training_args,
        training_args.output_dir,
        r=args.r,
        num_sessions=args.num_sessions,
        seed=args.trajectory_seed,
        train_first_session=args.train_first_session,
        session_epochs=args.session_epochs,
        session_learning_rates=args.session_learning_rates,
        hub_model_id=hub_model_id,
        token=training_args.hub_token,
        overwrite=training_args.overwrite_output_dir,
    )


def predict(args: PredictArguments):
    predictor = KnowPredictor.from_pretrained(args.hypermodel)
    options = {name: getattr(args, name) for name in PREDICT_OPTIONS}
    options.update(token=args.hub_token, overwrite=args.overwrite_output_dir)
    output = predictor.predict(args.checkpoints, args.steps, args.output_dir, **options)
    if args.hub_model_id:
        push_prediction(output, args.hub_model_id, token=args.hub_token)
    return output


def meta_train_hypermodel(args: MetaTrainArguments, data_config: MetaDataConfig, train_config: MetaTrainConfig):
    output = dict(kind="know-hypermodel", overwrite=args.overwrite_output_dir)
    check_output_dir(args.output_dir, **output)  # before any work; written atomically at the end
    set_seed(train_config.seed)
    hypermodel = KnowHyperModel(window=args.window, conv_rule=args.conv_rule)
    trajectories = collect_meta_trajectories(data_config, conv_rule=args.conv_rule)
    report = meta_train(hypermodel, trajectories, train_config)
    record = {"validation": report, "scalars": {k: len(v) for k, v in trajectories.items()}}
    record.update(config_dict(data_config, train_config))
    save_output(args.output_dir, model=hypermodel, metrics=record, metrics_file="meta_training.json", **output)
    if args.hub_model_id:
        hypermodel.push_to_hub(args.hub_model_id)
    return report


COMMANDS = {
    "collect": ((CollectArguments, CollectTrainingArguments), collect),
    "predict": ((PredictArguments,), predict),
    "meta-train": ((MetaTrainArguments, MetaDataConfig, MetaTrainConfig), meta_train_hypermodel),
}


def make_parser(command: str, prog: str | None = None) -> TrlParser:
    """The parser of one command (`collect`, `predict` or `meta-train`)."""
    return TrlParser(COMMANDS[command][0], prog=prog)


def run(argv: list[str] | None = None, prog: str | None = None):
    """`<command> [--config file.yaml] [options]`: parse and run one command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        raise SystemExit(f"usage: {prog or 'know.py'} {{{','.join(COMMANDS)}}} [--config file.yaml] [options]")
    return COMMANDS[argv[0]][1](*parse(make_parser(argv[0], f"{prog or 'know.py'} {argv[0]}"), argv[1:]))
