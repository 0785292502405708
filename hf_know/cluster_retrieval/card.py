"""The model card of a PROTEUS adapter trained on a task stream, rendered from `model_cards/continual.md`."""

from __future__ import annotations

from huggingface_hub import ModelCard

from ..hub import render_model_card

# Continual-learning figures a card shows, when the run has them.
CARD_METRICS = ("acc", "acc_incremental", "forgetting", "bwt", "retrieval_acc", "oracle_acc")


def continual_model_card(
    repo_id: str,
    *,
    tasks: list[str],
    config: dict,
    metrics: dict[str, float],
    base_model: str,
    dataset_tags: tuple[str, ...] = (),
    tags: tuple[str, ...] = (),
) -> ModelCard:
    """A card for an adapter pushed to `repo_id`: its tasks in order, its `ClusterRetrievalAdapterConfig` fields
    and the stream's continual-learning metrics."""
    return render_model_card(
        "continual",
        {
            "library_name": "peft",
            "tags": ["hf-know", "continual-learning", "proteus", *tags],
            "datasets": list(dataset_tags),
            "metrics": ["accuracy"],
        },
        model_name=repo_id.split("/")[-1],
        repo_id=repo_id,
        base_model=base_model,
        tasks=tasks,
        config=config,
        metrics={name: f"{metrics[name]:.4f}" for name in CARD_METRICS if name in metrics},
    )
