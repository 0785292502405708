"""Helpers for tests that users may reuse: a loopback Hub and tiny models built from configs."""

from .loopback import LoopbackHub
from .models import tiny_cnn, tiny_resnet

__all__ = ["LoopbackHub", "tiny_cnn", "tiny_resnet"]
