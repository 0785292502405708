"""Fine-tune an image classifier with model projection, or for comparison LoRA, IA3, full FT or a linear probe.

```bash
hf-know project --config configs/project/fashion_mnist_projection.yaml   # ImageNet EfficientNet-Lite0
hf-know project --config configs/project/digits_projection.yaml
accelerate launch --num_processes 2 --cpu trainers/project.py --config configs/project/tiny.yaml
```

The model is a transformers image classifier (`model_name_or_path`), any `nn.Module` CNN from a model builder
(`model_builder: package.module:function`, called as `function(num_labels=..., image_size=...)`; see
`hf_know.backbones`, whose `efficientnet_lite0` is the ImageNet EfficientNet-Lite0), or a small ResNet built from
the sizes below. The data is sklearn's digits or Fashion-MNIST (`dataset`).

Every field of `ProjectArguments` and `transformers.TrainingArguments` can be given in the YAML file or on the
command line (which wins). The result (adapter or full model, `metrics.json`) is written atomically to
`output_dir`, and pushed with a model card when `push_to_hub` is set.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from transformers import AutoModelForImageClassification, ResNetConfig, ResNetForImageClassification, Trainer
from trl import TrlParser

from ..backbones import load_model_builder
from ..cli import ScriptTrainingArguments, parse
from ..hub import push_folder
from ..image_data import FASHION_MNIST_DIR, IMAGE_DATASETS, load_image_dataset
from ..io import check_output_dir, claim_output_dir, save_output
from ..metrics import classification_accuracy
from ..projection.card import projection_model_card
from ..projection.recipes import METHODS, apply_method, prepare_full_finetuning


@dataclass
class ProjectArguments:
    """The data (`dataset` restricted to `classes`, `train_per_class` training images per class), the model (a
    pretrained image classifier, a model builder, or a transformers ResNet built from the sizes below) and how to
    fine-tune it (see `hf_know.projection.recipes.apply_method`)."""

    dataset: str = field(default="digits", metadata={"help": f"One of {list(IMAGE_DATASETS)}."})
    data_dir: str = field(default=str(FASHION_MNIST_DIR), metadata={"help": "Fashion-MNIST's IDX files."})
    classes: list[int] = field(default_factory=lambda: list(range(10)), metadata={"help": "Class ids to keep."})
    train_per_class: int | None = field(default=None, metadata={"help": "Training images per class (all if unset)."})
    test_per_class: int | None = field(default=None, metadata={"help": "Fashion-MNIST test images per class."})
    image_size: int = field(default=32, metadata={"help": "Side of the resized images."})
    data_seed_split: int = field(default=0, metadata={"help": "Seed of the stratified train/test split."})

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Local folder or Hub id of a pretrained image classifier."}
    )
    model_builder: str | None = field(
        default=None, metadata={"help": "package.module:function building an nn.Module (num_labels, image_size)."}
    )
    embedding_size: int = field(default=16, metadata={"help": "Stem width of a from-scratch ResNet."})
    hidden_sizes: list[int] = field(default_factory=lambda: [16, 32, 64], metadata={"help": "Stage widths."})
    depths: list[int] = field(default_factory=lambda: [1, 1, 1], metadata={"help": "Basic blocks per stage."})

    method: str = field(default="projection", metadata={"help": f"One of {METHODS}."})
    head: str = field(default="classifier", metadata={"help": "Head module, trained in full by every method."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    skip_pointwise: bool = field(default=False, metadata={"help": "Projection: leave 1x1 convs out."})
    train_batchnorm: bool = field(default=False, metadata={"help": "Projection: train and save BatchNorm."})
    full_epochs: float = field(default=5.0, metadata={"help": "projection_then_full: epochs of stage 2."})
    full_learning_rate: float = field(default=1e-3, metadata={"help": "projection_then_full: stage-2 LR."})

    def __post_init__(self):
        if self.dataset not in IMAGE_DATASETS:
            raise ValueError(f"dataset={self.dataset!r}; expected one of {list(IMAGE_DATASETS)}.")
        if self.model_builder and self.model_name_or_path:
            raise ValueError("Set model_name_or_path or model_builder, not both: they are two ways to get the model.")


@dataclass
class TrainingArguments(ScriptTrainingArguments):
    """`transformers.TrainingArguments` with defaults for small CPU runs."""

    output_dir: str = field(default="outputs/project", metadata={"help": "Where the result is written."})


def build_model(script_args: ProjectArguments, num_labels: int):
    if script_args.model_builder:
        return load_model_builder(script_args.model_builder)(num_labels=num_labels, image_size=script_args.image_size)
    if not script_args.model_name_or_path:
        config = ResNetConfig(
            num_channels=1,
            embedding_size=script_args.embedding_size,
            hidden_sizes=script_args.hidden_sizes,
            depths=script_args.depths,
            layer_type="basic",
            num_labels=num_labels,
        )
        return ResNetForImageClassification(config)
    return AutoModelForImageClassification.from_pretrained(
        script_args.model_name_or_path, num_labels=num_labels, ignore_mismatched_sizes=True
    )


def train(model, training_args, data) -> Trainer:
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=data["train"],
        eval_dataset=data["test"],
        compute_metrics=classification_accuracy,
    )
    trainer.train()
    return trainer


OUTPUT_KIND = "project"


def main(script_args: ProjectArguments, training_args: TrainingArguments) -> dict[str, float]:
    # Refused before any work if it would lose a file; written atomically at the end.
    output = dict(
        kind=OUTPUT_KIND, inputs=[script_args.model_name_or_path], overwrite=training_args.overwrite_output_dir
    )
    check_output_dir(training_args.output_dir, **output)
    pretrained = script_args.model_name_or_path or script_args.model_builder
    if not pretrained and script_args.method not in ("full", "linear_probe", "bias_only"):
        raise ValueError(
            f"method={script_args.method!r} adapts a pretrained model: set model_name_or_path (a folder or Hub id) "
            "or model_builder, or use method='full' to train from scratch."
        )
    data = load_image_dataset(
        script_args.dataset,
        script_args.classes,
        script_args.image_size,
        script_args.train_per_class,
        script_args.test_per_class,
        seed=script_args.data_seed_split,
        data_dir=script_args.data_dir,
    )
    push, hub_model_id = training_args.push_to_hub, training_args.hub_model_id
    if push and not hub_model_id:
        raise ValueError("push_to_hub is set but hub_model_id is not: name the Hub repo to push to.")
    # The result is pushed once, with our model card, after training; the Trainer itself never pushes.
    training_args = dataclasses.replace(training_args, push_to_hub=False)
    model = build_model(script_args, num_labels=len(script_args.classes))
    model = apply_method(
        model,
        script_args.method,
        script_args.head,
        lora_r=script_args.lora_r,
        skip_pointwise=script_args.skip_pointwise,
        train_batchnorm=script_args.train_batchnorm,
    )
    claim_output_dir(training_args.output_dir, **output)  # what the Trainer writes there is this run's
    trainer = train(model, training_args, data)
    if script_args.method == "projection_then_full":
        stage2 = dataclasses.replace(
            training_args,
            num_train_epochs=script_args.full_epochs,
            learning_rate=script_args.full_learning_rate,
        )
        trainer = train(prepare_full_finetuning(trainer.accelerator.unwrap_model(trainer.model)), stage2, data)
    metrics = trainer.evaluate()
    model = trainer.accelerator.unwrap_model(trainer.model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    metrics.update(trainable_parameters=trainable, total_parameters=sum(p.numel() for p in model.parameters()))
    if trainer.is_world_process_zero():
        save_output(training_args.output_dir, model=model, metrics=metrics, **output)
        if push:
            card = projection_model_card(
                model,
                hub_model_id,
                method=script_args.method,
                metrics={"eval accuracy": metrics["eval_accuracy"]},
                base_model=script_args.model_name_or_path,
                base_model_builder=script_args.model_builder,
                num_labels=len(script_args.classes),
                image_size=script_args.image_size,
                head=script_args.head,
                dataset=f"{IMAGE_DATASETS[script_args.dataset][0]} {script_args.classes}, "
                f"{script_args.train_per_class or 'all'} per class",
                dataset_tags=(IMAGE_DATASETS[script_args.dataset][1],),
            )
            push_folder(training_args.output_dir, hub_model_id, card, token=training_args.hub_token)
    return metrics


def make_parser(prog: str | None = None) -> TrlParser:
    return TrlParser((ProjectArguments, TrainingArguments), prog=prog)


def run(argv: list[str] | None = None, prog: str | None = None) -> dict[str, float]:
    """Parse `argv` (default: the command line) and run `main`."""
    return main(*parse(make_parser(prog), argv))
