"""hf-know: four recent fine-tuning papers as Hugging Face tools.

Importing this package registers its PEFT methods with the installed PEFT, so that `get_peft_model`,
`PeftModel.from_pretrained` and `AutoPeftModel*` know them.
"""

from .cluster_retrieval import ClusterRetrievalAdapterConfig, ClusterRetrievalModel
from .know import KnowHyperModel, KnowPredictor
from .projection import ProjectionConfig, ProjectionLayer, ProjectionModel, prepare_full_finetuning
from .purification import PurifiedDistillConfig, PurifiedDistillTrainer

__version__ = "0.1.0"

__all__ = [
    "ClusterRetrievalAdapterConfig",
    "ClusterRetrievalModel",
    "KnowHyperModel",
    "KnowPredictor",
    "ProjectionConfig",
    "ProjectionLayer",
    "ProjectionModel",
    "PurifiedDistillConfig",
    "PurifiedDistillTrainer",
    "__version__",
    "prepare_full_finetuning",
]
