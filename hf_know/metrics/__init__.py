"""`evaluate` modules shipped with hf-know, loaded by path: `evaluate.load("<hub name>")` would need the network."""

from __future__ import annotations

from pathlib import Path

import evaluate
import numpy as np

METRICS_DIR = Path(__file__).parent


def available() -> list[str]:
    """Names of the shipped metric modules."""
    return sorted(p.name for p in METRICS_DIR.iterdir() if (p / f"{p.name}.py").is_file())


def load(name: str, **kwargs) -> evaluate.EvaluationModule:
    """`evaluate.load` of the shipped module `name` (e.g. `"continual_learning"`), offline."""
    if name not in available():
        raise ValueError(f"No metric module {name!r} ships with hf-know; expected one of {available()}.")
    return evaluate.load(str(METRICS_DIR / name), **kwargs)


def classification_accuracy(eval_prediction) -> dict[str, float]:
    """`Trainer(compute_metrics=...)` for classifiers: `{"accuracy": share of argmax(logits) == labels}`."""
    logits, labels = eval_prediction
    return {"accuracy": float((np.argmax(logits, axis=-1) == labels).mean())}
