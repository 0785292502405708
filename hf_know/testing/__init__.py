"""Helpers for tests that users may reuse: a loopback Hub and tiny models built from configs."""

from .loopback import LoopbackHub
from .models import tiny_bert, tiny_cnn, tiny_llama, tiny_resnet, tiny_vit

__all__ = ["LoopbackHub", "tiny_bert", "tiny_cnn", "tiny_llama", "tiny_resnet", "tiny_vit"]
