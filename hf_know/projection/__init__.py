"""Model projection as a PEFT method: one trainable scalar per (output, input) channel pair of each conv."""

from .._peft_registry import register_method
from .config import ProjectionConfig
from .layer import Conv1d, Conv2d, Conv3d, ProjectionLayer
from .model import ProjectionModel
from .recipes import apply_method, prepare_full_finetuning

__all__ = [
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "ProjectionConfig",
    "ProjectionLayer",
    "ProjectionModel",
    "apply_method",
    "prepare_full_finetuning",
]

register_method("projection", ProjectionConfig, ProjectionModel)
