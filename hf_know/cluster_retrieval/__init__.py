"""PROTEUS continual fine-tuning (arXiv 2603.13235) as a PEFT method: one composed low-rank module per task, task
signatures fitted to embeddings, and parameter-free retrieval of each input's task at inference."""

from .._peft_registry import register_method
from .config import ClusterRetrievalAdapterConfig
from .layer import ClusterRetrievalLayer, Conv2d, Linear
from .model import ClusterRetrievalModel
from .signatures import RETRIEVAL_RULES, SIGNATURE_TYPES, TaskSignature, cluster_separation, fit_signature, retrieve

__all__ = [
    "RETRIEVAL_RULES",
    "SIGNATURE_TYPES",
    "ClusterRetrievalAdapterConfig",
    "ClusterRetrievalLayer",
    "ClusterRetrievalModel",
    "Conv2d",
    "Linear",
    "TaskSignature",
    "cluster_separation",
    "fit_signature",
    "retrieve",
]

register_method("cluster_retrieval", ClusterRetrievalAdapterConfig, ClusterRetrievalModel)
