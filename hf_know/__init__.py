"""hf-know: four recent fine-tuning papers as Hugging Face tools.

Importing this package registers its PEFT methods with the installed PEFT, so that `get_peft_model`,
`PeftModel.from_pretrained` and `AutoPeftModel*` know them. The KNOW and purification classes are imported on first
use (`hf_know.KnowPredictor`, `hf_know.PurifiedDistillTrainer`), as transformers does, so `import hf_know` stays
light.
"""

import importlib

from .cluster_retrieval import ClusterRetrievalAdapterConfig, ClusterRetrievalModel
from .projection import ProjectionConfig, ProjectionLayer, ProjectionModel, prepare_full_finetuning

__version__ = "0.1.0"

# Public names imported on first access: name -> submodule.
_LAZY = {
    "KnowHyperModel": "know",
    "KnowPredictor": "know",
    "PurifiedDistillConfig": "purification",
    "PurifiedDistillTrainer": "purification",
    "PurifiedSeq2SeqDistillConfig": "purification",
    "PurifiedSeq2SeqDistillTrainer": "purification",
}

__all__ = [
    "ClusterRetrievalAdapterConfig",
    "ClusterRetrievalModel",
    "ProjectionConfig",
    "ProjectionLayer",
    "ProjectionModel",
    "__version__",
    "prepare_full_finetuning",
    *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
