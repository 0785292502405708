"""KNOW: predicting knowledge-overflowed weights by retrodicting a forgetting trajectory (arXiv 2508.05059)."""

from .extrapolate import PREDICTORS, Extrapolator
from .hypermodel import KnowHyperModel, KnownNet, tensor_kind
from .predictor import KnowPredictor, push_prediction
from .trajectory import collect_trajectory, subset_sizes, trajectory_checkpoints

__all__ = [
    "PREDICTORS",
    "Extrapolator",
    "KnowHyperModel",
    "KnowPredictor",
    "KnownNet",
    "collect_trajectory",
    "push_prediction",
    "subset_sizes",
    "tensor_kind",
    "trajectory_checkpoints",
]
