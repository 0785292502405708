"""The model card of a projection (or baseline) fine-tune, rendered from `model_cards/projection.md`."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import ModelCard
from torch import nn

from ..hub import render_model_card
from .layer import ProjectionLayer


def projection_model_card(
    model: nn.Module,
    repo_id: str,
    *,
    method: str,
    metrics: dict[str, float],
    base_model: str | None = None,
    base_model_builder: str | None = None,
    num_labels: int | None = None,
    image_size: int | None = None,
    head: str = "classifier",
    dataset: str = "",
    dataset_tags: tuple[str, ...] = (),
) -> ModelCard:
    """A card for `model` (a PEFT model or a plain one) pushed to `repo_id`: the method, its projected layers and
    trainable parameters, the data and the metrics. `base_model` names a Hub repo in the metadata, or a local folder
    in the text only; a model from a model builder (`"package.module:function"`, see `hf_know.backbones`) is named
    by `base_model_builder`, and its quick start calls it with `num_labels` and `image_size`."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return render_model_card(
        "projection",
        {
            "library_name": "peft" if hasattr(model, "peft_config") else "transformers",
            "base_model": base_model if base_model and not Path(base_model).exists() else None,
            "tags": ["hf-know", "model-projection", method, "image-classification"],
            "datasets": list(dataset_tags),
            "metrics": ["accuracy"],
        },
        model_name=repo_id.split("/")[-1],
        repo_id=repo_id,
        base_model=base_model or base_model_builder or "a model trained from scratch",
        base_model_builder=base_model_builder,
        num_labels=num_labels,
        image_size=image_size,
        method=method,
        num_projected_layers=sum(isinstance(m, ProjectionLayer) for m in model.modules()),
        trainable_parameters=f"{trainable:,}",
        total_parameters=f"{total:,}",
        modules_to_save=head,
        dataset=dataset,
        metrics={name: f"{value:.4f}" for name, value in metrics.items()},
    )
