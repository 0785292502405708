"""Learn a stream of tasks one after another with PROTEUS (`ClusterRetrievalAdapterConfig`), task-free at test time.

```bash
hf-know continual --config configs/continual/digits.yaml
accelerate launch --num_processes 2 --cpu trainers/continual.py --config configs/continual/tiny.yaml
```

The stream is an image dataset (sklearn's digits or Fashion-MNIST, `dataset`) split into groups of classes (`tasks`),
on a ViT (built from the sizes below, or a pretrained image classifier from `model_name_or_path`) or any CNN a model
builder makes (`model_builder: hf_know.backbones:efficientnet_lite0`, see `hf_know.backbones`). With
`class_incremental` each task trains over its own classes only and an input is predicted among the classes of the
task it is routed to (`configs/continual/fashion_mnist.yaml`, the recipe of `benchmarks/continual.py`). After each
task the adapter is evaluated on every task seen so far,
task-free (retrieval), with oracle task ids and for retrieval accuracy; `output_dir` receives the adapter (every
task module and signature) and `metrics.json` with the three accuracy matrices and the continual-learning metrics
(ACC, ACC-, forgetting, BWT, retrieval accuracy), written atomically. Every field of `ContinualArguments` and
`transformers.TrainingArguments` can be set in the YAML file or on the command line.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from peft import get_peft_model
from transformers import AutoModelForImageClassification, ViTConfig, ViTForImageClassification, set_seed
from trl import TrlParser

from ..backbones import load_model_builder
from ..cli import ScriptTrainingArguments, parse
from ..cluster_retrieval import ClusterRetrievalAdapterConfig
from ..cluster_retrieval.card import continual_model_card
from ..cluster_retrieval.stream import run_task_stream, split_into_tasks
from ..hub import push_folder
from ..image_data import FASHION_MNIST_DIR, IMAGE_DATASETS, load_image_dataset
from ..io import check_output_dir, claim_output_dir, save_output


@dataclass
class ContinualArguments:
    """The stream (groups of classes of `dataset`, learnt in order, with one label space for all of them), the model
    (a pretrained image classifier, a model builder, or a ViT built from the sizes below) and the
    `ClusterRetrievalAdapterConfig` fields (see its docstring)."""

    dataset: str = field(default="digits", metadata={"help": f"One of {list(IMAGE_DATASETS)}."})
    data_dir: str = field(default=str(FASHION_MNIST_DIR), metadata={"help": "Fashion-MNIST's IDX files."})
    tasks: list[list[int]] = field(
        default_factory=lambda: [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]], metadata={"help": "Class groups."}
    )
    train_per_class: int | None = field(default=None, metadata={"help": "Training images per class (all if unset)."})
    test_per_class: int | None = field(default=None, metadata={"help": "Fashion-MNIST test images per class."})
    image_size: int = field(default=8, metadata={"help": "Side of the images."})
    data_seed_split: int = field(default=0, metadata={"help": "Seed of the stratified train/test split."})
    class_incremental: bool = field(
        default=False, metadata={"help": "Train each task over its own classes, predict among the routed task's."}
    )

    model_name_or_path: str | None = field(default=None, metadata={"help": "Local folder or Hub id."})
    model_builder: str | None = field(
        default=None, metadata={"help": "package.module:function building an nn.Module (num_labels, image_size)."}
    )
    hidden_size: int = field(default=64, metadata={"help": "ViT width."})
    num_hidden_layers: int = field(default=2, metadata={"help": "ViT depth."})
    patch_size: int = field(default=2, metadata={"help": "ViT patch side."})

    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "v_proj", "classifier"], metadata={"help": "nn.Linear modules to adapt."}
    )
    r: int = field(default=8, metadata={"help": "Rank per task."})
    lora_alpha: float = field(default=16, metadata={"help": "Scaling numerator."})
    composition: str = field(default="learned", metadata={"help": "'learned', 'sum' or 'none'."})
    ortho_lambda: float = field(default=0.1, metadata={"help": "Orthogonality penalty weight."})
    ortho_mode: str = field(default="penalty", metadata={"help": "'penalty' or 'projection'."})
    signature_type: str = field(
        default="dpgmm", metadata={"help": "'dpgmm', 'gmm', 'kmeans', 'centroid' or 'class_gaussian'."}
    )
    max_components: int = field(default=10, metadata={"help": "Components per signature."})
    retrieval_space: str = field(default="task_adapted", metadata={"help": "'task_adapted' or 'frozen_backbone'."})
    feature_layer: int = field(default=-1, metadata={"help": "Hidden state pooled into the embedding."})
    pooling: str = field(default="mean", metadata={"help": "'cls', 'mean' or 'last_token'."})

    def __post_init__(self):
        if self.dataset not in IMAGE_DATASETS:
            raise ValueError(f"dataset={self.dataset!r}; expected one of {list(IMAGE_DATASETS)}.")
        if self.model_builder and self.model_name_or_path:
            raise ValueError("Set model_name_or_path or model_builder, not both: they are two ways to get the model.")


@dataclass
class TrainingArguments(ScriptTrainingArguments):
    """`transformers.TrainingArguments` with defaults for small CPU runs."""

    output_dir: str = field(default="outputs/continual", metadata={"help": "Where the result is written."})


# The fields of `ContinualArguments` that are `ClusterRetrievalAdapterConfig` fields.
ADAPTER_FIELDS = (
    "target_modules",
    "r",
    "lora_alpha",
    "composition",
    "ortho_lambda",
    "ortho_mode",
    "signature_type",
    "max_components",
    "retrieval_space",
    "feature_layer",
    "pooling",
)


def adapter_config_fields(args: ContinualArguments) -> dict:
    return {name: getattr(args, name) for name in ADAPTER_FIELDS}


def build_model(script_args: ContinualArguments, num_labels: int):
    if script_args.model_builder:
        return load_model_builder(script_args.model_builder)(num_labels=num_labels, image_size=script_args.image_size)
    if script_args.model_name_or_path:
        return AutoModelForImageClassification.from_pretrained(
            script_args.model_name_or_path, num_labels=num_labels, ignore_mismatched_sizes=True
        )
    config = ViTConfig(
        image_size=script_args.image_size,
        patch_size=script_args.patch_size,
        num_channels=1,
        hidden_size=script_args.hidden_size,
        num_hidden_layers=script_args.num_hidden_layers,
        num_attention_heads=4,
        intermediate_size=2 * script_args.hidden_size,
        num_labels=num_labels,
    )
    return ViTForImageClassification(config)


OUTPUT_KIND = "continual"


def main(script_args: ContinualArguments, training_args: TrainingArguments) -> dict:
    # Refused before any work if it would lose a file; written atomically at the end.
    output = dict(
        kind=OUTPUT_KIND, inputs=[script_args.model_name_or_path], overwrite=training_args.overwrite_output_dir
    )
    check_output_dir(training_args.output_dir, **output)
    push, hub_model_id = training_args.push_to_hub, training_args.hub_model_id
    if push and not hub_model_id:
        raise ValueError("push_to_hub is set but hub_model_id is not: name the Hub repo to push to.")
    training_args = dataclasses.replace(training_args, push_to_hub=False)
    groups = script_args.tasks
    data = load_image_dataset(
        script_args.dataset,
        [c for group in groups for c in group],
        script_args.image_size,
        script_args.train_per_class,
        script_args.test_per_class,
        seed=script_args.data_seed_split,
        data_dir=script_args.data_dir,
    )
    stream = split_into_tasks(data, [len(group) for group in groups])
    num_labels = sum(len(group) for group in script_args.tasks)
    set_seed(training_args.seed)  # a from-scratch base is reproducible from the seed
    base = build_model(script_args, num_labels)
    model = get_peft_model(base, ClusterRetrievalAdapterConfig(**adapter_config_fields(script_args)))
    tasks = [
        (f"{script_args.dataset}_" + "_".join(map(str, group)), task["train"], task["test"])
        for group, task in zip(groups, stream, strict=True)
    ]
    claim_output_dir(training_args.output_dir, **output)  # what the Trainer writes there is this run's
    result = run_task_stream(model, tasks, training_args, class_incremental=script_args.class_incremental)
    metrics = {**result.metrics(), **dataclasses.asdict(result)}
    if training_args.process_index == 0:
        save_output(training_args.output_dir, model=model, metrics=metrics, **output)
        if push:
            card = continual_model_card(
                hub_model_id,
                tasks=result.task_names,
                config=adapter_config_fields(script_args),
                metrics=metrics,
                base_model=script_args.model_name_or_path or script_args.model_builder or "a ViT built from a config",
                dataset_tags=(IMAGE_DATASETS[script_args.dataset][1],),
                tags=("image-classification",),
            )
            push_folder(training_args.output_dir, hub_model_id, card, token=training_args.hub_token)
    return metrics


def make_parser(prog: str | None = None) -> TrlParser:
    return TrlParser((ContinualArguments, TrainingArguments), prog=prog)


def run(argv: list[str] | None = None, prog: str | None = None) -> dict:
    """Parse `argv` (default: the command line) and run `main`."""
    return main(*parse(make_parser(prog), argv))
