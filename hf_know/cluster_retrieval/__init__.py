"""PROTEUS continual fine-tuning (arXiv 2603.13235): task signatures and parameter-free task retrieval.

The PEFT method `ClusterRetrievalAdapterConfig` that uses them is being built (issue 3); the signature and
retrieval functions below are complete and usable on any embeddings.
"""

from .signatures import RETRIEVAL_RULES, SIGNATURE_TYPES, TaskSignature, cluster_separation, fit_signature, retrieve

__all__ = ["RETRIEVAL_RULES", "SIGNATURE_TYPES", "TaskSignature", "cluster_separation", "fit_signature", "retrieve"]
