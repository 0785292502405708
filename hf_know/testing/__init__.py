"""Helpers for tests that users may reuse: a loopback Hub, tiny models built from configs, toy rationale data."""

from ..purification.toy import tiny_sentence_encoder, tiny_t5, toy_rationale_data, word_tokenizer
from .loopback import LoopbackHub
from .models import tiny_bert, tiny_cnn, tiny_llama, tiny_resnet, tiny_vit

__all__ = [
    "LoopbackHub",
    "tiny_bert",
    "tiny_cnn",
    "tiny_llama",
    "tiny_resnet",
    "tiny_sentence_encoder",
    "tiny_t5",
    "tiny_vit",
    "toy_rationale_data",
    "word_tokenizer",
]
